"""The frame relay's legs in memory (relayd.splice): frames fed in fragments at every split
point come out 1:1, byte for byte; control frames wait for a frame boundary; the close
handshake on a fake clock; a non-WebSocket partner (ILeg) gets each frame's pieces; held text
and its re-fragmentation; what came before the splice.  And, on the in-memory relay, the
Autobahn connection count that the legs give back when they end."""

import os
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from relayd import pipe
from relayd.splice import CLOSE_HANDSHAKE_TIMEOUT, WebSocketLeg
from relayd.splice.leg import PENDING_MAX
from tests.contract import harness
from tests.support.wsframes import client_frame, server_frame


class Transport(StringTransport):
    aborted = False

    def abortConnection(self):
        self.aborted = True
        super().abortConnection()

    def take(self):
        out = self.value()
        self.clear()
        return out


def factory(leg_buffer=256 * 1024):
    tracked = set()

    def track(path, leg):
        tracked.add(leg)
        return lambda: tracked.discard(leg)

    return SimpleNamespace(limits=SimpleNamespace(leg_buffer=leg_buffer), clock=Clock(),
                           switchboard=SimpleNamespace(track=track, tracked=tracked), countConnections=2)


def spliced(leg_buffer=256 * 1024):
    f = factory(leg_buffer)
    a, b = WebSocketLeg(f, Transport(), "e"), WebSocketLeg(f, Transport(), "e")
    for leg in (a, b):
        leg.start_data_leg()
    pipe.splice(a, b)
    return f, a, b


def feed(leg, data):
    leg.dataReceived(bytes(data))


# A stream with every kind of frame: length encodings, fragments, empty frames, text with
# multi-byte characters split across frames, and pings between and inside a message.
STREAM = [
    (2, b"", True), (2, os.urandom(125), True), (2, os.urandom(126), True),
    (1, "ça".encode()[:2], False), (9, b"ping!", True), (0, "ça".encode()[2:], True),
    (2, b"x", False), (0, b"", False), (0, os.urandom(200), True),
    (1, b"", True),
]


def test_frames_fed_at_every_split_point_come_out_1_to_1():
    wire = b"".join(client_frame(op, p, fin) for op, p, fin in STREAM)
    expected = b"".join(server_frame(op, p, fin) for op, p, fin in STREAM if op < 8)
    pong = server_frame(10, b"ping!")
    for cut in range(len(wire) + 1):
        _, a, b = spliced()
        feed(a, wire[:cut])
        feed(a, wire[cut:])
        assert b.transport.value() == expected, cut
        assert a.transport.value() == pong, cut
    _, a, b = spliced()
    for i in range(len(wire)):  # one byte at a time
        feed(a, wire[i:i + 1])
    assert b.transport.value() == expected
    assert a.transport.value() == pong


@pytest.mark.parametrize("length", [65535, 65536, (1 << 20) + 5])
def test_long_frames_in_pieces(length):
    payload = os.urandom(length)
    wire = client_frame(2, payload)
    for size in (1000, 65536, 7777):
        _, a, b = spliced()
        for i in range(0, len(wire), size):
            feed(a, wire[i:i + size])
        assert b.transport.value() == server_frame(2, payload)


def test_ping_inside_a_forwarded_frame_is_answered_after_it():
    _, a, b = spliced()
    payload = os.urandom(5000)
    wire = client_frame(2, payload)
    feed(a, wire[:3000])  # b's output is now inside a frame
    feed(b, client_frame(9, b"one"))
    feed(b, client_frame(9, b"two"))  # only the latest ping is answered
    assert b.transport.value() == server_frame(2, payload)[:3000 - 4]
    feed(a, wire[3000:])
    assert b.transport.value() == server_frame(2, payload) + server_frame(10, b"two")


def test_close_inside_a_frame_waits_for_its_end_then_closes():
    f, a, b = spliced()
    payload = os.urandom(5000)
    wire = client_frame(2, payload)
    feed(a, wire[:3000])
    feed(b, client_frame(8, (1000).to_bytes(2, "big") + b"bye"))  # b's client closes
    # a is told at once with b's code and reason; b's answer waits for the frame's end
    assert a.transport.value() == server_frame(8, (1000).to_bytes(2, "big") + b"bye")
    assert not b.transport.disconnecting
    feed(a, wire[3000:])  # a's client finishes its frame...
    assert b.transport.value() == server_frame(2, payload) + server_frame(8, (1000).to_bytes(2, "big"))
    assert b.transport.disconnecting  # the server closes the TCP connection after the close
    feed(a, client_frame(8, (1000).to_bytes(2, "big")))  # ...and answers the close
    assert a.transport.disconnecting and not a.transport.aborted


