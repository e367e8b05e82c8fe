"""[MC-NMF] .NET Message Framing: the net.tcp preamble, just enough to route by the Via.

Pure: stdlib only, no Twisted.  The relay reads the start of a net.tcp connection, learns
the Via, picks the entity by the Via's path and then splices bytes; it never frames
messages itself, so everything after the preamble is passed on untouched.

Wire format (client -> server), every record starts with a one-byte record type::

    Version             00 major minor           must be 01 00
    Mode                01 mode                  01 Singleton-Unsized, 02 Duplex,
                                                 03 Simplex, 04 Singleton-Sized
    Via                 02 <size> <UTF-8 URI>    size > 0
    KnownEncoding       03 enc                   00..08 (SOAP 1.1 UTF-8/UTF-16/UnicodeLE,
                                                 SOAP 1.2 UTF-8/UTF-16/UnicodeLE, MTOM,
                                                 binary, binary + in-band dictionary)
    ExtensibleEncoding  04 <size> <UTF-8 content type>
    -- routing is possible here; PreambleParser stops and returns a Preamble --
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

Faults (URI ``http://schemas.microsoft.com/ws/2006/05/framing/faults/<name>``) and when
:class:`PreambleParser` raises them (the relay sends ``NmfFault.record`` and closes):

    UnsupportedVersion   first byte is not a Version record (00), or version != 1.0
    UnsupportedMode      second record is not a Mode record (01), or mode not in 1..4
    EndpointNotFound     third record is not a Via record (02); Via size 0; Via is not
                         valid UTF-8, contains control characters, or is not an absolute
                         net.tcp://host... or sb://host... URI.  (Also what the relay
                         sends when no entity matches the Via path.)
    ViaTooLong           Via size > max_via, Via size varint malformed (> 5 bytes or
                         > 2**31-1), or the Via would push the preamble (plus the at least
                         2-byte encoding record after it) over max_preamble.  Raised as
                         soon as the size is read, before the Via bytes arrive.
    ContentTypeInvalid   fourth record is neither KnownEncoding (03) nor
                         ExtensibleEncoding (04); known encoding > 08; empty or non-UTF-8
                         content type
    ContentTypeTooLong   content type size > max_content_type, malformed size varint, or
                         the record would push the preamble over max_preamble
    The others are never raised by the parser; the relay uses them:
    EndpointAccessDenied (token missing/invalid), EndpointUnavailable (no listener),
    EndpointPaused, ServerTooBusy (e.g. preamble timeout, connection limits),
    UpgradeInvalid, MaxMessageSizeExceededFault, ServiceActivationFailed,
    ConnectionDispatchFailed (the listener could not be reached / rendezvous failed).
"""

from dataclasses import dataclass
from typing import Optional, Tuple, Union
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
VIA_SCHEMES = ("net.tcp", "sb")

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
    :class:`PreambleParser` consumes (a client still sends upgrades / PreambleEnd after)."""
    if isinstance(encoding, str):
        enc = _sized(EXTENSIBLE_ENCODING_RECORD, encoding, "content type")
    else:
        enc = bytes([KNOWN_ENCODING_RECORD, encoding])
    return (bytes([VERSION_RECORD, version[0], version[1], MODE_RECORD, mode])
            + encode_via(via) + enc)


# --- the preamble parser ------------------------------------------------------------------

@dataclass(frozen=True)
class Preamble:
    version: Tuple[int, int]
    mode: int
    via: str
    encoding: Union[int, str]   # known encoding byte, or the extensible content type
    raw: bytes                  # the exact bytes of these four records
    rest: bytes                 # everything fed after them (PreambleEnd, upgrades, ...)


_VERSION, _MODE, _VIA, _ENCODING, _DONE = range(5)


def _check_via(text):
    """Reason why ``text`` is not a usable Via, or None."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return "the Via contains control characters"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- validates the port
    except ValueError as e:
        return "the Via is not a valid URI (%s)" % e
    if parts.scheme.lower() not in VIA_SCHEMES or not parts.hostname:
        return "the Via %r is not an absolute net.tcp:// or sb:// URI" % text
    return None


