"""What one small HTTP request costs the HTTP door besides its bytes, in memory on the fake
clock (issue 10, small HTTP requests): keep-alive requests answered on the listener's control
channel make no reactor timer per request for the wait between requests (the one call is moved)
and leave no pending rendezvous -- while the deadlines between requests (keep-alive idle close, the 408 head deadline) still hold."""

import json

import pytest

from tests.contract import harness
from tests.contract.doors import HTTP_PORT, RawClient

REQUESTS = 20
GET = b"GET /%s/x HTTP/1.1\r\nHost: relay.test\r\n\r\n" % harness.ENTITY.encode()


@pytest.fixture
def relay(tmp_path):
    r = harness.MemoryRelay(tmp_path)
    yield r
    r.stop()


class CountingCalls:
    """Counts the reactor calls made through the fake clock (wraps its ``callLater``)."""

    def __init__(self, clock):
        self.made = 0
        self._call_later = clock.callLater
        clock.callLater = self

    def __call__(self, *args, **kw):
        self.made += 1
        return self._call_later(*args, **kw)


def request_offers(control):
    return [o for o in control.offers if "request" in o]


def one_request(relay, control, client, n):
    """Send a GET on ``client``'s connection and answer it on the control channel; the answer."""
    before = len(client.received())
    client.transport.write(GET)
    relay.pump()
    offers = request_offers(control)
    assert len(offers) == n + 1
    harness.respond(relay, control, offers[-1], body=b"hello %d" % n)
    answer = client.received()[before:]
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"hello %d" % n), answer
    return answer


def test_keepalive_requests_make_no_timer_for_the_wait_between_them(relay):
    control = harness.listen(relay)
    client = RawClient()
    relay.connect(HTTP_PORT, client)
    one_request(relay, control, client, 0)  # the connection's own calls are made by now
    calls = CountingCalls(relay.clock)
    switchboard = relay.service.switchboard
    for n in range(1, REQUESTS + 1):
        one_request(relay, control, client, n)
        assert switchboard.pending_count() == 0
    # per request: the rendezvous' accept deadline and the response deadline, nothing else
    # (before: also the keep-alive wait's call, made and cancelled, and the response deadline
    # made twice)
    assert calls.made <= 2 * REQUESTS, calls.made
    assert client.lost is None


def test_the_deadlines_between_requests_still_hold(relay):
    limits = relay.service.settings.limits
    control = harness.listen(relay)
    client = RawClient()
    relay.connect(HTTP_PORT, client)
    for n in range(3):
        one_request(relay, control, client, n)
    # part of a head after a kept-alive response: 408 after the head deadline
    before = len(client.received())
    client.transport.write(b"GET /door/x HTTP/1.1\r\nHost: rel")
    relay.pump()
    relay.advance(limits.open_handshake_timeout - 0.5, step=0.5)
    assert client.received()[before:] == b"" and client.lost is None
    relay.advance(1, step=0.5)
    answer = client.received()[before:]
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == 408
    assert client.lost is not None

    # an idle kept-alive connection closes after the keep-alive timeout, not before
    idle = RawClient()
    relay.connect(HTTP_PORT, idle)
    one_request(relay, control, idle, 3)
    relay.advance(limits.http_keepalive_timeout - 0.5, step=0.5)
    assert idle.lost is None
    relay.advance(1, step=0.5)
    assert idle.lost is not None
