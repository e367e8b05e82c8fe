"""``relayd bridge -H`` event queue settings (issue 11): ``--event-queue``,
``--event-queue-bytes`` and ``--event-deadline`` bound what waits for the local service and
how long it may take per event; a bad value is a clear error at start (exit status 2).  A real
relay, a real bridge subprocess and a webhook that does not answer events."""

import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.test_events_http import BUS_CONFIG, Publisher, wait_listeners
from tests.support.relay import Bridge, RelayProcess, write_config

HANG = 20  # seconds the webhook holds an event at most (it is released at the end of the test)


class HangingWebhook(ThreadingHTTPServer):
    """Takes each POST and answers it only once :attr:`release` is set."""

    daemon_threads = True

    def __init__(self):
        self.events = []
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                hook.events.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                hook.release.wait(HANG)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def wait_until(check, timeout=15):
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    return check()


def test_event_queue_and_deadline_flags_bound_what_waits_for_the_service(tmp_path):
    hook = HangingWebhook()
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    relay = RelayProcess(tmp_path, write_config(tmp_path, extra=BUS_CONFIG))
    bridge = Bridge(tmp_path, relay, "-H", "bus:http://127.0.0.1:%d/hook" % hook.server_address[1],
                    "--event-queue", "2", "--event-deadline", "1")
    publisher = None
    try:
        bridge.wait("-H bus.*online")
        assert wait_listeners(relay, "bus", 1) == 1
        publisher = Publisher(relay, "bus")
        for i in range(6):
            assert publisher.post(b"event %d" % i, "text/plain")[:2] == (202, "1")
        # event 0 goes to the service, 1 and 2 wait (--event-queue 2), 3 to 5 are dropped
        assert wait_until(lambda: len(re.findall("an event was dropped", bridge.text())) == 3), bridge.text()
        # the service answers none, yet after each --event-deadline (1 s) the next one goes
        assert wait_until(lambda: len(hook.events) == 3), hook.events
        assert hook.events == [b"event 0", b"event 1", b"event 2"]
        assert "the local service took over 1.0 s to answer an event" in bridge.text()
    finally:
        hook.release.set()
        if publisher is not None:
            publisher.close()
        bridge.stop()
        relay.stop()
        hook.shutdown()
        hook.server_close()


@pytest.mark.parametrize("flag, value, message", [
    ("--event-queue", "0", "--event-queue must be an integer from 1 to 1000000, got 0"),
    ("--event-queue-bytes", "10", "--event-queue-bytes must be an integer from 1024 to 17179869184, got 10"),
    ("--event-deadline", "0", "--event-deadline must be a number of seconds from 0.1 to 86400, got 0"),
    ("--event-deadline", "soon", "argument --event-deadline: invalid float value: 'soon'"),
])
def test_a_bad_event_setting_is_a_clear_error(flag, value, message):
    done = subprocess.run([sys.executable, "-m", "relayd.cli", "bridge", "--url", "http://127.0.0.1:9",
                           "--rule", "root", "--key", "a2V5a2V5a2V5a2V5", "-H", "bus:http://127.0.0.1:9/",
                           flag, value], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert message in done.stderr, done.stderr
