"""The HTTP relaying door's deadlines in memory, with a fake clock (issue 8, item 12): the
keep-alive idle timeout, the head deadline of a later request, and the body progress deadline
(``http_body_timeout`` + received / ``http_body_min_rate``, capped for SOAP envelopes read
before their sender is known).  The real HttpRelayProtocol on a StringTransport."""

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from relayd import config
from relayd.namespace import Namespace, SqliteStore
from relayd.switchboard import Switchboard
from relayd.transports.http.door import HttpDoor
from relayd.wire import hc

CONFIG = {
    "hybrid_connections": [
        {"path": "open", "requires_client_authorization": False},
        {"path": "soapy", "kind": "soap", "requires_client_authorization": False},
        {"path": "secure", "kind": "soap"},
    ],
    "rules": [{"name": "root", "key": "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ==", "rights": ["Manage", "Listen", "Send"]}],
    "limits": {"http_keepalive_timeout": 5, "open_handshake_timeout": 3, "http_body_timeout": 20,
               "http_body_min_rate": 1000, "soap_unauthenticated_timeout": 4,
               "soap_unauthenticated_budget": 10000},
}


class Hybrid:
    """What HttpDoor needs of the WebSocket door: somewhere to register its response router."""

    router = None

    def set_response_router(self, router):
        self.router = router


@pytest.fixture
def door(tmp_path):
    settings = config.parse(dict(CONFIG, relay={"data_dir": str(tmp_path)}), "test")
    clock = Clock()
    store = SqliteStore(str(tmp_path))
    namespace = Namespace(store, settings)
    d = HttpDoor(namespace, Switchboard(clock), Hybrid(), settings, clock)
    yield d
    store.close()


def connect(door):
    protocol = door.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def status_of(transport):
    value = transport.value()
    return int(value.split(b" ", 2)[1]) if value.startswith(b"HTTP/1.1 ") else None


def test_idle_keepalive_connection_closes_after_the_timeout(door):
    protocol, transport = connect(door)
    protocol.dataReceived(b"GET /open/x HTTP/1.1\r\nHost: relay\r\n\r\n")
    assert status_of(transport) == 502  # no listener; kept alive
    door.clock.advance(4.9)
    assert not transport.disconnecting
    door.clock.advance(0.2)
    assert transport.disconnecting


def test_a_later_request_head_has_its_own_deadline(door):
    protocol, transport = connect(door)
    protocol.dataReceived(b"GET /open/x HTTP/1.1\r\nHost: relay\r\n\r\n")
    transport.clear()
    door.clock.advance(4)  # idle, but within the keep-alive timeout
    for ch in b"GET /open/y HTTP/1.1\r\nX-Slow: ":  # then one byte a second
        protocol.dataReceived(bytes([ch]))
        door.clock.advance(0.1)
        if transport.disconnecting:
            break
    else:
        door.clock.advance(0.5)
    assert transport.disconnecting
    assert status_of(transport) == 408


def test_body_deadline_grows_with_progress(door):
    """20 s plus one second per 1000 bytes: 2000 bytes/s keeps going, 10 bytes/s does not."""
    fast, fast_t = connect(door)
    slow, slow_t = connect(door)
    head = (b"POST /soapy HTTP/1.1\r\nHost: relay\r\nContent-Type: text/xml\r\n"
            b"Content-Length: 200000\r\n\r\n")
    fast.dataReceived(head)
    slow.dataReceived(head)
    for second in range(60):
        fast.dataReceived(b"x" * 2000)
        slow.dataReceived(b"x" * 10)
        door.clock.advance(1)
        if second == 19:
            assert not slow_t.disconnecting
        if second == 21:
            assert slow_t.disconnecting and status_of(slow_t) == 408
    assert not fast_t.disconnecting and fast_t.value() == b""


def test_unauthenticated_soap_envelope_has_a_hard_deadline_and_returns_its_budget(door):
    protocol, transport = connect(door)
    protocol.dataReceived(b"POST /secure HTTP/1.1\r\nHost: relay\r\nContent-Type: text/xml\r\n"
                          b"Content-Length: 6000\r\n\r\n")
    assert door.policies["soap"].budget.used == 6000
    # a second one does not fit in the 10000-byte budget: 503 at once
    other, other_t = connect(door)
    other.dataReceived(b"POST /secure HTTP/1.1\r\nHost: relay\r\nContent-Type: text/xml\r\n"
                       b"Content-Length: 6000\r\n\r\n")
    assert status_of(other_t) == 503 and other_t.disconnecting
    assert b"\r\nRetry-After: 1\r\n" in other_t.value()
    for _ in range(3):
        protocol.dataReceived(b"x" * 1000)  # fast enough for the ordinary body deadline
        door.clock.advance(1)
    assert not transport.disconnecting
    door.clock.advance(1.1)
    assert status_of(transport) == 408 and transport.disconnecting
    assert door.policies["soap"].budget.used == 0
    protocol.connectionLost(None)
    other.connectionLost(None)
    assert door.policies["soap"].budget.used == 0


