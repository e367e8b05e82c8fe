"""The bridge's shared pump (relayd.client.bridge.tunnel.Tunnel) in memory: a real client
WebSocket (RelayedConnection) speaking WebSocket bytes to a StringTransport on one side, a
local TCP side on a StringTransport on the other.  Its states, half-close in both directions
and reset propagation both ways."""

import struct

from twisted.internet import error
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from relayd.client.bridge.tunnel import CLOSED, CONNECTING, HALF_CLOSED, LOCAL_RESET, OPEN, LocalSide, Tunnel
from relayd.client.handshake import open_websocket
from tests.unit.test_client_units import Wire
from tests.unit.test_tcp_door import HalfClosingTransport

BINARY, CLOSE = 0x2, 0x8


def server_binary(payload):
    assert len(payload) < 126
    return bytes([0x80 | BINARY, len(payload)]) + payload


def server_close(code, reason=b""):
    payload = struct.pack(">H", code) + reason
    return bytes([0x80 | CLOSE, len(payload)]) + payload


def relayed_connection():
    reactor = MemoryReactorClock()
    opened = []
    open_websocket(reactor, "ws://127.0.0.1:9090/$hc/echo").addCallback(opened.append)
    wire = Wire(reactor, 0)
    wire.answer()
    return opened[0], wire


def tunnel(via=None):
    conn, wire = relayed_connection()
    t = Tunnel("-R test->127.0.0.1:1", conn, via)
    local = LocalSide(t)
    return t, wire, local


def connect_local(local):
    transport = HalfClosingTransport()  # records a shut-down write half and an abort
    local.makeConnection(transport)
    return transport


def test_relay_data_is_held_until_the_local_side_connects():
    t, wire, local = tunnel()
    assert t.state == CONNECTING and wire.transport.producerState == "paused"
    wire.proto.dataReceived(server_binary(b"early "))
    wire.proto.dataReceived(server_binary(b"bytes"))
    transport = connect_local(local)
    assert t.state == OPEN and wire.transport.producerState == "producing"
    assert transport.value() == b"early bytes" and t.bytes_in == 11
    local.dataReceived(b"answer")
    assert wire.sent() == [(BINARY, b"answer")] and t.bytes_out == 6


def test_local_eof_then_the_far_end_marker_close_the_local_side():
    t, wire, local = tunnel()
    transport = connect_local(local)
    local.readConnectionLost()
    assert t.state == HALF_CLOSED and wire.sent() == [(BINARY, b"")]  # the end-of-stream marker
    assert not transport.disconnecting
    wire.proto.dataReceived(server_binary(b"still flowing"))
    assert transport.value() == b"still flowing"
    wire.proto.dataReceived(server_binary(b""))
    assert transport.disconnecting and not transport.aborted
    local.connectionLost(Failure(error.ConnectionDone()))
    assert t.state == CLOSED and wire.sent() == [(CLOSE, struct.pack(">H", 1000))]


def test_the_far_end_marker_shuts_down_writing_only():
    t, wire, local = tunnel()
    transport = connect_local(local)
    wire.proto.dataReceived(server_binary(b""))
    assert t.state == HALF_CLOSED and transport.write_shut and not transport.disconnecting
    local.dataReceived(b"the answer goes on")
    assert wire.sent() == [(BINARY, b"the answer goes on")]


def test_a_local_reset_closes_the_leg_with_1011():
    t, wire, local = tunnel()
    connect_local(local)
    local.connectionLost(Failure(error.ConnectionLost()))
    assert t.state == CLOSED
    assert wire.sent() == [(CLOSE, struct.pack(">H", 1011) + LOCAL_RESET.encode())]


def test_a_leg_that_breaks_resets_the_local_side():
    t, wire, local = tunnel()
    transport = connect_local(local)
    wire.drop()  # 1006: the far end's stream broke before its end
    assert t.state == CLOSED and transport.aborted


def test_a_clean_close_ends_the_local_side_with_a_fin():
    t, wire, local = tunnel()
    transport = connect_local(local)
    wire.proto.dataReceived(server_close(1000))
    wire.proto.connectionLost(Failure(error.ConnectionDone()))
    assert t.state == CLOSED and transport.disconnecting and not transport.aborted


def test_a_local_side_that_connects_after_the_leg_ended_is_closed():
    t, wire, local = tunnel()
    wire.drop()
    assert t.state == CLOSED
    transport = connect_local(local)
    assert transport.disconnecting and transport.value() == b""


def test_an_unreachable_local_service_closes_the_leg_with_1011():
    t, wire, _local = tunnel()
    t.local_failed(Failure(error.ConnectionRefusedError()))
    assert t.state == CLOSED
    assert wire.sent() == [(CLOSE, struct.pack(">H", 1011) + b"the bridge cannot reach its local service")]
