"""Frame-exact raw WebSocket clients for the frame relay tests (tests/integration/test_frame_relay*.py).

:class:`FrameSocket` wraps a socket that completed its handshake (from
:func:`tests.support.rawws.pair`): it sends frames exactly as given (any opcode, RSV, FIN,
masked or not, declared length), fast enough for 16 MiB payloads, and reads what the relay sends
as raw bytes or as strictly parsed frames.  Its masking is its own (not the relay's code)."""

import os
import socket
import struct
import threading
import time

from tests.support.rawws import RawWS, frame


def mask(key, payload, offset=0):
    """``payload`` XOR the 4-byte ``key`` rotated by ``offset`` (independent of relayd.accel)."""
    n = len(payload)
    if not n:
        return b""
    shift = offset % 4
    rotated = key[shift:] + key[:shift]
    stream = (rotated * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def header(opcode, length, fin=True, rsv=0, key=None):
    """A frame header as a client (``key``: 4 bytes) or a server (``key`` None) sends it."""
    return frame(opcode, b"", fin=fin, rsv=rsv, masked=key is not None, length=length, key=key)


def client_frame(opcode, payload=b"", fin=True, rsv=0, masked=True, length=None):
    key = os.urandom(4) if masked else None
    head = header(opcode, len(payload) if length is None else length, fin, rsv, key)
    return head + (mask(key, payload) if masked else payload)


def server_frame(opcode, payload=b"", fin=True):
    """The bytes a server (the relay) sends for this frame: unmasked, minimal length."""
    return header(opcode, len(payload), fin) + payload


class FrameSocket(RawWS):
    """A :class:`RawWS` past its handshake, taken over (socket and buffered bytes); frames are
    read with ``recv_frame`` (strict, from RawWS).  EOF or a reset raise ConnectionError."""

    def __init__(self, raw):
        self.sock = raw.sock
        self.buf = bytearray(raw.buf)
        self.status = raw.status
        raw.buf = b""

    def send_frame(self, opcode, payload=b"", fin=True, **kw):
        self.sock.sendall(client_frame(opcode, payload, fin, **kw))

    def send_in_thread(self, *chunks):
        """Send ``chunks`` in order from a thread (a large frame the relay only takes as the other
        side reads); a ``threading.Event`` among them is waited for (up to 20 s) before going on.
        Returns the thread (join it)."""
        def run():
            for chunk in chunks:
                if isinstance(chunk, threading.Event):
                    chunk.wait(20)
                else:
                    self.sock.sendall(chunk)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def read_exactly(self, n, timeout=20):
        self.read_raw(n, timeout)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def frames_until_close(self, timeout=20):
        """Every frame up to and including a close frame."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            frames.append(f)
            if f[1] == 8:
                return frames

    def wait_reset(self, timeout=10):
        """Read (and return) whatever comes until the relay ends the connection."""
        got = bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._more(deadline)
                got += self.buf
                self.buf.clear()
        except ConnectionError:
            got += self.buf
            self.buf.clear()
            return bytes(got)

    def abort(self):
        """Close with a TCP reset (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()