# -- the exchange's response state machine, answered over a scripted control channel ----------

class Channel:
    """A listener's control channel as the switchboard sees it: records what it is offered."""

    def __init__(self, entity_path):
        self.entity_path = entity_path
        self.listener_id = "scripted"
        self.messages = []

    def offer(self, rendezvous):
        self.rendezvous = rendezvous
        self.messages.append(rendezvous.offer.message("wss://relay/", rendezvous))
        return True

    def offer_raw(self, text, body):
        self.messages.append((text, body))
        return True

    def close(self, code, reason):
        pass


def offered(door):
    channel = Channel("open")
    door.switchboard.add_listener("open", channel)
    return channel


def test_the_policies_and_the_router_provide_their_interfaces(door):
    from zope.interface.verify import verifyObject

    from relayd.interfaces import IResponseRouter
    from relayd.transports.http.policy import IKindPolicy, IRequestPolicy

    assert verifyObject(IResponseRouter, door)
    soap = door.policies["soap"]
    assert verifyObject(IKindPolicy, soap)
    protocol, _ = connect(door)
    protocol.dataReceived(b"POST /soapy HTTP/1.1\r\nHost: relay\r\nContent-Type: text/xml\r\n"
                          b"Content-Length: 5000\r\n\r\n")
    assert verifyObject(IRequestPolicy, protocol.exchange.policy)
    assert protocol.exchange.policy.reads_body_first() and protocol.exchange.fault_version == "1.1"


def test_a_response_with_a_body_over_the_control_channel(door):
    channel = offered(door)
    protocol, transport = connect(door)
    protocol.dataReceived(b"GET /open/x HTTP/1.1\r\nHost: relay\r\n\r\n")
    exchange = protocol.exchange
    assert exchange.response_state == "waiting"
    request_id = exchange.id
    door.control_response(channel, hc.Response(request_id, 201, "Made", {"X-A": "1"}, body=True))
    assert exchange.response_state == "whole" and transport.value() == b""
    door.control_binary(channel, b"hello")
    assert exchange.response_state == "done" and protocol.exchange is None
    assert transport.value() == (b"HTTP/1.1 201 Made\r\nX-A: 1\r\nVia: 1.1 relay\r\n"
                                 b"Content-Length: 5\r\n\r\nhello")
    door.control_binary(channel, b"")  # a stray empty message afterwards is ignored
    assert not transport.disconnecting


def test_an_answer_for_a_finished_request_is_dropped_with_its_body(door):
    channel = offered(door)
    protocol, transport = connect(door)
    protocol.dataReceived(b"GET /open/x HTTP/1.1\r\nHost: relay\r\n\r\n")
    request_id = protocol.exchange.id
    door.clock.advance(61)  # the entity's response deadline
    assert status_of(transport) == 504 and transport.disconnecting
    door.control_response(channel, hc.Response(request_id, 200, "", {}, body=True))
    door.control_binary(channel, b"late")
    assert b"late" not in transport.value()


def test_a_response_state_cannot_go_back():
    from relayd.transports.http.responses import ResponseSide

    side = ResponseSide()
    side._response_to("streaming")
    with pytest.raises(RuntimeError):
        side._response_to("whole")
    side._response_to("done")
    assert side.finished and side.responding


def test_the_request_states_of_a_small_body(door):
    channel = offered(door)
    protocol, transport = connect(door)
    protocol.dataReceived(b"POST /open/x HTTP/1.1\r\nHost: relay\r\nContent-Length: 5\r\n\r\nhel")
    exchange = protocol.exchange
    assert exchange.request_state == "receiving" and channel.messages == [None]  # nothing announced yet
    protocol.dataReceived(b"lo")
    assert exchange.request_state == "complete" and exchange.response_state == "waiting"
    text, body = channel.messages[-1]
    assert body == b"hello" and '"method":"POST"' in text.replace(" ", "")
