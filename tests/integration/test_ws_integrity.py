"""Stream integrity on the HC WebSocket door, checked byte for byte with raw sockets against a
``twistd -n relayd`` process (issue 8, items 6-8).

* Pongs and close frames the relay writes to a leg never land inside a frame it is relaying: they
  wait for its end, and a leg left inside a frame by a sender that died is dropped.
* A frame the relay rejects (reserved opcode, unmasked, RSV bits, orphan or interleaved
  continuation, invalid UTF-8) is never forwarded; the other side is closed promptly with the
  same code.
* An empty chunked request body through the HTTP door reaches the service as an empty body.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.support.rawws import Closed, ProtocolBroken, frame, mask_bytes, pair


@pytest.fixture
def relay(shared_relay):
    """The worker's shared relay: these tests leave it as they found it."""
    return shared_relay


def collect_until_close(leg, timeout):
    """Every frame up to and including the close frame, strictly parsed."""
    frames = []
    deadline = time.monotonic() + timeout
    while True:
        fin, opcode, payload = leg.recv_frame(max(0.01, deadline - time.monotonic()))
        frames.append((fin, opcode, payload))
        if opcode == 8:
            return frames


def test_pong_never_lands_inside_a_relayed_frame(relay):
    ctl, sender, leg = pair(relay)
    try:
        body = os.urandom(200_000)
        key = os.urandom(4)
        masked = mask_bytes(key, body)
        # declare one 200,000-byte frame and send its first 20,000 bytes
        sender.send(frame(2, b"", length=len(body), key=key) + masked[:20_000])
        leg.read_raw(20_000)  # the relay is forwarding the frame (1:1, issue 10)
        leg.send(frame(9, b"P" * 100))  # the listener's client pings meanwhile
        sender.send(masked[20_000:])
        frames = [leg.recv_frame(), leg.recv_frame()]
        # the pong waits for the end of the frame in flight
        assert frames == [(True, 2, body), (True, 10, b"P" * 100)]
    finally:
        for s in (ctl, sender, leg):
            s.close()


def test_sender_dying_mid_frame_drops_the_leg_without_a_close_frame(relay):
    ctl, sender, leg = pair(relay)
    try:
        body = os.urandom(200_000)
        key = os.urandom(4)
        sender.send(frame(2, b"", length=len(body), key=key) + mask_bytes(key, body)[:20_000])
        leg.read_raw(20_000)
        start = time.monotonic()
        sender.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sender.close()  # RST mid-frame
        # the leg is inside a frame it cannot finish: no close frame can go there (it would be
        # read as payload), so the relay ends its connection; it never sees a complete frame
        with pytest.raises((ConnectionError, TimeoutError)) as e:
            leg.recv_frame(timeout=4)
        assert not isinstance(e.value, TimeoutError)
        assert time.monotonic() - start < 3
        assert leg.buf[:4] == b"\x82\x7f\x00\x00" and leg.buf[10:] == body[:len(leg.buf) - 10]
    finally:
        ctl.close()
        leg.close()


BAD = b"BAD-FRAME-PAYLOAD"


class _Pause:
    """Between two sends: let the relay read (and act on) what came before."""


def _split_frame(opcode, payload, at):
    whole = frame(opcode, payload)
    head = len(whole) - len(payload)
    return [whole[:head + at], _Pause, whole[head + at:]]

