"""Event distribution published over WebSocket (issue 11): ``sb-hc-action=connect`` on a
``kind = "multicast"`` / ``"oneway"`` entity opens a publishing channel (each message one
event) on a ``twistd -n relayd`` subprocess; raw HC listeners subscribe
(:mod:`tests.support.rawws`), raw WebSocket clients publish."""

import contextlib

import pytest

from relayd.transports.events_ws import NO_LISTENER_CODE
from tests.integration.test_events_http import Subscriber, sender_token, wait_listeners
from tests.support.rawws import Closed, RawWS, frame, hc_url, pair, token
from tests.support.relay import LISTEN_KEY, RelayProcess, relay_status, write_config

EVENTS = """
[[hybrid_connections]]
path = "wsbus"
kind = "multicast"
max_message = 4096

[[hybrid_connections]]
path = "wsqueue"
kind = "oneway"

[[hybrid_connections]]
path = "wsopen"
kind = "multicast"
requires_client_authorization = false
"""


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("events-ws-relay")
    proc = RelayProcess(workdir, write_config(workdir, extra=EVENTS))
    yield proc
    proc.stop()


def publisher(relay, path, tok="default", query=""):
    """A raw WebSocket publisher; returns it with its handshake status read."""
    headers = {}
    if tok == "default":
        tok = sender_token(relay, path.split("/")[0])
    if tok:
        headers["ServiceBusAuthorization"] = tok
    ws = RawWS(relay.port).start(hc_url(relay, path, "connect") + query, headers)
    ws.finish()
    return ws


@contextlib.contextmanager
def subscribed(relay, path, n, answer_first=False):
    """``n`` raw subscribers of ``path``, all registered; stopped on the way out."""
    subs = [Subscriber(relay, path, answer=(answer_first and i == 0)) for i in range(n)]
    try:
        assert wait_listeners(relay, path, n) == n
        yield subs
    finally:
        for sub in subs:
            sub.stop()


def expect_close(ws, timeout=10):
    with pytest.raises(Closed) as closed:
        while True:
            ws.recv_message(timeout=timeout)
    return closed.value


def test_three_subscribers_get_1000_events_in_order(relay):
    with subscribed(relay, "wsbus", 3, answer_first=True) as subs:
        before = relay_status(relay)["events"]["multicast"]
        pub = publisher(relay, "wsbus/news", query="&x=1")
        assert pub.status == 101
        for i in range(1000):
            pub.send_message(b"event %d" % i, binary=(i % 2 == 0))
        for sub in subs:
            assert sub.wait_for(1000) == 1000, sub.error
        pub.close()
        for sub in subs:
            assert [body for _, body in sub.events] == [b"event %d" % i for i in range(1000)]
            for i in (0, 1):
                request = sub.events[i][0]
                assert request["method"] == "POST"
                assert request["requestTarget"] == "/wsbus/news?x=1"
                headers = {k.lower(): v for k, v in request["requestHeaders"].items()}
                assert headers["content-type"] == (
                    "application/octet-stream" if i == 0 else "text/plain; charset=utf-8")
                assert headers["x-relayd-event"] == "multicast"
            assert sub.closed is None and sub.error is None
        assert len({sub.events[7][0]["id"] for sub in subs}) == 1  # one encoding, one id
        after = relay_status(relay)["events"]["multicast"]
        assert after["published"] - before["published"] == 1000
        assert after["deliveries"] - before["deliveries"] == 3000


def test_oversize_event_closes_1009_others_unaffected(relay):
    with subscribed(relay, "wsbus", 2) as subs:
        big, other = publisher(relay, "wsbus"), publisher(relay, "wsbus")
        assert (big.status, other.status) == (101, 101)
        big.send_message(b"fine")
        other.send_message(b"other 0")
        big.send_message(b"x" * 4097)  # max_message is 4096
        closed = expect_close(big)
        assert closed.code == 1009
        assert "max_message" in closed.reason and "4096" in closed.reason
        for i in range(1, 50):
            other.send_message(b"other %d" % i)
        for sub in subs:
            assert sub.wait_for(51) == 51, sub.error
            got = [b for _, b in sub.events]  # order is kept per publisher connection only
            assert [b for b in got if b != b"fine"] == [b"other %d" % i for i in range(50)]
            assert got.count(b"fine") == 1
            assert sub.closed is None
        big.close()
        other.close()


def test_oversize_fragmented_event_closes_1009(relay):
    pub = publisher(relay, "wsbus")
    try:
        assert pub.status == 101
        for i in range(5):  # 5 x 1000 bytes in continuation frames: over 4096 on the fifth
            pub.send(frame(2 if i == 0 else 0, b"y" * 1000, fin=False))
        closed = expect_close(pub)
        assert closed.code == 1009 and "max_message" in closed.reason
    finally:
        pub.close()


def test_handshake_needs_send(relay):
    none = publisher(relay, "wsbus", tok=None)
    listen_only = publisher(relay, "wsbus", tok=token(relay, "wsbus", rule="listener", key=LISTEN_KEY))
    try:
        assert none.status == 401
        assert listen_only.status == 403
    finally:
        none.close()
        listen_only.close()
    with subscribed(relay, "wsopen", 1) as (sub,):
        anonymous = publisher(relay, "wsopen", tok=None)
        assert anonymous.status == 101
        anonymous.send_message(b"anon", binary=False)
        assert sub.wait_for(1) == 1 and sub.events[0][1] == b"anon"
        anonymous.close()


def test_oneway_without_listener_closes_no_listener(relay):
    assert wait_listeners(relay, "wsqueue", 0) == 0
    pub = publisher(relay, "wsqueue")  # opens without a listener
    try:
        assert pub.status == 101
        pub.send_message(b"job")
        closed = expect_close(pub)
        assert closed.code == NO_LISTENER_CODE == 1013
        assert "no listener" in closed.reason and "wsqueue" in closed.reason
    finally:
        pub.close()
    with subscribed(relay, "wsqueue", 1) as (sub,):
        pub = publisher(relay, "wsqueue")
        for i in range(20):
            pub.send_message(b"job %d" % i)
        assert sub.wait_for(20) == 20
        assert [b for _, b in sub.events] == [b"job %d" % i for i in range(20)]
        pub.close()


def test_plain_entity_still_rendezvous(relay):
    ctl, sender, leg = pair(relay, "echo")
    try:
        sender.send_message(b"hello")
        assert leg.recv_message() == (2, b"hello")
    finally:
        for ws in (ctl, sender, leg):
            ws.close()


def test_announced_huge_event_is_refused_before_it_is_read(relay):
    """A frame header announcing 1 GiB is refused at the header: the relay buffers none of it."""
    pub = publisher(relay, "wsbus")
    try:
        assert pub.status == 101
        pub.send(frame(2, b"z" * 1000, length=1 << 30))  # the header says 1 GiB, 1000 bytes follow
        closed = expect_close(pub)
        assert closed.code == 1009 and "max_message of 4096" in closed.reason
    finally:
        pub.close()
