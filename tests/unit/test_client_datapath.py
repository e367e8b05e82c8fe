"""The client's data path in memory (issue 10 item 3): the real RelayedConnection on a
StringTransport, fed server frames in fragments at every split point of their headers and
payloads, with pings in the middle of a message; what it sends checked frame by frame (one
masked frame per send, a fresh mask per frame); protocol violations from the server closed with
their codes; the bridge tunnel writing payload to the local side as it arrives."""

import base64
import hashlib
import random
import struct

import pytest
from twisted.internet import error
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from relayd.client.bridge.tunnel import LocalSide, Tunnel
from relayd.client.handshake import open_websocket
from relayd.wire import wsframe
from tests.support.rawws import frame
from tests.unit.test_bridge_tunnel import connect_local, relayed_connection
from tests.unit.test_client_units import GUID, Wire

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def server(opcode, payload=b"", fin=True, rsv=0):
    return frame(opcode, payload, fin=fin, rsv=rsv, masked=False)


def parse_client_frames(data):
    """[(fin, opcode, mask, payload)] of what the client sent; every frame must be masked."""
    out, i = [], 0
    while i < len(data):
        header, length = wsframe.parse_header(data, i)
        assert header.masked, "a client frame went out unmasked"
        i += length
        body = bytes(data[i:i + header.length])
        assert len(body) == header.length, "a client frame was cut short"
        payload = bytearray(body)
        wsframe.xor_mask(payload, header.mask)  # the pure codec, not relayd.accel's C masker
        out.append((header.fin, header.opcode, header.mask, bytes(payload)))
        i += header.length
    return out


class Recorder:
    """on_data / on_message_end of a streaming connection: the messages as they were delivered."""

    def __init__(self, conn):
        self.messages = []  # [is_binary, bytearray] per message
        self.current = bytearray()
        self.pieces = 0
        conn.on_data = self.data
        conn.on_message_end = self.end

    def data(self, piece):
        assert isinstance(piece, bytes)  # on_data hands over bytes it may keep
        self.pieces += 1
        self.current += piece

    def end(self, is_binary, size):
        assert size == len(self.current)
        self.messages.append((is_binary, bytes(self.current)))
        self.current = bytearray()


def open_streaming():
    conn, wire = relayed_connection()
    wire.transport.clear()
    return conn, wire, Recorder(conn)


PAYLOAD_300 = bytes(range(256)) + b"x" * 44
PAYLOAD_64K = random.Random(7).randbytes(65536)
# a fragmented binary message with a ping between its frames, a text message (7-bit length),
# an empty binary message (the half-close marker), a 16-bit and a 64-bit length message
STREAM = b"".join([
    server(BINARY, PAYLOAD_300[:10], fin=False),
    server(PING, b"are you there"),
    server(CONT, PAYLOAD_300[10:], fin=True),
    server(TEXT, "h\u00e9llo \u20ac".encode("utf-8")),
    server(BINARY, b""),
    server(BINARY, PAYLOAD_300),
    server(BINARY, PAYLOAD_64K),
])
EXPECTED = [(True, PAYLOAD_300), (False, "h\u00e9llo \u20ac".encode("utf-8")), (True, b""),
            (True, PAYLOAD_300), (True, PAYLOAD_64K)]


def frame_starts():
    starts, i = [], 0
    for part in [server(BINARY, PAYLOAD_300[:10], fin=False), server(PING, b"are you there"),
                 server(CONT, PAYLOAD_300[10:]), server(TEXT, "h\u00e9llo \u20ac".encode("utf-8")),
                 server(BINARY, b""), server(BINARY, PAYLOAD_300), server(BINARY, PAYLOAD_64K)]:
        starts.append(i)
        i += len(part)
    return starts + [i]


def split_points():
    """Every split in the first and last 16 bytes of each frame (headers of every length
    encoding and payload edges), plus every point of the small frames."""
    points = set()
    starts = frame_starts()
    for a, b in zip(starts, starts[1:]):
        if b - a < 400:
            points.update(range(a, b + 1))
        else:
            points.update(range(a, a + 17))
            points.update(range(b - 16, b + 1))
    return sorted(p for p in points if 0 < p < len(STREAM))


def check(wire, rec):
    assert rec.messages == EXPECTED
    sent = parse_client_frames(wire.transport.value())
    assert [(fin, op, payload) for fin, op, _m, payload in sent] == [(True, PONG, b"are you there")]


@pytest.mark.parametrize("cut", split_points())
def test_server_frames_split_anywhere_arrive_whole_and_in_order(cut):
    conn, wire, rec = open_streaming()
    conn.dataReceived(STREAM[:cut])
    conn.dataReceived(STREAM[cut:])
    check(wire, rec)


def test_server_frames_fed_byte_by_byte_and_in_random_chunks():
    small = STREAM[:frame_starts()[-2]]  # without the 64 KiB frame: byte by byte
    conn, wire, rec = open_streaming()
    for i in range(len(small)):
        conn.dataReceived(small[i:i + 1])
    conn.dataReceived(STREAM[len(small):])
    check(wire, rec)
    rng = random.Random(11)
    for _ in range(20):
        conn, wire, rec = open_streaming()
        i = 0
        while i < len(STREAM):
            n = rng.choice((1, 2, 3, 7, 13, 100, 4000, 70000))
            conn.dataReceived(STREAM[i:i + n])
            i += n
        check(wire, rec)


def test_payload_is_handed_over_as_it_arrives_not_when_the_message_ends():
    conn, wire, rec = open_streaming()
    big = bytes(300_000)
    data = server(BINARY, big, fin=False)
    conn.dataReceived(data[:10 + 100_000])
    assert len(rec.current) == 100_000 and rec.messages == []
    conn.dataReceived(data[10 + 100_000:] + server(CONT, b"end"))
    assert rec.messages == [(True, big + b"end")]