REJECTED = {
    "reserved-opcode": ([frame(3, BAD)], 1002),
    "reserved-control-opcode": ([frame(0xB, BAD)], 1002),
    "unmasked": ([frame(2, BAD, masked=False)], 1002),
    "rsv-bits": ([frame(2, BAD, rsv=2)], 1002),
    "orphan-continuation": ([frame(0, BAD)], 1002),
    "interleaved-data-frame": ([frame(1, b"first half ", fin=False), frame(2, BAD)], 1002),
    "invalid-utf8": ([frame(1, b"text \xff\xfe " + BAD)], 1007),
    # valid UTF-8 right up to the cut at the end of the message
    "utf8-cut-at-end": ([frame(1, b"ok " + BAD + b"\xe2\x82")], 1007),
    # one text frame whose first part (a read of its own) is valid and second part is not
    "invalid-utf8-in-a-later-read": (_split_frame(1, BAD * 100 + b"\xff" + BAD, 1000), 1007),
    "2^63-length": ([frame(2, BAD, length=1 << 63)[:10] + b"\x00" * 4 + BAD], 1002),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejected_frame_is_not_forwarded_and_peer_closed_promptly(relay, case):
    frames, code = REJECTED[case]
    ctl, sender, leg = pair(relay)
    try:
        start = time.monotonic()
        for f in frames:
            if f is _Pause:
                time.sleep(0.2)  # a sleep only to split the reads; nothing waits on it
                continue
            sender.send(f)
        got = collect_until_close(leg, timeout=4)
        elapsed = time.monotonic() - start
        assert elapsed < 2, "the listener's leg heard nothing for %.1f s" % elapsed
        data = [f for f in got if f[1] in (0, 1, 2)]
        assert not any(BAD in p for _, _, p in data), got
        assert not any(fin for fin, _, _ in data), "no complete message may come out of it"
        assert int.from_bytes(got[-1][2][:2], "big") == code
        # and the sender got the same code
        with pytest.raises(Closed) as e:
            sender.recv_message(timeout=4)
        assert e.value.code == code
    finally:
        for s in (ctl, sender, leg):
            s.close()
    assert "Traceback" not in relay.log_text()


def test_relayed_messages_keep_their_types_and_bytes(relay):
    """The re-fragmented stream: empty, text, and a large binary message, in order."""
    ctl, sender, leg = pair(relay)
    try:
        big = os.urandom(3_000_000)
        sender.send(frame(2, b""))
        sender.send(frame(1, "héllo".encode()))
        sender.send(frame(2, big[:1000], fin=False) + frame(0, big[1000:]))
        assert leg.recv_message() == (2, b"")
        assert leg.recv_message() == (1, "héllo".encode())
        assert leg.recv_message() == (2, big)
        # text split inside a code point across frames, and a text frame longer than the
        # relay holds at once (limits.leg_buffer, 256 KiB)
        sender.send(frame(1, "caf".encode() + b"\xc3", fin=False) + frame(0, b"\xa9!"))
        assert leg.recv_message() == (1, "café!".encode())
        long_text = ("é" * 200_000).encode()
        sender.send(frame(1, long_text))
        assert leg.recv_message() == (1, long_text)
        leg.send(frame(1, b""))
        assert sender.recv_message() == (1, b"")
    finally:
        for s in (ctl, sender, leg):
            s.close()


def test_empty_chunked_body_reaches_the_service(relay, tmp_path):
    from tests.support.relay import ROOT_KEY
    from tests.support.relay import Bridge

    backend = subprocess.Popen([sys.executable, "-m", "tests.support.backend"], stdout=subprocess.PIPE, text=True)
    bridge = None
    try:
        port = int(backend.stdout.readline().split()[1])
        cs = "Endpoint=sb://127.0.0.1:%d/;SharedAccessKeyName=root;SharedAccessKey=%s" % (relay.port, ROOT_KEY)
        bridge = Bridge(tmp_path, relay, "-H", "open:http://127.0.0.1:%d" % port, connection_string=cs)
        bridge.wait("-H open.*online")
        with socket.create_connection(("127.0.0.1", relay.port), timeout=15) as s:
            s.sendall(b"POST /open/sha HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nTransfer-Encoding: chunked\r\n"
                      b"Connection: close\r\n\r\n0\r\n\r\n" % relay.port)
            answer = b""
            while True:
                data = s.recv(65536)
                if not data:
                    break
                answer += data
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer[:300]
        if b"chunked" in head.lower():
            size, _, rest = body.partition(b"\r\n")
            body = rest[:int(size, 16)]
        assert json.loads(body) == {"length": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    finally:
        if bridge is not None:
            bridge.stop()
        backend.terminate()
        backend.wait()
