"""RFC 6455 frames: header encode/parse, payload masking, close payloads.  Pure: no Twisted, no
Autobahn.

The relay's data legs forward WebSocket frames themselves after the handshake (issue 10 item 1);
this module is the codec they (and the SDK's data connections) share.  It never copies a
payload: :func:`parse_header` reads only the header, :func:`xor_mask` unmasks in place.
:mod:`relayd.accel` has the compiled masker with this module's :func:`xor_mask` as its fallback.

No extension is ever negotiated with relayd, so every RSV bit must be 0.  Masking requirements
(client frames masked, server frames not) are the caller's check: it knows its role.
"""

import struct
from collections import namedtuple

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

DATA_OPCODES = frozenset((CONTINUATION, TEXT, BINARY))
CONTROL_OPCODES = frozenset((CLOSE, PING, PONG))

MAX_CONTROL_PAYLOAD = 125          # RFC 6455 5.5
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2
MAX_HEADER = 14                    # 2 + 8 (64-bit length) + 4 (mask)

# Close codes (RFC 6455 7.4.1) this module names.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

# Codes a close frame may carry (RFC 6455 7.4.1/7.4.2 and the IANA registry, as Autobahn accepts
# them): 1004-1006 and 1015 are reserved or "MUST NOT be sent", 1014 and 1016-2999 unassigned.
SENDABLE_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013))
APPLICATION_CLOSE_CODES = range(3000, 5000)

_PACK_SHORT = struct.Struct("!BB").pack
_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack

Header = namedtuple("Header", "fin rsv opcode masked length mask")
Header.__doc__ = """A parsed frame header: ``fin`` bool, ``rsv`` int (bits 4-6 as 0..7),
``opcode`` int, ``masked`` bool, ``length`` payload length, ``mask`` 4 bytes or None."""


class FrameError(Exception):
    """A frame breaks RFC 6455; ``code`` is the close code to fail the connection with."""

    def __init__(self, code, reason):
        Exception.__init__(self, code, reason)
        self.code = code
        self.reason = reason

    def __str__(self):
        return "%d %s" % (self.code, self.reason)


def is_control(opcode):
    return opcode >= CLOSE


def is_valid_close_code(code):
    return code in SENDABLE_CLOSE_CODES or code in APPLICATION_CLOSE_CODES


def encode_header(opcode, fin, length, mask=None, rsv=0):
    """The header of a frame: minimal length encoding (RFC 6455 5.2); ``mask`` 4 bytes or None."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        head = _PACK_SHORT(first, mask_bit | length)
    elif length < 0x10000:
        head = _PACK_16(first, mask_bit | 126, length)
    else:
        head = _PACK_64(first, mask_bit | 127, length)
    if mask is not None:
        if len(mask) != 4:
            raise ValueError("a frame mask is 4 bytes, got %d" % len(mask))
        head += bytes(mask)
    return head


def parse_header(buf, offset=0):
    """``(Header, header_length)`` for the frame header at ``buf[offset:]``, or None while the
    header is not yet whole.  Raises :class:`FrameError` as soon as the bytes present break a rule
    (RSV bits, reserved opcode, fragmented or long control frame, 64-bit length with its top bit
    set).  ``buf`` is anything indexable as ints (bytes, bytearray, memoryview)."""
    available = len(buf) - offset
    if available < 2:
        return None
    b0 = buf[offset]
    b1 = buf[offset + 1]
    fin = bool(b0 & 0x80)
    rsv = (b0 >> 4) & 0x7
    opcode = b0 & 0x0F
    if rsv:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "RSV bits set (0x%x) but no extension was negotiated" % rsv)
    if opcode not in DATA_OPCODES and opcode not in CONTROL_OPCODES:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved opcode 0x%x" % opcode)
    masked = bool(b1 & 0x80)
    length = b1 & 0x7F
    if opcode >= CLOSE:
        if not fin:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "fragmented control frame (opcode 0x%x)" % opcode)
        if length > MAX_CONTROL_PAYLOAD:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "control frame payload longer than 125 bytes")
    pos = offset + 2
    if length == 126:
        if available < 4:
            return None
        length = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
    elif length == 127:
        if available < 10:
            return None
        if buf[pos] & 0x80:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "64-bit payload length with the most significant bit set")
        length = int.from_bytes(bytes(buf[pos:pos + 8]), "big")
        pos += 8
    mask = None
    if masked:
        if len(buf) < pos + 4:
            return None
        mask = bytes(buf[pos:pos + 4])
        pos += 4
    return Header(fin, rsv, opcode, masked, length, mask), pos - offset


def xor_mask(buf, mask, phase=0):
    """XOR ``buf`` (a writable buffer: bytearray or writable memoryview) in place with the 4-byte
    ``mask``; ``phase`` is how many payload bytes of this frame were already (un)masked, so the
    mask is rotated by ``phase % 4``.  Pure Python: see :func:`relayd.accel.xor_in_place`."""
    view = memoryview(buf).cast("B")
    n = len(view)
    if not n:
        return
    shift = phase & 3
    key = bytes(mask[shift:]) + bytes(mask[:shift])
    repeated = (key * ((n + 3) // 4))[:n]
    view[:] = (int.from_bytes(view, "little") ^ int.from_bytes(repeated, "little")).to_bytes(n, "little")


def encode_close(code=None, reason=""):
    """The payload of a close frame.  ``code`` None: an empty payload (no code, no reason).  The
    reason is UTF-8, cut at a character boundary to the 123 bytes a control frame leaves it."""
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError("close code %r may not be sent (RFC 6455 7.4: 1000-1003, 1007-1013, 3000-4999)" % (code,))
    raw = reason.encode("utf-8") if isinstance(reason, str) else bytes(reason)
    if len(raw) > MAX_CLOSE_REASON:
        raw = raw[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    return code.to_bytes(2, "big") + raw


def parse_close(payload):
    """``(code, reason)`` of a close frame's payload; ``(None, "")`` when it is empty.  Raises
    :class:`FrameError` 1002 for a one-byte payload or a code that may not be sent, 1007 for a
    reason that is not UTF-8."""
    payload = bytes(payload)
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "close frame payload of 1 byte (a code is 2 bytes)")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise FrameError(CLOSE_PROTOCOL_ERROR, "invalid close code %d" % code)
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CLOSE_INVALID_PAYLOAD, "close reason is not valid UTF-8") from None
    return code, reason