def test_partner_gone_inside_a_frame_drops_the_leg():
    _, a, b = spliced()
    feed(a, client_frame(2, os.urandom(5000))[:3000])
    a.connectionLost(None)
    assert b.transport.aborted
    assert b"\x88" not in b.transport.value()[4:][2996:]  # nothing after the partial frame


def test_partner_gone_inside_a_frame_drops_a_closing_leg_too():
    _, a, b = spliced()
    feed(a, client_frame(2, os.urandom(5000))[:3000])
    b.close(1001, "the entity was deleted")  # waits for the frame's end...
    assert not b.transport.aborted
    a.connectionLost(None)  # ...which can no longer come
    assert b.transport.aborted


def test_close_handshake_deadline():
    f, a, b = spliced()
    a.close(1001, "the entity was deleted")
    assert a.transport.value() == server_frame(8, (1001).to_bytes(2, "big") + b"the entity was deleted")
    f.clock.advance(CLOSE_HANDSHAKE_TIMEOUT - 0.1)
    assert not a.transport.aborted
    f.clock.advance(0.2)
    assert a.transport.aborted


def test_close_codes_that_may_not_be_sent_become_1001():
    for code, sent in ((1006, 1001), (1015, 1001), (2999, 1001), (4000, 4000), (None, None), (1005, None)):
        _, a, _b = spliced()
        a.close(code, "why")
        payload = b"" if sent is None else sent.to_bytes(2, "big") + b"why"
        assert a.transport.value() == server_frame(8, payload)


def test_frame_from_a_closing_leg_is_not_forwarded():
    _, a, b = spliced()
    a.close(1000, "")
    a.transport.clear()
    feed(a, client_frame(2, b"late"))
    assert b.transport.value() == b""


class Recorder:
    """A non-WebSocket partner (what the TCP and HTTP doors are to a leg)."""

    def __init__(self):
        self.calls = []
        self.transport = StringTransport()

    def begin_message(self, is_binary):
        self.calls.append(("begin", is_binary))

    def frame_begin(self, length):
        self.calls.append(("frame", length))

    def frame_data(self, data):
        assert type(data) is bytes  # never a view of a read buffer
        self.calls.append(("data", data))

    def end_message(self):
        self.calls.append(("end",))

    def close(self, code, reason):
        self.calls.append(("close", code))


def test_ileg_partner_gets_each_frame_in_pieces():
    f = factory(leg_buffer=4096)
    a = WebSocketLeg(f, Transport(), "e")
    rec = Recorder()
    a.partner = rec
    a.start_data_leg()
    wire = client_frame(2, b"abc", fin=False) + client_frame(0, b"def") + client_frame(2, b"")
    wire += client_frame(1, "é".encode()[:1], fin=False) + client_frame(0, "é".encode()[1:])
    feed(a, wire[:5])
    feed(a, wire[5:])
    assert rec.calls == [
        ("begin", True), ("frame", 3), ("data", b"abc"), ("frame", 3), ("data", b"def"), ("end",),
        ("begin", True), ("frame", 0), ("end",),
        ("begin", False), ("frame", 1), ("data", b"\xc3"), ("frame", 1), ("data", b"\xa9"), ("end",),
    ]
    feed(a, client_frame(8, (1000).to_bytes(2, "big")))
    assert rec.calls[-1] == ("close", 1000)


def test_long_text_is_forwarded_in_validated_pieces_and_invalid_text_never():
    _, a, b = spliced(leg_buffer=16)
    text = ("é" * 20).encode()  # 40 bytes arriving in reads of 6: held at most 16 at a time
    wire = client_frame(1, text)
    for i in range(0, len(wire), 6):
        feed(a, wire[i:i + 6])
    out = b.transport.take()
    frames = []
    while out:
        n = out[1]
        frames.append((out[0], out[2:2 + n]))
        out = out[2 + n:]
    assert [h for h, _ in frames] == [0x01, 0x00, 0x80]
    assert all(len(p) <= 16 + 6 for _, p in frames)
    assert b"".join(p for _, p in frames) == text
    # invalid UTF-8 after 30 valid bytes: the valid pieces before it go, nothing after
    bad = b"a" * 30 + b"\xff" + b"b" * 20
    wire = client_frame(1, bad)
    for i in range(0, len(wire), 6):
        feed(a, wire[i:i + 6])
    out = b.transport.take()
    assert b"\xff" not in out and b"b" not in out.split(b"\x88")[0]
    assert out.endswith(server_frame(8, (1007).to_bytes(2, "big") + b"the other side of the relayed "
                                     b"connection was closed: invalid UTF-8 in a text message"))
    assert a.transport.value().startswith(server_frame(8, (1007).to_bytes(2, "big") + b"invalid UTF-8 in a text message"))


