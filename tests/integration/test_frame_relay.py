"""The frame relay (relayd.splice, issue 10 item 1) byte for byte, through real loopback sockets
and a ``twistd -n relayd`` process: a sender and the listener's accept leg, raw.

* Frames are forwarded 1:1: the receiver reads exactly the bytes of the frames the sender sent,
  unmasked (same opcodes, FIN bits and boundaries; no extra empty FIN frame), at every length
  encoding boundary, in both directions.
* Pings during a 16 MiB message, from either side and in either direction: the pong comes (after
  the frame in flight, never inside it) and the message is intact.
* Close during a frame: the close waits for the frame's end; a connection dropped mid-frame
  leaves the other side's frame unfinished, so that side is dropped (no close frame inside it).
* Invalid frames from either side: the right close code on both legs, nothing of the frame
  forwarded.
"""

import os
import random
import threading
import time

import pytest

from tests.support.rawws import pair
from tests.support.relay import RelayProcess, write_config
from tests.support.wsframes import FrameSocket, client_frame, header, mask, server_frame

MiB = 1 << 20
BOUNDARIES = [0, 1, 125, 126, 127, 65535, 65536, 65537, MiB + 3]


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frame-relay")
    proc = RelayProcess(tmp, write_config(tmp))
    yield proc
    proc.stop()


@pytest.fixture
def legs(relay):
    """(sender, listener's leg) as FrameSockets, spliced by the relay."""
    ctl, sender, leg = pair(relay)
    a, b = FrameSocket(sender), FrameSocket(leg)
    yield a, b
    for s in (ctl, a, b):
        s.close()


def ends(legs, direction):
    sender, leg = legs
    return (sender, leg) if direction == "sender-to-leg" else (leg, sender)


DIRECTIONS = ["sender-to-leg", "leg-to-sender"]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_every_length_boundary_is_relayed_byte_for_byte(legs, direction):
    src, dst = ends(legs, direction)
    expected = b""
    for n in BOUNDARIES:
        payload = os.urandom(n)
        src.send_frame(2, payload)
        expected += server_frame(2, payload)
    text = "ünïcödé ✓".encode() * 20
    src.send_frame(1, text)
    expected += server_frame(1, text)
    assert dst.read_exactly(len(expected)) == expected
    # nothing more (no extra empty FIN frames): the next bytes are the pong to a ping
    dst.send_frame(9, b"probe")
    assert dst.read_exactly(7) == server_frame(10, b"probe")


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_fragments_and_text_keep_their_frames(legs, direction):
    src, dst = ends(legs, direction)
    frames = [
        (1, "caf".encode() + b"\xc3", False), (0, b"", False), (0, b"\xa9 \xe2\x82", False), (0, b"\xac!", True),
        (2, b"", False), (0, os.urandom(70000), False), (0, b"", False), (0, os.urandom(3), True),
        (1, b"", True),
        (2, b"", True),
    ]
    expected = b""
    for opcode, payload, fin in frames:
        src.send_frame(opcode, payload, fin)
        expected += server_frame(opcode, payload, fin)
    assert dst.read_exactly(len(expected)) == expected
    dst.send_frame(9, b"end")
    assert dst.read_exactly(5) == server_frame(10, b"end")


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_many_small_frames_in_one_read_then_a_close(legs, direction):
    """What one read forwards goes out in one write (relayd batches it): order, boundaries and
    the close after the last frame must be exactly as sent."""
    src, dst = ends(legs, direction)
    rnd = random.Random(10)
    wire, expected, pongs = b"", b"", b""
    for i in range(2000):
        payload = rnd.randbytes(rnd.choice((0, 1, 5, 125, 126, 300)))
        if i % 97 == 0:
            wire += client_frame(9, payload[:125])
            pongs += server_frame(10, payload[:125])
            continue
        first, last = (2, b"") if i % 3 else (1, "é".encode())
        if first == 1:
            payload = payload.hex().encode()[:len(payload)]
        wire += client_frame(first, payload, fin=False) + client_frame(0, last)
        expected += server_frame(first, payload, False) + server_frame(0, last)
    wire += client_frame(8, (4001).to_bytes(2, "big") + b"done")
    src.send(wire)
    assert dst.read_exactly(len(expected)) == expected
    assert dst.recv_frame() == (True, 8, (4001).to_bytes(2, "big") + b"done")
    assert src.read_exactly(len(pongs)) == pongs
    assert src.recv_frame() == (True, 8, (4001).to_bytes(2, "big"))


