"""Event distribution to ``relayd bridge -H`` subscribers (issue 11): a local webhook behind the
bridge, unchanged, receives every event of a multicast entity as a POST, in the order they were
published, one at a time, with a raw HC listener subscribed alongside; the webhook's answers are
dropped by the relay.  Ordinary requests through ``-H`` still reach the service concurrently."""

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from tests.integration.test_events_http import BUS_CONFIG, Publisher, Subscriber, wait_listeners
from tests.support.relay import Bridge, RelayProcess, write_config

EVENTS = 300
SLOW_EVENTS = 3  # the first events are answered slowly, so later ones would overtake them
SLOW_ANSWER = 0.3  # seconds the webhook takes to answer each of them
PAIR_DEADLINE = 5.0  # seconds a slow GET waits for its twin to be in flight too
SITE_CONFIG = BUS_CONFIG + """
[[hybrid_connections]]
path = "site"
requires_client_authorization = false
"""


class Webhook(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the bridge opens several local connections at once

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.posting = self.max_posting = 0  # events in the webhook at once
        self.getting = self.max_getting = 0  # ordinary GETs in the webhook at once
        hook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    hook.posting += 1
                    hook.max_posting = max(hook.max_posting, hook.posting)
                    hook.events.append((self.path, self.headers.get("Content-Type"), body,
                                        self.headers.get("X-Relayd-Event")))
                if int(body.split()[1]) < SLOW_EVENTS:
                    time.sleep(SLOW_ANSWER)
                with hook.lock:
                    hook.posting -= 1
                self.send_response(204)
                self.end_headers()

            def do_GET(self):
                # answers once two GETs are in the webhook at the same time (or at a deadline)
                with hook.changed:
                    hook.getting += 1
                    hook.max_getting = max(hook.max_getting, hook.getting)
                    hook.changed.notify_all()
                    hook.changed.wait_for(lambda: hook.max_getting >= 2, PAIR_DEADLINE)
                    hook.getting -= 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@contextlib.contextmanager
def bridged(tmp_path, config, path):
    """A relay, a webhook and ``relayd bridge -H path:webhook/hook`` online; yields them."""
    hook = Webhook()
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    relay = RelayProcess(tmp_path, write_config(tmp_path, extra=config))
    bridge = Bridge(tmp_path, relay, "-H", "%s:http://127.0.0.1:%d/hook" % (path, hook.server_address[1]))
    try:
        bridge.wait("-H %s.*online" % path)
        yield relay, bridge, hook
    finally:
        bridge.stop()
        relay.stop()
        hook.shutdown()
        hook.server_close()


def test_a_webhook_behind_bridge_h_receives_every_event_in_order(tmp_path):
    with bridged(tmp_path, BUS_CONFIG, "bus") as (relay, bridge, hook):
        raw = Subscriber(relay, "bus")
        publisher = None
        try:
            assert wait_listeners(relay, "bus", 2) == 2
            publisher = Publisher(relay, "bus")
            for i in range(EVENTS):
                assert publisher.post(b"event %d" % i, "text/plain", path="bus/orders")[:2] == (202, "2")
            deadline = time.monotonic() + 30
            while len(hook.events) < EVENTS and time.monotonic() < deadline:
                time.sleep(0.02)
            assert "the local service failed" not in bridge.text(), bridge.text()[-3000:]
            assert [int(e[2].split()[1]) for e in hook.events] == list(range(EVENTS))  # in order
            assert hook.events == [("/hook/orders", "text/plain", b"event %d" % i, "multicast")
                                   for i in range(EVENTS)]
            assert hook.max_posting == 1  # one at a time
            assert raw.wait_for(EVENTS) == EVENTS
            assert [body for _, body in raw.events] == [b"event %d" % i for i in range(EVENTS)]
            assert wait_listeners(relay, "bus", 2) == 2  # the bridge's answers cost it nothing
        finally:
            if publisher is not None:
                publisher.close()
            raw.stop()


def test_ordinary_requests_through_bridge_h_stay_concurrent(tmp_path):
    with bridged(tmp_path, SITE_CONFIG, "site") as (relay, bridge, hook):
        answers = []

        def get():
            answers.append(requests.get("http://127.0.0.1:%d/site/slow" % relay.port, timeout=15))

        threads = [threading.Thread(target=get) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert [(a.status_code, a.content) for a in answers] == [(200, b"ok")] * 2
        assert hook.max_getting == 2  # both were in the webhook at once