def test_what_came_before_the_splice_is_relayed_after_it():
    f = factory()
    a, b = WebSocketLeg(f, Transport(), "e"), WebSocketLeg(f, Transport(), "e")
    wire = client_frame(2, b"early") + client_frame(1, b"bird")
    a.hold_input(wire[:9])
    feed(a, wire[9:])  # still arriving: kept too
    a.start_data_leg()
    b.start_data_leg()
    pipe.splice(a, b)
    assert b.transport.value() == b""
    assert a.transport.producerState == "paused"  # until what was kept is relayed
    f.clock.advance(0)
    assert b.transport.value() == server_frame(2, b"early") + server_frame(1, b"bird")
    assert a.transport.producerState == "producing"


def test_what_is_kept_before_the_splice_is_bounded():
    f = factory()
    a = WebSocketLeg(f, Transport(), "e")
    a.hold_input(b"")
    feed(a, b"\x82" * PENDING_MAX)
    assert a.transport.producerState == "producing"
    feed(a, b"\x82")
    assert a.transport.producerState == "paused"


def test_entity_delete_and_loss_release_the_leg():
    f, a, b = spliced()
    assert f.switchboard.tracked == {a, b}
    a.connectionLost(None)
    assert f.switchboard.tracked == {b}
    assert b.transport.value() == server_frame(8, (1001).to_bytes(2, "big") +
                                               b"the other side of the relayed connection went away")
    assert a.partner is None and b.partner is None
    assert f.countConnections == 1


def test_relayed_connections_give_back_autobahns_connection_count(tmp_path):
    """The legs replace Autobahn's protocol, whose connectionLost no longer runs: they give back
    ``WebSocketServerFactory.countConnections`` (Autobahn's maxConnections check reads it)."""
    relay = harness.MemoryRelay(tmp_path)
    hc_factory = relay.factories[80].websocket
    control = harness.listen(relay)
    assert hc_factory.countConnections == 1
    sender = harness.websocket(relay, "ws://%s/$hc/%s?sb-hc-action=connect" % (harness.HOST, harness.ENTITY))
    leg = harness.accept(relay, control.offers[-1])
    relay.pump()
    assert sender.opened and leg.opened
    sender.sendMessage(b"through", isBinary=True)
    relay.pump()
    assert leg.messages == [(b"through", True)]
    assert hc_factory.countConnections == 3
    sender.sendClose(1000)
    relay.advance(CLOSE_HANDSHAKE_TIMEOUT + 1)
    assert sender.closed and leg.closed
    assert hc_factory.countConnections == 1
    relay.stop()


class RecordingIO:
    """Stands in for fastio.DirectIO on a leg's transport: records each write call."""

    def __init__(self, transport):
        self.transport = transport
        self.calls = []

    def write(self, *buffers):
        data = b"".join(bytes(b) for b in buffers)
        self.calls.append(data)
        self.transport.write(data)


def test_what_one_read_forwards_is_written_once_and_before_a_close():
    _, a, b = spliced()
    b._io = RecordingIO(b.transport)
    frames = [(2, os.urandom(n), True) for n in (0, 3, 125, 126, 40)] * 10
    wire = b"".join(client_frame(op, p, fin) for op, p, fin in frames)
    feed(a, wire)
    expected = b"".join(server_frame(op, p, fin) for op, p, fin in frames)
    assert b._io.calls == [expected]  # one write for the whole read
    # a close frame in the same read as data: the data, then b's close, then TCP close
    b._io.calls.clear()
    b.transport.clear()
    feed(a, client_frame(2, b"last") + client_frame(8, (1000).to_bytes(2, "big")))
    assert b.transport.value() == server_frame(2, b"last") + server_frame(8, (1000).to_bytes(2, "big"))
    assert len(b._io.calls) == 1
