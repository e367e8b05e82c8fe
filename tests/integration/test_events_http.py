"""Event distribution published over HTTP (issue 11): ``kind = "multicast"`` and ``"oneway"``
entities on a ``twistd -n relayd`` subprocess, raw HC listeners as subscribers
(:mod:`tests.support.rawws`), a keep-alive ``http.client`` publisher."""

import http.client
import json
import socket
import threading
import time
import urllib.request

import pytest

from relayd.wire import sas
from tests.support.rawws import Closed, RawWS, hc_url, listen, token
from tests.support.relay import LISTEN_KEY, ROOT_KEY, SEND_KEY, RelayProcess, relay_status, write_config

# One multicast entity "bus" (for the subscriber interop tests).
BUS_CONFIG = """
[[hybrid_connections]]
path = "bus"
kind = "multicast"
"""

EVENTS = """
[[hybrid_connections]]
path = "bus"
kind = "multicast"
max_message = 4096

[[hybrid_connections]]
path = "queue"
kind = "oneway"

[[hybrid_connections]]
path = "slowbus"
kind = "multicast"

[[hybrid_connections]]
path = "openbus"
kind = "multicast"
requires_client_authorization = false

[limits]
control_queue_max = 65536
control_stall_timeout = 120
"""


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("events-relay")
    proc = RelayProcess(workdir, write_config(workdir, extra=EVENTS))
    yield proc
    proc.stop()


def sender_token(relay, path, rule="sender", key=SEND_KEY):
    return sas.make_token("%s/%s" % (relay.http_url, path), rule, key, int(time.time()) + 3600)


