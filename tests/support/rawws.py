"""A raw, blocking WebSocket client over a plain socket, for tests that need exact control of
the bytes on the wire (invalid frames, floods, a client that never reads) and a strict parser
for what the relay sends back."""

import base64
import json
import os
import socket
import struct
import time
from urllib.parse import quote, urlsplit

from relayd.wire import sas
from tests.support.relay import ROOT_KEY


class ProtocolBroken(AssertionError):
    """What the relay sent is not a valid server-to-client WebSocket stream."""


def mask_bytes(key, payload, offset=0):
    out = bytearray(payload)
    for i in range(len(out)):
        out[i] ^= key[(i + offset) % 4]
    return bytes(out)


def frame(opcode, payload=b"", fin=True, rsv=0, masked=True, length=None, key=None):
    """One client frame (masked unless ``masked`` is False); ``length`` overrides the declared
    payload length (to declare more than is sent)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    m = 0x80 if masked else 0
    if n <= 125:
        head = struct.pack("!BB", b0, m | n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not masked:
        return head + payload
    key = key or os.urandom(4)
    return head + key + mask_bytes(key, payload)


def token(relay, path, rule="root", key=ROOT_KEY, ttl=3600):
    return sas.make_token("%s/%s" % (relay.http_url, path), rule, key, int(time.time()) + ttl)


class RawWS:
    """A client socket; ``start(url)`` sends the upgrade request, ``finish()`` reads the answer."""

    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.status = None

    def start(self, url, headers=None):
        parts = urlsplit(url)
        target = parts.path + ("?" + parts.query if parts.query else "")
        lines = ["GET %s HTTP/1.1" % target, "Host: %s" % parts.netloc, "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                 "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode()]
        lines += ["%s: %s" % kv for kv in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return self

    def finish(self, timeout=10):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._more(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ", 2)[1])
        return self.status

    def _more(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing more from the relay in time")
        self.sock.settimeout(left)
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the relay closed the TCP connection")
        self.buf += data

    def send(self, data):
        self.sock.sendall(data)

    def send_message(self, payload, binary=True):
        self.sock.sendall(frame(2 if binary else 1, payload))

    def read_raw(self, at_least, timeout=10):
        deadline = time.monotonic() + timeout
        while len(self.buf) < at_least:
            self._more(deadline)

    def recv_frame(self, timeout=10):
        """(fin, opcode, payload) of the next frame; strict about what a server may send."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < 2:
            self._more(deadline)
        b0, b1 = self.buf[0], self.buf[1]
        if b0 & 0x70:
            raise ProtocolBroken("RSV bits set in a frame from the relay: %r" % self.buf[:16])
        opcode = b0 & 0x0F
        if opcode not in (0, 1, 2, 8, 9, 10):
            raise ProtocolBroken("reserved opcode %d from the relay" % opcode)
        if b1 & 0x80:
            raise ProtocolBroken("masked frame from the relay")
        n, i = b1 & 0x7F, 2
        if n == 126:
            while len(self.buf) < 4:
                self._more(deadline)
            n, i = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            while len(self.buf) < 10:
                self._more(deadline)
            n, i = struct.unpack("!Q", self.buf[2:10])[0], 10
        if opcode >= 8 and (n > 125 or not b0 & 0x80):
            raise ProtocolBroken("bad control frame from the relay")
        if n > 1 << 30:
            raise ProtocolBroken("absurd frame length %d from the relay" % n)
        while len(self.buf) < i + n:
            self._more(deadline)
        payload, self.buf = self.buf[i:i + n], self.buf[i + n:]
        return bool(b0 & 0x80), opcode, payload

    def recv_message(self, timeout=10, on_control=None):
        """(opcode, payload) of the next whole data message; control frames go to on_control
        (a close frame raises :class:`Closed`)."""
        deadline = time.monotonic() + timeout
        parts, first = [], None
        while True:
            fin, opcode, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if opcode == 8:
                raise Closed(*close_code(payload))
            if opcode >= 8:
                if on_control:
                    on_control(opcode, payload)
                continue
            if first is None:
                if opcode == 0:
                    raise ProtocolBroken("continuation frame with no message started")
                first = opcode
            elif opcode != 0:
                raise ProtocolBroken("new message (opcode %d) inside a fragmented one" % opcode)
            parts.append(payload)
            if fin:
                return first, b"".join(parts)

    def recv_json(self, timeout=10):
        opcode, payload = self.recv_message(timeout)
        assert opcode == 1
        return json.loads(payload)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def close_code(payload):
    if len(payload) >= 2:
        return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")
    return None, ""


def hc_url(relay, path, action, **params):
    query = "sb-hc-action=" + action + "".join("&%s=%s" % (k.replace("_", "-"), quote(str(v), safe=""))
                                              for k, v in params.items())
    return "%s/$hc/%s?%s" % (relay.url, path, query)


def listen(relay, path="echo"):
    ctl = RawWS(relay.port).start(hc_url(relay, path, "listen"),
                                  {"ServiceBusAuthorization": token(relay, path)})
    assert ctl.finish() == 101, ctl.status
    return ctl


def pair(relay, path="echo", ctl=None):
    """(control channel, sender, listener's leg), all raw and open."""
    ctl = ctl or listen(relay, path)
    sender = RawWS(relay.port).start(hc_url(relay, path, "connect"),
                                     {"ServiceBusAuthorization": token(relay, path)})
    accept = ctl.recv_json()["accept"]
    leg = RawWS(relay.port).start(accept["address"])
    assert leg.finish() == 101, leg.status
    assert sender.finish() == 101, sender.status
    return ctl, sender, leg
