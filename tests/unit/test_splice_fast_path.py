"""The splice's fast path (relayd.splice.reader.FrameReader._whole_binary_frames): whole masked
binary frames read at a frame boundary, relayed to a zero-copy partner, are unmasked and given a
server header in place, so a small message costs one buffer and one send -- and everything else
the reader checks is unchanged.

In memory: the partner's fastio.DirectIO is :class:`RecordingIO` (records each write call and
its buffers); what it writes is compared byte for byte with what the frames must become."""

import os
import random

import pytest

from tests.support.wsframes import client_frame, server_frame
from tests.unit.test_splice_leg import feed, spliced


class RecordingIO:
    """Stands in for fastio.DirectIO: records each write call's buffers, writes their bytes."""

    def __init__(self, transport):
        self.transport = transport
        self.calls = []

    def write(self, *buffers):
        self.calls.append([(type(b), bytes(b)) for b in buffers])
        self.transport.write(b"".join(bytes(b) for b in buffers))


def zero_copy_pair():
    f, a, b = spliced()
    a._io, b._io = RecordingIO(a.transport), RecordingIO(b.transport)
    return a, b


@pytest.mark.parametrize("length", [0, 1, 64, 125, 126, 129, 4096, 65535])
def test_a_whole_binary_frame_goes_out_as_one_buffer_of_the_read(length):
    a, b = zero_copy_pair()
    payload = os.urandom(length)
    a.feed(memoryview(bytearray(client_frame(2, payload))))  # as fastio's reader hands it over
    # one write of ONE buffer: the read buffer itself (a view), header rewritten in place
    assert [[t for t, _ in call] for call in b._io.calls] == [[memoryview]]
    assert b.transport.value() == server_frame(2, payload)


def frames_mix(rnd, n):
    """(wire, expected to the partner, pongs back) for a random mix: whole binary messages of
    every length encoding up to 64 KiB, fragmented binary messages, text, pings."""
    wire, expected, pongs = [], [], []
    for _ in range(n):
        kind = rnd.choice(("binary", "binary", "fragmented", "text", "ping", "long"))
        if kind == "binary":
            p = rnd.randbytes(rnd.choice((0, 1, 5, 125, 126, 127, 300, 65535)))
            wire.append(client_frame(2, p))
            expected.append(server_frame(2, p))
        elif kind == "long":
            p = rnd.randbytes(65536 + rnd.randrange(100))  # 64-bit length: the general path
            wire.append(client_frame(2, p))
            expected.append(server_frame(2, p))
        elif kind == "fragmented":
            parts = [rnd.randbytes(rnd.choice((0, 3, 200))) for _ in range(rnd.randint(2, 4))]
            for i, p in enumerate(parts):
                op, fin = (2 if i == 0 else 0), i == len(parts) - 1
                wire.append(client_frame(op, p, fin))
                expected.append(server_frame(op, p, fin))
                if i == 0 and rnd.random() < 0.5:  # a ping between fragments
                    wire.append(client_frame(9, b"in"))
                    pongs.append(server_frame(10, b"in"))
        elif kind == "text":
            t = "héllo ✓".encode() * rnd.randint(0, 20)
            wire.append(client_frame(1, t))
            expected.append(server_frame(1, t))
        else:
            wire.append(client_frame(9, b"p"))
            pongs.append(server_frame(10, b"p"))
    return b"".join(wire), b"".join(expected), b"".join(pongs)


@pytest.mark.parametrize("seed", range(6))
def test_mixed_frames_in_one_read_and_in_pieces_come_out_1_to_1(seed):
    rnd = random.Random(seed)
    wire, expected, pongs = frames_mix(rnd, 60)
    a, b = zero_copy_pair()
    feed(a, wire)
    assert b.transport.value() == expected
    assert a.transport.value() == pongs
    # the same in random pieces (frames split across reads take the general path, the
    # whole ones after a boundary the fast one)
    a, b = zero_copy_pair()
    at = 0
    while at < len(wire):
        n = rnd.choice((1, 2, 6, 7, 100, 5000, 70000))
        feed(a, wire[at:at + n])
        at += n
    assert b.transport.value() == expected
    assert a.transport.value() == pongs


@pytest.mark.parametrize("bad, code", [
    (client_frame(2, b"x", rsv=1), 1002),  # RSV bit
    (client_frame(2, b"x", masked=False), 1002),  # unmasked
    (client_frame(0, b"x"), 1002),  # continuation with no message
    (client_frame(3, b"x"), 1002),  # reserved opcode
    (client_frame(1, b"\xff"), 1007),  # invalid UTF-8
], ids=["rsv", "unmasked", "orphan-continuation", "reserved-opcode", "bad-utf8"])
def test_an_invalid_frame_after_fast_frames_fails_the_leg_and_is_not_forwarded(bad, code):
    a, b = zero_copy_pair()
    good = [os.urandom(n) for n in (3, 200, 0)]
    feed(a, b"".join(client_frame(2, p) for p in good) + bad + client_frame(2, b"after"))
    forwarded = b"".join(server_frame(2, p) for p in good)
    out = b.transport.value()
    assert out[:len(forwarded)] == forwarded
    assert_one_close(out[len(forwarded):], code)  # and nothing of the bad frame or after it
    assert_one_close(a.transport.value(), code)  # the sender gets the same code


def assert_one_close(data, code):
    assert data[0] == 0x88 and len(data) == 2 + data[1], data
    assert data[2:4] == code.to_bytes(2, "big"), data


def test_a_new_message_inside_a_fragmented_one_is_refused():
    a, b = zero_copy_pair()
    feed(a, client_frame(2, b"first", fin=False) + client_frame(2, b"second"))
    first = server_frame(2, b"first", False)
    assert b.transport.value()[:len(first)] == first
    assert_one_close(b.transport.value()[len(first):], 1002)
    assert_one_close(a.transport.value(), 1002)


def test_frames_to_a_closing_partner_are_not_forwarded():
    a, b = zero_copy_pair()
    b.close(1000, "")
    b.transport.clear()
    feed(a, client_frame(2, b"late"))
    assert b.transport.value() == b""


@pytest.mark.parametrize("zero_copy", [True, False])
def test_a_long_text_frame_read_at_once_goes_out_in_pieces_of_at_most_leg_buffer(zero_copy):
    """However much one read holds (fastio reads up to 1 MiB), validated text is forwarded in
    frames of at most ``limits.leg_buffer`` bytes: what a leg holds of a text frame stays
    bounded by it."""
    leg_buffer = 4096
    _, a, b = spliced(leg_buffer)
    if zero_copy:
        a._io, b._io = RecordingIO(a.transport), RecordingIO(b.transport)
    text = ("é" * 10_000).encode()  # 20,000 bytes: 4 full pieces and a last one
    feed(a, client_frame(1, text))
    out = b.transport.value()
    expected = [(1, text[:leg_buffer], False)] + [
        (0, text[i:i + leg_buffer], i + leg_buffer >= len(text)) for i in range(leg_buffer, len(text), leg_buffer)]
    assert out == b"".join(server_frame(op, p, fin) for op, p, fin in expected)