class Publisher:
    """One keep-alive HTTP connection to the relay."""

    def __init__(self, relay, path, tok=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=20)
        self.path = path
        self.token = sender_token(relay, path) if tok is None else tok

    def post(self, body, content_type="application/octet-stream", path=None, method="POST"):
        headers = {"Content-Type": content_type}
        if self.token:
            headers["ServiceBusAuthorization"] = self.token
        self.conn.request(method, "/" + (path or self.path), body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.getheader("X-Relayd-Delivered"), response.read()

    def close(self):
        self.conn.close()


class Subscriber(threading.Thread):
    """A raw HC listener that reads every event (``request`` + binary body) in a thread and,
    with ``answer``, responds to each as a listener would to an HTTP request."""

    def __init__(self, relay, path, answer=False, idle_timeout=30):
        super().__init__(daemon=True)
        self.ctl = listen(relay, path)
        self.answer = answer
        self.idle_timeout = idle_timeout  # seconds without a message before the reader gives up
        self.events = []  # (request message, body)
        self.closed = None
        self.error = None
        self.start()

    def run(self):
        try:
            while True:
                try:
                    opcode, payload = self.ctl.recv_message(timeout=self.idle_timeout)
                except Closed as e:
                    self.closed = (e.code, e.reason)
                    return
                assert opcode == 1, opcode
                request = json.loads(payload)["request"]
                body = b""
                if request["body"]:
                    opcode, body = self.ctl.recv_message(timeout=10)
                    assert opcode == 2
                self.events.append((request, body))
                if self.answer:
                    self.ctl.send_message(json.dumps({"response": {
                        "requestId": request["id"], "statusCode": 200, "body": True}}).encode(), binary=False)
                    self.ctl.send_message(b"ignored by the relay")
        except (OSError, TimeoutError, AssertionError) as e:
            self.error = e

    def wait_for(self, n, timeout=30):
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline and self.error is None and self.is_alive():
            time.sleep(0.01)
        return len(self.events)

    def stop(self):
        try:
            self.ctl.sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread; close alone would not
        except OSError:
            pass
        self.join(5)
        self.ctl.close()


def entity_listeners(relay, path):
    """The entity's listener count from the management API (``GET /$relayd/entities/{path}``)."""
    url = "%s/$relayd/entities/%s" % (relay.http_url, path)
    tok = sas.make_token(relay.http_url + "/", "root", ROOT_KEY, int(time.time()) + 300)
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": tok}), timeout=10) as r:
        return json.loads(r.read())["listeners"]


def wait_listeners(relay, path, n, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        count = entity_listeners(relay, path)
        if count == n or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


def test_multicast_every_subscriber_gets_every_event_in_order(relay):
    subs = [Subscriber(relay, "bus", answer=(i == 0)) for i in range(3)]
    publisher = Publisher(relay, "bus")
    try:
        for i in range(1000):
            status, delivered, body = publisher.post(b"event %d" % i, "text/plain", path="bus/news?x=1")
            assert (status, delivered) == (202, "3"), (i, status, body)
            assert json.loads(body) == {"delivered": 3}
        for sub in subs:
            assert sub.wait_for(1000) == 1000, sub.error
        for sub in subs:
            assert [body for _, body in sub.events] == [b"event %d" % i for i in range(1000)]
            request = sub.events[0][0]
            assert request["method"] == "POST"
            assert request["requestTarget"] == "/bus/news?x=1"
            headers = {k.lower(): v for k, v in request["requestHeaders"].items()}
            assert headers["content-type"] == "text/plain"
            assert "servicebusauthorization" not in headers
            assert sub.closed is None and sub.error is None
        # the same event went to all three, under one id
        assert len({sub.events[5][0]["id"] for sub in subs}) == 1
    finally:
        publisher.close()
        for sub in subs:
            sub.stop()


def test_oneway_balances_and_each_event_reaches_one_listener(relay):
    subs = [Subscriber(relay, "queue") for _ in range(2)]
    publisher = Publisher(relay, "queue")
    try:
        for i in range(200):
            status, delivered, _ = publisher.post(b"job %d" % i)
            assert (status, delivered) == (202, "1")
        deadline = time.monotonic() + 20
        while sum(len(s.events) for s in subs) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        got = [body for s in subs for _, body in s.events]
        assert sorted(got) == sorted(b"job %d" % i for i in range(200))  # each exactly once
        assert all(len(s.events) >= 40 for s in subs), [len(s.events) for s in subs]
        for s in subs:  # order kept per publisher connection on each listener
            numbers = [int(body.split()[1]) for _, body in s.events]
            assert numbers == sorted(numbers)
    finally:
        publisher.close()
        for sub in subs:
            sub.stop()


def test_oneway_without_listener_is_502_and_keeps_the_connection(relay):
    assert wait_listeners(relay, "queue", 0) == 0
    publisher = Publisher(relay, "queue")
    try:
        status, _, body = publisher.post(b"lost")
        assert status == 502
        assert "no listener" in json.loads(body)["error"]["message"]
        sub = Subscriber(relay, "queue")
        try:
            assert publisher.post(b"found")[:2] == (202, "1")  # same connection
            assert sub.wait_for(1) == 1 and sub.events[0][1] == b"found"
        finally:
            sub.stop()
    finally:
        publisher.close()


def test_multicast_without_subscriber_is_accepted_and_dropped(relay):
    dropped = relay_status(relay)["events"]["multicast"]["dropped"]
    publisher = Publisher(relay, "openbus", tok="")  # anonymous publishing allowed here
    try:
        assert publisher.post(b"nobody")[:2] == (202, "0")
    finally:
        publisher.close()
    assert relay_status(relay)["events"]["multicast"]["dropped"] == dropped + 1


def test_oversize_event_is_413(relay):
    assert wait_listeners(relay, "bus", 0) == 0
    sub = Subscriber(relay, "bus")
    publisher = Publisher(relay, "bus")
    try:
        status, _, body = publisher.post(b"x" * 4097)
        assert status == 413 and "max_message of 4096" in json.loads(body)["error"]["message"]
        publisher.close()
        publisher = Publisher(relay, "bus")
        assert publisher.post(b"x" * 4096)[:2] == (202, "1")
        # a chunked body that grows past max_message
        publisher.conn.putrequest("POST", "/bus")
        publisher.conn.putheader("ServiceBusAuthorization", publisher.token)
        publisher.conn.putheader("Transfer-Encoding", "chunked")
        publisher.conn.endheaders()
        for _ in range(3):
            publisher.conn.send(b"800\r\n" + b"y" * 2048 + b"\r\n")
        publisher.conn.send(b"0\r\n\r\n")
        assert publisher.conn.getresponse().status == 413
        assert sub.wait_for(1) == 1
        time.sleep(0.2)
        assert [len(body) for _, body in sub.events] == [4096]
    finally:
        publisher.close()
        sub.stop()


def test_no_token_401_and_listen_only_token_403_before_the_body(relay):
    sub = Subscriber(relay, "bus")
    try:
        for tok, status in (("", 401), (sender_token(relay, "bus", "listener", LISTEN_KEY), 403)):
            # the head alone: the relay answers without waiting for the declared body
            s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            auth = "ServiceBusAuthorization: %s\r\n" % tok if tok else ""
            s.sendall(("POST /bus HTTP/1.1\r\nHost: x\r\n%sContent-Length: 1000\r\n\r\n" % auth).encode())
            answer = s.recv(65536)
            s.close()
            assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:80]
        publisher = Publisher(relay, "bus")
        try:
            status, _, _ = publisher.post(b"", method="GET")
            assert status == 405
        finally:
            publisher.close()
        time.sleep(0.2)
        assert sub.events == []
    finally:
        sub.stop()


def test_slow_subscriber_is_cut_off_and_the_others_get_everything(relay):
    slow = RawWS(relay.port).start(hc_url(relay, "slowbus", "listen"),
                                   {"ServiceBusAuthorization": token(relay, "slowbus")})
    assert slow.finish() == 101
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never reads again
    fast = [Subscriber(relay, "slowbus") for _ in range(2)]
    assert wait_listeners(relay, "slowbus", 3) == 3
    start = relay.log_end()
    publisher = Publisher(relay, "slowbus")
    event = b"e" * 16384
    try:
        delivered = []
        for i in range(1000):
            status, n, _ = publisher.post(b"%06d" % i + event)
            assert status == 202
            delivered.append(int(n))
        # (the relay's RSS with a stalled subscriber, and each queue bound, are measured in
        # tests/integration/test_events_queue_bounds.py)
        assert delivered[0] == 3 and delivered[-1] == 2, delivered[:3] + delivered[-3:]
        for sub in fast:
            assert sub.wait_for(1000) == 1000, sub.error
            assert [body[:6] for _, body in sub.events] == [b"%06d" % i for i in range(1000)]
        relay.wait_log(r"subscriber .* on slowbus fell behind", since=start)
        assert wait_listeners(relay, "slowbus", 2) == 2
        assert relay_status(relay)["events"]["multicast"]["cut"] == 1
    finally:
        publisher.close()
        slow.close()
        for sub in fast:
            sub.stop()
