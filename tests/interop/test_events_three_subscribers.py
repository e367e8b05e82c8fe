"""Issue 11's Done-when test: three kinds of subscriber of one multicast entity -- the relayd
SDK (``relayd subscribe``, i.e. :func:`relayd.client.events.subscriber`), Azure's npm
``hyco-https`` listener (tests/interop/node/event_subscriber.js) and a webhook behind
``relayd bridge -H`` -- each receive every one of 1,000 events, in order, with their exact
bodies, published (a) as HTTP POSTs, (b) over a WebSocket publishing channel
(``sb-hc-action=connect``) and (c) as SOAP one-way envelopes carrying a ``RelayAccessToken``
header (which subscribers get stripped).  One ``twistd -n relayd`` for the module."""

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.test_events_cli import read, start_subscriber, stop
from tests.integration.test_events_http import BUS_CONFIG, Publisher, sender_token, wait_listeners
from tests.integration.test_events_soap import CONTENT_TYPE, SoapPublisher, envelope
from tests.interop.test_events_hyco_https import NodeSubscriber
from tests.interop.test_hyco_ws import NODE_DIR
from tests.support.rawws import RawWS, hc_url
from tests.support.relay import Bridge, RelayProcess, require_tool, write_config

pytestmark = pytest.mark.interop

EVENTS = 1000
SUFFIX = "/feed"  # every event is published to bus/feed
DELIVERY_TIMEOUT = 60  # seconds for all three subscribers to have every event


class Webhook(ThreadingHTTPServer):
    """The local service behind ``relayd bridge -H``: records each POST (path, content type, body)."""

    daemon_threads = True

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


class Subscribers:
    """The three subscribers, online on ``bus``; what each has received so far."""

    def __init__(self, relay, tmp_path):
        self.relay = relay
        self.hook = Webhook()
        threading.Thread(target=self.hook.serve_forever, daemon=True).start()
        self.bridge = Bridge(tmp_path, relay, "-H", "bus:http://127.0.0.1:%d/hook" % self.hook.server_address[1])
        self.node = NodeSubscriber(relay, "bus")
        self.sdk, self.sdk_out, self.sdk_err = start_subscriber(relay, tmp_path, "sdk")
        self.bridge.wait("-H bus.*online")
        assert self.node.listening.wait(20), self.node.stop()
        assert wait_listeners(relay, "bus", 3) == 3

    def received(self):
        """(SDK bodies, node lines, webhook events) so far."""
        with self.hook.lock:
            hook = list(self.hook.events)
        return read(self.sdk_out).split(b"\n")[:-1], list(self.node.lines), hook

    def wait_for(self, counts):
        """What they received, once each has at least its number in ``counts`` (or at a deadline)."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while time.monotonic() < deadline:
            got = self.received()
            if all(len(part) >= n for part, n in zip(got, counts)):
                return got
            time.sleep(0.05)
        return self.received()

    def stop(self):
        errors = [self.node.stop()]
        stop(self.sdk)
        self.bridge.stop()
        self.hook.shutdown()
        self.hook.server_close()
        return errors


@pytest.fixture(scope="module")
def subscribers(tmp_path_factory):
    require_tool("node", "the hyco-https subscriber needs Node.js")
    require_tool(os.path.join(NODE_DIR, "node_modules", "hyco-https"),
                 "run: cd tests/interop/node && npm ci --no-audit --no-fund")
    tmp = tmp_path_factory.mktemp("events-three")
    relay = RelayProcess(tmp, write_config(tmp, extra=BUS_CONFIG))
    subs = None
    try:
        subs = Subscribers(relay, tmp)
        yield subs
    finally:
        if subs is not None:
            errors = subs.stop()
            assert not any("error" in (e or "") for e in errors), errors
        relay.stop()


# Each way of publishing sends EVENTS events to bus/feed and returns what subscribers must get:
# [(content type, body)] in the order sent.

def publish_http(relay):
    publisher = Publisher(relay, "bus")
    sent = [("text/plain", b"http event %04d" % i) for i in range(EVENTS)]
    try:
        for content_type, body in sent:
            assert publisher.post(body, content_type, path="bus" + SUFFIX)[:2] == (202, "3")
    finally:
        publisher.close()
    return sent


def publish_websocket(relay):
    ws = RawWS(relay.port).start(hc_url(relay, "bus" + SUFFIX, "connect"),
                                 {"ServiceBusAuthorization": sender_token(relay, "bus")})
    assert ws.finish() == 101, ws.status
    sent = [("text/plain; charset=utf-8", b"websocket event %04d" % i) for i in range(EVENTS)]
    try:
        for _, body in sent:
            ws.send_message(body, binary=False)  # a text message: text/plain; charset=utf-8
    finally:
        ws.close()
    return sent


def publish_soap(relay):
    token = sender_token(relay, "bus")
    publishers = {v: SoapPublisher(relay, "bus" + SUFFIX, v) for v in ("1.1", "1.2")}
    sent = []
    try:
        for i in range(EVENTS):
            version = "1.1" if i % 2 == 0 else "1.2"
            body, stripped = envelope(version, "soap event %04d" % i, token)
            status, response, reply = publishers[version].post(body)
            assert (status, response.getheader("X-Relayd-Delivered"), reply) == (202, "3", b""), reply
            sent.append((CONTENT_TYPE[version], stripped))
    finally:
        for publisher in publishers.values():
            publisher.close()
    return sent


WAYS = {"http": publish_http, "websocket": publish_websocket, "soap": publish_soap}


@pytest.mark.parametrize("way", list(WAYS))
def test_three_subscribers_receive_every_event_in_order(subscribers, way):
    before = [len(part) for part in subscribers.received()]
    started = time.monotonic()
    sent = WAYS[way](subscribers.relay)
    sdk, node, hook = subscribers.wait_for([n + EVENTS for n in before])
    print("%s: %d events to 3 subscribers in %.1f s" % (way, EVENTS, time.monotonic() - started))
    sdk, node, hook = sdk[before[0]:], node[before[1]:], hook[before[2]:]
    assert sdk == [body for _, body in sent]
    assert node == ["EVENT POST /bus%s %s %s" % (SUFFIX, content_type, body.decode("utf-8"))
                    for content_type, body in sent]
    assert hook == [("/hook" + SUFFIX, content_type, body) for content_type, body in sent]
    assert "the local service failed" not in subscribers.bridge.text()
    assert wait_listeners(subscribers.relay, "bus", 3) == 3  # no subscriber was cut
