"""[MC-NMF] .NET Message Framing: its records, their sizes, the framing faults and the Via.

Pure: stdlib only, no Twisted.  The relay reads the start of a net.tcp connection, learns
the Via, picks the entity by the Via's path and then splices bytes; it never frames
messages itself, so everything after the preamble is passed on untouched.  This module
encodes and decodes the pieces (varints, records, Fault records, the Via in and out of a
preamble); the incremental parser of a connection's preamble -- a state machine over these
records that decides which framing fault a bad preamble gets -- is
:mod:`relayd.wire.nmf_preamble`.

Wire format (client -> server), every record starts with a one-byte record type::

    Version             00 major minor           must be 01 00
    Mode                01 mode                  01 Singleton-Unsized, 02 Duplex,
                                                 03 Simplex, 04 Singleton-Sized
    Via                 02 <size> <UTF-8 URI>    size > 0
    KnownEncoding       03 enc                   00..08 (SOAP 1.1 UTF-8/UTF-16/UnicodeLE,
                                                 SOAP 1.2 UTF-8/UTF-16/UnicodeLE, MTOM,
                                                 binary, binary + in-band dictionary)
    ExtensibleEncoding  04 <size> <UTF-8 content type>
    -- routing is possible here; nmf_preamble's parser stops here --
    UpgradeRequest      09 <size> <UTF-8 protocol>   e.g. "application/ssl-tls" (optional,
                                                     Duplex/Simplex/Singleton-Unsized)
    PreambleEnd         0C                        (not sent in Singleton-Sized mode)
    ... then envelopes: SizedEnvelope 06 <size> <bytes>, UnsizedEnvelope 05 <chunks> 00,
        End 07
    server -> client:   PreambleAck 0B, UpgradeResponse 0A, End 07,
                        Fault 08 <size> <UTF-8 fault URI> (then the server closes)

``<size>`` is the [MC-NMF] 2.2.2 / [MC-NBFX] MultiByteInt31 varint: 7 bits per byte,
least significant group first, high bit set = another byte follows; at most 5 bytes, at
most 2**31-1 (so the fifth byte is 0x00..0x07).  Non-minimal encodings (``80 00`` for 0)
are accepted when decoding; :func:`encode_varint` always writes the minimal form.

Faults: a Fault record carries the URI ``http://schemas.microsoft.com/ws/2006/05/framing/faults/<name>``
(:func:`fault`); :data:`FAULT_NAMES` lists the names.  Which the preamble parser raises and when
is documented in :mod:`relayd.wire.nmf_preamble`.
"""

from typing import Optional
from urllib.parse import parse_qsl, unquote, urlsplit

# --- record types -------------------------------------------------------------------------

VERSION_RECORD = 0x00
MODE_RECORD = 0x01
VIA_RECORD = 0x02
KNOWN_ENCODING_RECORD = 0x03
EXTENSIBLE_ENCODING_RECORD = 0x04
UNSIZED_ENVELOPE_RECORD = 0x05
SIZED_ENVELOPE_RECORD = 0x06
END_RECORD = 0x07
FAULT_RECORD = 0x08
UPGRADE_REQUEST_RECORD = 0x09
UPGRADE_RESPONSE_RECORD = 0x0A
PREAMBLE_ACK_RECORD = 0x0B
PREAMBLE_END_RECORD = 0x0C

# one-byte records, ready to write
END = b"\x07"
UPGRADE_RESPONSE = b"\x0a"
PREAMBLE_ACK = b"\x0b"
PREAMBLE_END = b"\x0c"

# --- modes and known encodings ------------------------------------------------------------

MODE_SINGLETON_UNSIZED = 1
MODE_DUPLEX = 2
MODE_SIMPLEX = 3
MODE_SINGLETON_SIZED = 4
MODES = (MODE_SINGLETON_UNSIZED, MODE_DUPLEX, MODE_SIMPLEX, MODE_SINGLETON_SIZED)

ENCODING_SOAP11_UTF8 = 0x00
ENCODING_SOAP11_UTF16 = 0x01
ENCODING_SOAP11_UNICODE_LE = 0x02
ENCODING_SOAP12_UTF8 = 0x03
ENCODING_SOAP12_UTF16 = 0x04
ENCODING_SOAP12_UNICODE_LE = 0x05
ENCODING_SOAP12_MTOM = 0x06
ENCODING_SOAP12_BINARY = 0x07
ENCODING_SOAP12_BINARY_SESSION = 0x08
MAX_KNOWN_ENCODING = 0x08

SUPPORTED_VERSION = (1, 0)

# --- faults -------------------------------------------------------------------------------

FAULT_NAMESPACE = "http://schemas.microsoft.com/ws/2006/05/framing/faults/"

ENDPOINT_NOT_FOUND = "EndpointNotFound"
ENDPOINT_ACCESS_DENIED = "EndpointAccessDenied"
ENDPOINT_UNAVAILABLE = "EndpointUnavailable"
ENDPOINT_PAUSED = "EndpointPaused"
SERVER_TOO_BUSY = "ServerTooBusy"
CONTENT_TYPE_INVALID = "ContentTypeInvalid"
CONTENT_TYPE_TOO_LONG = "ContentTypeTooLong"
VIA_TOO_LONG = "ViaTooLong"
UNSUPPORTED_MODE = "UnsupportedMode"
UNSUPPORTED_VERSION = "UnsupportedVersion"
UPGRADE_INVALID = "UpgradeInvalid"
MAX_MESSAGE_SIZE_EXCEEDED = "MaxMessageSizeExceededFault"
SERVICE_ACTIVATION_FAILED = "ServiceActivationFailed"
CONNECTION_DISPATCH_FAILED = "ConnectionDispatchFailed"

