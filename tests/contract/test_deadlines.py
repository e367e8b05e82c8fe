"""The deadlines and the connection limit the front doors promise, in memory on the fake clock:
the HTTP port's request-head deadline (408), the net.tcp preamble deadline (a framing fault),
and ``limits.max_connections`` (503 with Retry-After on the HTTP port, ``ServerTooBusy`` on
net.tcp, a closed socket on a port-mapped door), its places given back on close."""

import pytest
from twisted.internet.error import ConnectionDone

from relayd.wire import nmf
from tests.contract import harness
from tests.contract.doors import HTTP_PORT, NETTCP_PORT, TCP_PORT, RawClient

LIMIT = 3


@pytest.fixture
def relay(tmp_path):
    r = harness.MemoryRelay(tmp_path, limits={"max_connections": LIMIT})
    yield r
    r.stop()


def head_timeout(relay):
    return relay.service.settings.limits.open_handshake_timeout


def status(client):
    data = client.received()
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None


@pytest.mark.parametrize("port, sent, answer", [
    (HTTP_PORT, b"", b"HTTP/1.1 408 "),
    (HTTP_PORT, b"GET /door/x HTTP/1.1\r\nHost: relay.test\r\nX-Slow: ", b"HTTP/1.1 408 "),
    (NETTCP_PORT, b"", nmf.fault(nmf.SERVER_TOO_BUSY)),
    (NETTCP_PORT, nmf.encode_preamble("net.tcp://relay.test/door")[:9], nmf.fault(nmf.SERVER_TOO_BUSY)),
], ids=["http-nothing", "http-part-of-a-head", "nettcp-nothing", "nettcp-part-of-a-preamble"])
def test_head_and_preamble_deadlines(relay, port, sent, answer):
    """The HTTP port answers 408 to a request head that does not arrive in time; the net.tcp
    door a ServerTooBusy fault to a preamble that does not (both limits.open_handshake_timeout)."""
    client = RawClient(sent)
    relay.connect(port, client)
    relay.advance(head_timeout(relay) - 0.5, step=0.5)
    assert client.lost is None and client.received() == b""
    relay.advance(1, step=0.5)
    assert client.received().startswith(answer)
    assert client.lost.check(ConnectionDone)


@pytest.mark.parametrize("held_on", [HTTP_PORT, NETTCP_PORT], ids=["http", "nettcp"])
def test_connection_limit_is_one_budget_for_every_door(relay, held_on):
    held = []
    for _ in range(LIMIT):
        held.append(RawClient())
        relay.connect(held_on, held[-1])
    assert all(c.lost is None for c in held)
    http, nettcp, port = RawClient(b"GET /door/x HTTP/1.1\r\nHost: relay.test\r\n\r\n"), RawClient(), RawClient()
    relay.connect(HTTP_PORT, http)
    relay.connect(NETTCP_PORT, nettcp)
    relay.connect(TCP_PORT, port)
    assert status(http) == 503 and b"\r\nRetry-After: 1\r\n" in http.received() and http.lost is not None
    assert nettcp.received() == nmf.fault(nmf.SERVER_TOO_BUSY) and nettcp.lost is not None
    assert port.received() == b"" and port.lost is not None
    # a connection that closes gives its place back
    held[0].transport.loseConnection()
    relay.pump()
    again = RawClient(b"GET /door/x HTTP/1.1\r\nHost: relay.test\r\n\r\n")
    relay.connect(HTTP_PORT, again)
    assert status(again) == 502  # served: no listener on the entity


@pytest.mark.parametrize("head", [
    # no blank line yet, and already more than limits.max_header_bytes
    b"GET /door/x HTTP/1.1\r\nHost: relay.test\r\nX-Big: " + b"x" * (40 * 1024),
    # a complete head, but longer than the limit
    b"GET /door/x HTTP/1.1\r\nHost: relay.test\r\nX-Big: " + b"x" * (40 * 1024) + b"\r\n\r\n",
], ids=["unterminated", "terminated"])
def test_oversized_request_head_is_431_at_once(relay, head):
    """A request head over limits.max_header_bytes is answered 431 and closed as soon as it is
    over, whether or not its end has come, without waiting for the head deadline."""
    client = RawClient(head)
    relay.connect(HTTP_PORT, client)
    relay.pump()
    assert status(client) == 431
    assert client.lost.check(ConnectionDone)
