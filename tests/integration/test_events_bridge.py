"""Event distribution to ``relayd bridge -H`` subscribers (issue 11): a local webhook behind the
bridge, unchanged, receives every event of a multicast entity as a POST, with a raw HC listener
subscribed alongside; the webhook's answers are dropped by the relay."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.integration.test_events_http import BUS_CONFIG, Publisher, Subscriber, wait_listeners
from tests.support.relay import Bridge, RelayProcess, write_config

EVENTS = 300


class Webhook(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the bridge opens several local connections at once
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    hook.events.append((self.path, self.headers.get("Content-Type"), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_a_webhook_behind_bridge_h_receives_every_event(tmp_path):
    hook = Webhook()
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    relay = RelayProcess(tmp_path, write_config(tmp_path, extra=BUS_CONFIG))
    bridge = Bridge(tmp_path, relay, "-H", "bus:http://127.0.0.1:%d/hook" % hook.server_address[1])
    raw = publisher = None
    try:
        bridge.wait("-H bus.*online")
        raw = Subscriber(relay, "bus")
        assert wait_listeners(relay, "bus", 2) == 2
        publisher = Publisher(relay, "bus")
        for i in range(EVENTS):
            assert publisher.post(b"event %d" % i, "text/plain", path="bus/orders")[:2] == (202, "2")
        deadline = time.monotonic() + 30
        while len(hook.events) < EVENTS and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "the local service failed" not in bridge.text(), bridge.text()[-3000:]
        assert sorted(hook.events, key=lambda e: int(e[2].split()[1])) == [
            ("/hook/orders", "text/plain", b"event %d" % i) for i in range(EVENTS)]
        assert raw.wait_for(EVENTS) == EVENTS
        assert [body for _, body in raw.events] == [b"event %d" % i for i in range(EVENTS)]
        assert wait_listeners(relay, "bus", 2) == 2  # the bridge's answers cost it nothing
        print("webhook order kept: %s" % ([int(e[2].split()[1]) for e in hook.events] == list(range(EVENTS))))
    finally:
        if publisher is not None:
            publisher.close()
        if raw is not None:
            raw.stop()
        bridge.stop()
        relay.stop()
        hook.shutdown()
        hook.server_close()
