"""[MC-NMF] the net.tcp preamble, read incrementally: Version, Mode, Via and the envelope
encoding record, just enough to route by the Via (the records themselves: :mod:`relayd.wire.nmf`).

Pure: stdlib only, no Twisted.  :class:`PreambleParser` is a state machine, one record per step
(VERSION -> MODE -> VIA -> ENCODING -> DONE); it never buffers more than its limits allow, and a
preamble that breaks the protocol raises :class:`~relayd.wire.nmf.NmfFault` with the framing
fault the relay answers with (it sends ``NmfFault.record`` and closes).  The faults and when
:class:`PreambleParser` raises them::

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
from typing import Tuple, Union
from urllib.parse import urlsplit

from relayd.wire.nmf import (
    CONTENT_TYPE_INVALID, CONTENT_TYPE_TOO_LONG, ENDPOINT_NOT_FOUND, EXTENSIBLE_ENCODING_RECORD,
    KNOWN_ENCODING_RECORD, MAX_KNOWN_ENCODING, MODE_RECORD, MODES, SUPPORTED_VERSION,
    UNSUPPORTED_MODE, UNSUPPORTED_VERSION, VERSION_RECORD, VIA_RECORD, VIA_TOO_LONG, NeedMore,
    NmfError, NmfFault, decode_varint)

VIA_SCHEMES = ("net.tcp", "sb")

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