FAULT_NAMES = (
    ENDPOINT_NOT_FOUND, ENDPOINT_ACCESS_DENIED, ENDPOINT_UNAVAILABLE, ENDPOINT_PAUSED,
    SERVER_TOO_BUSY, CONTENT_TYPE_INVALID, CONTENT_TYPE_TOO_LONG, VIA_TOO_LONG,
    UNSUPPORTED_MODE, UNSUPPORTED_VERSION, UPGRADE_INVALID, MAX_MESSAGE_SIZE_EXCEEDED,
    SERVICE_ACTIVATION_FAILED, CONNECTION_DISPATCH_FAILED,
)

MAX_VARINT = 2 ** 31 - 1
MAX_VARINT_BYTES = 5


class NmfError(ValueError):
    """Malformed framing bytes (bad varint, bad record sequence in :func:`rewrite_via`)."""


class NeedMore(Exception):
    """The buffer ends before the item being decoded does; feed more bytes and retry.

    Deliberately *not* an :class:`NmfError`: incomplete is not invalid."""


class NmfFault(NmfError):
    """The peer broke the protocol; answer with ``.record`` (a Fault record) and close."""

    def __init__(self, name, detail=""):
        self.record = fault(name)  # validates the name
        self.name = name
        self.detail = detail
        super().__init__("%s: %s" % (name, detail) if detail else name)


# --- varints ------------------------------------------------------------------------------

def encode_varint(n):
    """MultiByteInt31: ``n`` (0 .. 2**31-1) in 1..5 bytes."""
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_VARINT:
        raise ValueError("varint value must be an int in 0..2**31-1, got %r" % (n,))
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def decode_varint(buf, offset=0):
    """Decode a MultiByteInt31 at ``buf[offset:]``; return ``(value, offset_after)``.

    Raises :class:`NeedMore` if ``buf`` ends inside the varint, :class:`NmfError` if a fifth
    byte still has the continuation bit or the value exceeds 2**31-1."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if offset + i >= len(buf):
            raise NeedMore()
        b = buf[offset + i]
        if i == MAX_VARINT_BYTES - 1:
            if b & 0x80:
                raise NmfError("varint longer than %d bytes" % MAX_VARINT_BYTES)
            if b > 0x07:
                raise NmfError("varint exceeds 2**31-1")
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, offset + i + 1
    raise AssertionError("unreachable")  # pragma: no cover


# --- encoders -----------------------------------------------------------------------------

def fault_uri(name):
    if name not in FAULT_NAMES:
        raise ValueError("unknown framing fault name %r" % (name,))
    return FAULT_NAMESPACE + name


def fault(name):
    """The Fault record ``08 <size> <URI>`` for a framing fault name, e.g. "EndpointNotFound"."""
    uri = fault_uri(name).encode("ascii")
    return bytes([FAULT_RECORD]) + encode_varint(len(uri)) + uri


def _sized(record_type, text, what):
    data = text.encode("utf-8")
    if not data:
        raise ValueError("%s must not be empty" % what)
    return bytes([record_type]) + encode_varint(len(data)) + data


def encode_via(uri):
    """The Via record ``02 <size> <UTF-8 URI>``."""
    return _sized(VIA_RECORD, uri, "Via")


def encode_preamble(via, mode=MODE_DUPLEX, encoding=ENCODING_SOAP12_BINARY_SESSION,
                    version=SUPPORTED_VERSION):
    """Version + Mode + Via + KnownEncoding (int) or ExtensibleEncoding (str) records: what
    :class:`relayd.wire.nmf_preamble.PreambleParser` consumes (a client still sends upgrades / PreambleEnd after)."""
    if isinstance(encoding, str):
        enc = _sized(EXTENSIBLE_ENCODING_RECORD, encoding, "content type")
    else:
        enc = bytes([KNOWN_ENCODING_RECORD, encoding])
    return (bytes([VERSION_RECORD, version[0], version[1], MODE_RECORD, mode])
            + encode_via(via) + enc)


# --- Via helpers --------------------------------------------------------------------------

def rewrite_via(raw_preamble, new_via):
    """``raw_preamble`` (starting with Version, Mode, Via; anything may follow) with the Via
    record replaced by one for ``new_via``; every other byte unchanged."""
    buf = bytes(raw_preamble)
    if len(buf) < 6 or buf[0] != VERSION_RECORD or buf[3] != MODE_RECORD or buf[5] != VIA_RECORD:
        raise NmfError("not a preamble starting with Version, Mode and Via records")
    try:
        size, start = decode_varint(buf, 6)
    except NeedMore:
        raise NmfError("the Via record is truncated")
    if start + size > len(buf):
        raise NmfError("the Via record is truncated")
    return buf[:5] + encode_via(new_via) + buf[start + size:]


def via_path(via):
    """The Via's path, percent-decoded, without leading/trailing slashes; query and fragment
    dropped.  ``net.tcp://h:1/a/b%20c/?x=1`` -> ``a/b c``."""
    return unquote(urlsplit(via).path).strip("/")


def via_query_token(via) -> Optional[str]:
    """The ``sb-hc-token`` query parameter of the Via (name matched case-insensitively,
    value URL-decoded once), or None if absent or empty."""
    for k, v in parse_qsl(urlsplit(via).query, keep_blank_values=True):
        if k.lower() == "sb-hc-token":
            return v or None
    return None