def test_whole_messages_for_the_message_api_pings_in_between():
    conn, wire = relayed_connection()
    wire.transport.clear()
    got = []
    conn.dataReceived(server(BINARY, b"one ", fin=False) + server(PING, b"p") + server(CONT, b"two", fin=False))
    conn.dataReceived(server(PING, b"q") + server(CONT, b" three"))
    conn.dataReceived(server(TEXT, b"caf\xc3", fin=False) + server(CONT, b"\xa9"))
    conn.receive().addCallback(got.append)
    conn.receive().addCallback(got.append)
    assert got == [b"one two three", "caf\u00e9"]
    assert [(op, p) for _f, op, _m, p in parse_client_frames(wire.transport.value())] == [(PONG, b"p"), (PONG, b"q")]


def test_a_close_frame_after_data_in_the_same_read():
    conn, wire, rec = open_streaming()
    closed = []
    conn.on_close = lambda code, reason: closed.append((code, reason))
    conn.dataReceived(server(BINARY, b"last words") + server(CLOSE, struct.pack(">H", 1000) + b"bye"))
    assert rec.messages == [(True, b"last words")]
    assert [(op, p) for _f, op, _m, p in parse_client_frames(wire.transport.value())] == [
        (CLOSE, struct.pack(">H", 1000))]
    conn.connectionLost(Failure(error.ConnectionDone()))
    assert closed == [(1000, "bye")]


@pytest.mark.parametrize("bad, code", [
    (frame(BINARY, b"masked by the server"), 1002),  # servers must not mask (RFC 6455 5.1)
    (server(BINARY, b"rsv", rsv=4), 1002),
    (server(CONT, b"no message to continue"), 1002),
    (server(BINARY, b"a", fin=False) + server(TEXT, b"b"), 1002),  # a new message inside one
    (server(PING, b"fragmented", fin=False), 1002),
    (server(PING, b"p" * 126), 1002),  # control payloads are at most 125 bytes
    (server(0x3, b"reserved opcode"), 1002),
    (server(TEXT, b"\xff\xfe not utf-8"), 1007),
], ids=["masked", "rsv", "orphan-continuation", "interleaved", "fragmented-ping", "long-ping",
        "reserved-opcode", "bad-utf8"])  # fixed ids: a random mask must not differ between xdist workers
def test_a_server_that_breaks_the_protocol_gets_its_close_code(bad, code):
    conn, wire, rec = open_streaming()
    conn.dataReceived(server(BINARY, b"fine") + bad + server(BINARY, b"never delivered"))
    assert rec.messages == [(True, b"fine")]
    sent = parse_client_frames(wire.transport.value())
    assert [(op, p[:2]) for _f, op, _m, p in sent] == [(CLOSE, struct.pack(">H", code))]
    assert rec.current in (b"", bytearray(b"a"))  # nothing of the broken frame was handed over


def test_each_send_is_one_masked_frame_with_its_own_mask():
    conn, wire = relayed_connection()
    wire.transport.clear()
    payloads = [b"", b"x", bytes(125), bytes(126), random.Random(3).randbytes(300_000), b"end"]
    for p in payloads:
        conn.send(p)
    conn.send("t\u00e9xt")
    sent = parse_client_frames(wire.transport.value())
    assert [(fin, op, p) for fin, op, _m, p in sent] == [(True, BINARY, p) for p in payloads] + [
        (True, TEXT, "t\u00e9xt".encode("utf-8"))]
    masks = [m for _f, _op, m, _p in sent]
    assert len(set(masks)) == len(masks)


def test_the_tunnel_writes_relayed_payload_to_the_local_side_as_it_arrives():
    conn, wire = relayed_connection()
    t = Tunnel("-R test->127.0.0.1:1", conn)
    transport = connect_local(LocalSide(t))
    data = server(BINARY, b"A" * 200_000)
    conn.dataReceived(data[:50_000])
    assert len(transport.value()) > 40_000  # no waiting for the whole message
    conn.dataReceived(data[50_000:])
    assert transport.value() == b"A" * 200_000 and t.bytes_in == 200_000


def test_the_tunnel_sends_each_local_read_as_one_masked_frame():
    conn, wire = relayed_connection()
    t = Tunnel("-L test->echo", conn)
    local = LocalSide(t)
    connect_local(local)
    wire.transport.clear()
    chunk = random.Random(5).randbytes(256 * 1024)
    local.dataReceived(chunk)
    local.dataReceived(chunk[:1000])
    local.readConnectionLost()
    sent = parse_client_frames(wire.transport.value())
    assert [(fin, op, p) for fin, op, _m, p in sent] == [(True, BINARY, chunk), (True, BINARY, chunk[:1000]),
                                                          (True, BINARY, b"")]
    assert len({m for _f, _o, m, _p in sent}) == 3


def test_frames_in_the_same_read_as_the_handshake_answer_are_not_lost():
    # the bytes Autobahn read past the 101 (its ``data``) are taken over when the connection opens
    reactor = MemoryReactorClock()
    opened = []
    open_websocket(reactor, "ws://127.0.0.1:9090/$hc/echo").addCallback(opened.append)
    wire = Wire(reactor, 0)
    accept = base64.b64encode(hashlib.sha1((wire.headers["Sec-WebSocket-Key"] + GUID).encode()).digest())
    wire.proto.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                            + server(BINARY, b"early") + server(PING, b"p") + server(TEXT, b"too"))
    got = []
    opened[0].receive().addCallback(got.append)
    opened[0].receive().addCallback(got.append)
    assert got == [b"early", "too"]
    assert [(op, p) for _f, op, _m, p in parse_client_frames(wire.transport.value())] == [(PONG, b"p")]
