"""[MC-NMF] what a net.tcp *publisher* sends after its preamble, read incrementally (the relay
answers such a session itself: :mod:`relayd.transports.events_nettcp`).

Pure: stdlib only, no Twisted.  After the preamble (:mod:`relayd.wire.nmf_preamble`) a
buffered WCF client in Duplex or Simplex mode sends::

    PreambleEnd   0C
    SizedEnvelope 06 <size> <size bytes>     one per message, any number
    End           07

:class:`SessionReader` returns each record whole, as ``(kind, record bytes)`` (the bytes exactly
as received, so they can be replayed to a service unchanged), and never holds more than one
record (at most ``max_message`` + 6 bytes).  What it refuses, as the framing fault the relay
answers with (``NmfFault.record``, then close)::

    UpgradeInvalid              an UpgradeRequest (09) before PreambleEnd: the relay ends the
                                session itself, so it cannot run TLS / negotiate with the client
    MaxMessageSizeExceededFault an envelope size over max_message (from the size alone, before
                                any payload is read), or a malformed size varint
    UnsupportedMode             any other record where PreambleEnd / SizedEnvelope / End was
                                expected: an UnsizedEnvelope (05, streamed transfer), a second
                                preamble, an unknown record type
"""

from relayd.wire.nmf import (
    END_RECORD, MAX_MESSAGE_SIZE_EXCEEDED, PREAMBLE_END_RECORD, SIZED_ENVELOPE_RECORD, UNSUPPORTED_MODE,
    UPGRADE_INVALID, UPGRADE_REQUEST_RECORD, NeedMore, NmfError, NmfFault, decode_varint)

# what SessionReader.feed returns, with the record's bytes
PREAMBLE_END, ENVELOPE, END = "preamble-end", "envelope", "end"

_AWAIT_PREAMBLE_END, _RECORDS, _ENDED = range(3)


class SessionReader:
    """Incremental reader of PreambleEnd, SizedEnvelope* and End (module docstring).

    :meth:`feed` bytes in any fragmentation; it returns the list of records completed by them
    (possibly empty).  A fault raises :class:`NmfFault` (and again on any later feed); feeding
    after End raises RuntimeError."""

    def __init__(self, max_message):
        if max_message < 0:
            raise ValueError("max_message must not be negative")
        self.max_message = max_message
        self._buf = bytearray()
        self._state = _AWAIT_PREAMBLE_END
        self._fault = None

    @property
    def ended(self):
        return self._state == _ENDED

    @property
    def buffered(self):
        """Bytes held of a record not complete yet."""
        return len(self._buf)

    def feed(self, data):
        if self._fault is not None:
            raise self._fault
        if self._state == _ENDED:
            raise RuntimeError("the session ended (End record); nothing may follow it")
        self._buf += data
        out = []
        pos = 0
        try:
            while pos < len(self._buf) and self._state != _ENDED:
                kind, end = self._record(pos)
                out.append((kind, bytes(self._buf[pos:end])))
                pos = end
        except NeedMore:
            pass
        except NmfFault as f:
            self._fault = f
            self._buf = bytearray()
            raise
        del self._buf[:pos]
        return out

    def _record(self, pos):
        """The record at ``pos``: ``(kind, end)``; NeedMore while incomplete."""
        rtype = self._buf[pos]
        if self._state == _AWAIT_PREAMBLE_END:
            if rtype == PREAMBLE_END_RECORD:
                self._state = _RECORDS
                return PREAMBLE_END, pos + 1
            if rtype == UPGRADE_REQUEST_RECORD:
                raise NmfFault(UPGRADE_INVALID, "the relay takes net.tcp publishers without upgrades "
                                                "(SecurityMode.None); got an UpgradeRequest")
            raise NmfFault(UNSUPPORTED_MODE, "expected PreambleEnd (0C), got record type %02x" % rtype)
        if rtype == END_RECORD:
            self._state = _ENDED
            return END, pos + 1
        if rtype != SIZED_ENVELOPE_RECORD:
            raise NmfFault(UNSUPPORTED_MODE, "expected a SizedEnvelope (06) or End (07), got record type "
                                             "%02x; publish with buffered transfer (not streamed)" % rtype)
        try:
            size, start = decode_varint(self._buf, pos + 1)
        except NmfError as e:
            raise NmfFault(MAX_MESSAGE_SIZE_EXCEEDED, "the envelope size is malformed: %s" % e)
        if size > self.max_message:
            raise NmfFault(MAX_MESSAGE_SIZE_EXCEEDED, "the envelope is %d bytes, the entity's max_message is %d"
                           % (size, self.max_message))
        end = start + size
        if end > len(self._buf):
            raise NeedMore()
        return ENVELOPE, end