def test_long_text_frame_is_refragmented_into_validated_pieces(legs):
    sender, leg = legs
    text = ("é" * 300_000).encode()  # 600,000 bytes: more than the relay holds (leg_buffer)
    sender.send_frame(1, text)
    pieces = []
    while True:
        fin, opcode, payload = leg.recv_frame()
        pieces.append((opcode, payload))
        if fin:
            break
    assert pieces[0][0] == 1 and all(op == 0 for op, _ in pieces[1:])
    assert len(pieces) > 1
    assert b"".join(p for _, p in pieces) == text


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_pings_from_both_sides_during_a_16_mib_message(legs, direction):
    src, dst = ends(legs, direction)
    body = os.urandom(16 * MiB)
    key = os.urandom(4)
    # one 16 MiB frame; the receiver pings while it is in flight
    masked = mask(key, body)
    pinged = threading.Event()
    thread = src.send_in_thread(header(2, len(body), key=key) + masked[:8 * MiB], pinged, masked[8 * MiB:])
    got = dst.read_exactly(10 + 1000)  # the relay is forwarding the frame
    dst.send_frame(9, b"receiver ping")
    pinged.set()
    rest = dst.read_exactly(10 + len(body) - len(got))
    thread.join(30)
    assert got + rest == server_frame(2, body), "the 16 MiB frame must arrive whole, nothing inside it"
    assert dst.recv_frame() == (True, 10, b"receiver ping")
    # a fragmented 16 MiB message; the sender pings between its fragments
    quarter = 4 * MiB
    parts = [client_frame(2 if i == 0 else 0, body[i * quarter:(i + 1) * quarter], fin=(i == 3))
             for i in range(4)]
    thread = src.send_in_thread(parts[0], parts[1], client_frame(9, b"sender ping"), parts[2], parts[3])
    expected = b"".join(server_frame(2 if i == 0 else 0, body[i * quarter:(i + 1) * quarter], i == 3)
                        for i in range(4))
    assert dst.read_exactly(len(expected), timeout=30) == expected
    thread.join(30)
    assert src.recv_frame() == (True, 10, b"sender ping")


def test_close_during_a_frame_waits_for_its_end(legs):
    sender, leg = legs
    body = os.urandom(300_000)
    frame = client_frame(2, body)
    sender.send(frame[:100_000])
    first = leg.read_exactly(1000)  # the relay is forwarding the frame
    leg.send_frame(8, (1000).to_bytes(2, "big") + b"done")  # the listener closes mid-frame
    # the sender is closed at once with the same code (its own output is at a boundary)
    assert sender.recv_frame() == (True, 8, (1000).to_bytes(2, "big") + b"done")
    sender.send(frame[100_000:])  # it finishes the frame it was sending, then answers
    sender.send_frame(8, (1000).to_bytes(2, "big"))
    leg.buf[:0] = first
    frames = leg.frames_until_close()
    assert frames[0] == (True, 2, body), "the frame whole, then the close"
    assert frames[-1] == (True, 8, (1000).to_bytes(2, "big"))
    assert leg.wait_reset() == b""  # then the relay closes the TCP connection


def test_sender_dropped_mid_frame_drops_the_leg_without_a_close_frame(legs):
    sender, leg = legs
    body = os.urandom(200_000)
    sender.send(client_frame(2, body)[:50_000])
    start = time.monotonic()
    got = leg.read_exactly(1000)
    sender.abort()
    got += leg.wait_reset(timeout=5)
    assert time.monotonic() - start < 4
    # exactly the part of the frame that was sent, and nothing after it: a close frame cannot
    # be written inside a frame, so the connection is ended instead
    assert got == server_frame(2, body)[:len(got)]
    assert len(got) < len(server_frame(2, body))


BAD = b"BAD-FRAME-PAYLOAD"

INVALID = {
    "rsv1": ([client_frame(2, BAD, rsv=4)], 1002),
    "reserved-opcode": ([client_frame(5, BAD)], 1002),
    "reserved-control-opcode": ([client_frame(0xC, BAD)], 1002),
    "unmasked": ([client_frame(2, BAD, masked=False)], 1002),
    "orphan-continuation": ([client_frame(0, BAD)], 1002),
    "new-message-inside-one": ([client_frame(2, b"a", fin=False), client_frame(2, BAD)], 1002),
    "long-ping": ([client_frame(9, BAD * 8)], 1002),
    "fragmented-ping": ([client_frame(9, BAD, fin=False)], 1002),
    "close-1-byte": ([client_frame(8, b"\x03")], 1002),
    "close-code-1005": ([client_frame(8, (1005).to_bytes(2, "big"))], 1002),
    "close-reason-not-utf8": ([client_frame(8, (1000).to_bytes(2, "big") + b"\xff")], 1007),
    "utf8-invalid-split-across-frames": ([client_frame(1, b"ok \xe2\x82", fin=False),
                                          client_frame(0, b"\x28" + BAD)], 1007),
    "utf8-cut-at-message-end": ([client_frame(1, b"ok \xf0\x9f", fin=False),
                                 client_frame(0, b"\x98", fin=True)], 1007),
}

# valid frames that come before the invalid one and are forwarded as they are
FORWARDED = {
    "new-message-inside-one": [(False, 2, b"a")],
    "utf8-invalid-split-across-frames": [(False, 1, b"ok \xe2\x82")],
    "utf8-cut-at-message-end": [(False, 1, b"ok \xf0\x9f")],
}


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_frames_from_either_side(relay, legs, case, direction):
    src, dst = ends(legs, direction)
    frames, code = INVALID[case]
    for f in frames:
        src.send(f)
    got = dst.frames_until_close(timeout=5)
    data = [f for f in got if f[1] in (0, 1, 2)]
    assert not any(BAD in p for _, _, p in data), got
    assert not any(fin for fin, _, _ in data), "no complete message may come out of it"
    assert data == FORWARDED.get(case, []), "only the valid frames before the invalid one"
    assert int.from_bytes(got[-1][2][:2], "big") == code
    own = src.frames_until_close(timeout=5)
    assert int.from_bytes(own[-1][2][:2], "big") == code
    assert "Traceback" not in relay.log_text()