class PreambleParser:
    """Incremental parser for Version, Mode, Via and the envelope encoding record.

    :meth:`feed` bytes in any fragmentation; it returns None until the four records are
    complete, then a :class:`Preamble` whose ``raw + rest`` is every byte fed.  Protocol
    violations raise :class:`NmfFault` (see the module docstring); a failed parser re-raises
    the same fault, a finished one raises RuntimeError.  Limits are checked as soon as a
    size is known, so at most ``max_preamble`` (+ 4 varint bytes) bytes are ever buffered
    before the preamble completes."""

    def __init__(self, max_via=2048, max_content_type=256, max_preamble=8192):
        if max_via < 1 or max_content_type < 1:
            raise ValueError("max_via and max_content_type must be positive")
        if max_preamble < 16:
            raise ValueError("max_preamble must be at least 16")
        self.max_via = max_via
        self.max_content_type = max_content_type
        self.max_preamble = max_preamble
        self._buf = bytearray()
        self._pos = 0       # end of the last complete record
        self._state = _VERSION
        self._version = self._mode = self._via = self._encoding = None
        self._fault = None
        self._result = None

    @property
    def consumed(self):
        """Bytes of complete preamble records so far."""
        return self._pos

    def feed(self, data):
        if self._fault is not None:
            raise self._fault
        if self._result is not None:
            raise RuntimeError("the preamble is complete; splice the remaining bytes")
        self._buf += data
        try:
            while self._state != _DONE:
                self._step()
        except NeedMore:
            return None
        except NmfFault as f:
            self._fault = f
            self._buf = bytearray()
            raise
        buf = bytes(self._buf)
        self._buf = bytearray()
        self._result = Preamble(self._version, self._mode, self._via, self._encoding,
                                buf[:self._pos], buf[self._pos:])
        return self._result

    # -- one record per call; NeedMore leaves the state untouched --------------------------

    def _byte(self, i):
        j = self._pos + i
        if j >= len(self._buf):
            raise NeedMore()
        return self._buf[j]

    def _sized_record(self, what, limit, too_long, invalid, reserve):
        """Size varint + payload of a variable-length record at _pos (type already checked).
        Returns (payload, record_end)."""
        try:
            size, start = decode_varint(self._buf, self._pos + 1)
        except NmfError as e:
            raise NmfFault(too_long, "%s size: %s" % (what, e))
        if size == 0:
            raise NmfFault(invalid, "the %s is empty" % what)
        if size > limit:
            raise NmfFault(too_long, "the %s is %d bytes, the limit is %d" % (what, size, limit))
        end = start + size
        if end + reserve > self.max_preamble:
            raise NmfFault(too_long, "the %s would make the preamble longer than %d bytes"
                           % (what, self.max_preamble))
        if end > len(self._buf):
            raise NeedMore()
        return bytes(self._buf[start:end]), end

    def _step(self):
        rtype = self._byte(0)
        if self._state == _VERSION:
            if rtype != VERSION_RECORD:
                raise NmfFault(UNSUPPORTED_VERSION,
                               "expected a Version record (00), got record type %02x" % rtype)
            major = self._byte(1)
            if major != SUPPORTED_VERSION[0]:
                raise NmfFault(UNSUPPORTED_VERSION, "framing version %d.x is not supported" % major)
            minor = self._byte(2)
            if minor != SUPPORTED_VERSION[1]:
                raise NmfFault(UNSUPPORTED_VERSION,
                               "framing version %d.%d is not supported" % (major, minor))
            self._version = (major, minor)
            self._pos += 3
            self._state = _MODE
        elif self._state == _MODE:
            if rtype != MODE_RECORD:
                raise NmfFault(UNSUPPORTED_MODE,
                               "expected a Mode record (01), got record type %02x" % rtype)
            mode = self._byte(1)
            if mode not in MODES:
                raise NmfFault(UNSUPPORTED_MODE, "mode %d is not defined" % mode)
            self._mode = mode
            self._pos += 2
            self._state = _VIA
        elif self._state == _VIA:
            if rtype != VIA_RECORD:
                raise NmfFault(ENDPOINT_NOT_FOUND,
                               "expected a Via record (02), got record type %02x" % rtype)
            # reserve 2 bytes: the encoding record that must follow is at least that long
            payload, end = self._sized_record("Via", self.max_via, VIA_TOO_LONG,
                                              ENDPOINT_NOT_FOUND, reserve=2)
            try:
                via = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise NmfFault(ENDPOINT_NOT_FOUND, "the Via is not valid UTF-8")
            why = _check_via(via)
            if why:
                raise NmfFault(ENDPOINT_NOT_FOUND, why)
            self._via = via
            self._pos = end
            self._state = _ENCODING
        elif self._state == _ENCODING:
            if rtype == KNOWN_ENCODING_RECORD:
                enc = self._byte(1)
                if enc > MAX_KNOWN_ENCODING:
                    raise NmfFault(CONTENT_TYPE_INVALID, "known encoding %02x is not defined" % enc)
                self._encoding = enc
                self._pos += 2
            elif rtype == EXTENSIBLE_ENCODING_RECORD:
                payload, end = self._sized_record("content type", self.max_content_type,
                                                  CONTENT_TYPE_TOO_LONG, CONTENT_TYPE_INVALID,
                                                  reserve=0)
                try:
                    self._encoding = payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise NmfFault(CONTENT_TYPE_INVALID, "the content type is not valid UTF-8")
                self._pos = end
            else:
                raise NmfFault(CONTENT_TYPE_INVALID,
                               "expected a KnownEncoding (03) or ExtensibleEncoding (04) record, "
                               "got record type %02x" % rtype)
            self._state = _DONE


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
