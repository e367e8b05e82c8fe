"""HTTP/1.1 request heads and body framing (RFC 9112), pure: bytes in, values out.

What the relay's HTTP door accepts, and nothing looser (the rules that keep request smuggling
and header injection out):

* **Request line**: ``METHOD SP target SP HTTP/1.x`` -- exactly three parts split on single
  spaces, the method an RFC 9110 token, the target without controls, spaces or DEL.
* **Header lines**: ``name ":" value``; the name a token (no space before the colon); no
  obsolete line folding (a line starting with SP/HTAB); a value may hold no control character
  but HTAB -- bare CR, LF and NUL are never accepted anywhere (only CRLF ends a line).
  Values are stripped of surrounding SP/HTAB.
* **Body framing** (:func:`body_framing`): ``Transfer-Encoding`` other than exactly
  ``chunked`` is refused (501); ``Content-Length`` must be digits only, and several values
  (repeated headers or a comma list) must agree (400); a length over the caller's limit is 413.
  Transfer-Encoding wins over Content-Length.
* **Chunked bodies** (:class:`ChunkedDecoder`): ``hex-size [; extensions] CRLF data CRLF``
  ... ``0 CRLF [trailer lines] CRLF``.  The size is hex digits only (no ``0x``, sign or
  space), the size line at most ``MAX_CHUNK_SIZE_LINE`` bytes, extensions of visible
  characters but backslash, SP, HTAB and obs-text only; each chunk's data ends with CRLF;
  trailers (read and dropped) at most ``MAX_TRAILER_BYTES``.  Anything else raises :class:`BodyError`.
* **Identity bodies** (:class:`IdentityDecoder`): exactly ``Content-Length`` bytes.

Both decoders are incremental: :meth:`feed` takes any fragment and returns the body bytes it
completes, in order; once the body has ended, :attr:`rest` holds the bytes that followed it
(the start of the next request on a keep-alive connection) and :attr:`done` is true.
"""

import re

# Connection-specific headers (RFC 9110 7.6.1, plus the framing headers): a hop never forwards
# them; the relay and the bridge each write their own.
HOP_BY_HOP = frozenset({
    "connection", "content-length", "host", "te", "trailer", "transfer-encoding", "upgrade",
    "close", "keep-alive", "proxy-connection",
})

# Longest chunk-size line (size, extensions, CRLF) accepted; the value Twisted's decoder used.
MAX_CHUNK_SIZE_LINE = 1024
# Most bytes of trailer lines accepted after the last chunk.
MAX_TRAILER_BYTES = 64 * 1024

# RFC 9110 token characters (header names, methods); bare CR, LF and NUL are never accepted
# anywhere in a head (only CRLF ends a line), nor other control characters in a value but TAB.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")
_DIGITS = re.compile(r"[0-9]+\Z")
_HEX = re.compile(rb"[0-9A-Fa-f]+\Z")
# chunk extensions: HTAB, SP, visible ASCII but backslash, and obs-text (as Twisted accepted)
_BAD_IN_EXTENSION = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f\\]")


class HeadError(ValueError):
    """A request head or its framing the relay refuses: ``status`` is the HTTP status to answer
    with, ``message`` says what was wrong and what to send instead."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class BodyError(ValueError):
    """Malformed chunked framing in a request body."""


class RequestHead:
    """A parsed request head: ``method``, ``target``, ``version`` (``"HTTP/1.1"``), ``headers``
    as ``[(name, value)]`` in order, and ``lowered``: lower-case name -> [values]."""

    __slots__ = ("method", "target", "version", "headers", "lowered")

    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        lowered = {}
        for name, value in headers:
            lowered.setdefault(name.lower(), []).append(value)
        self.lowered = lowered

    def joined(self, name):
        """Every value of header ``name`` (lower case) joined with commas ("" if absent)."""
        return ",".join(self.lowered.get(name, []))

    def first(self, name, default=None):
        return self.lowered.get(name, [default])[0]


def parse_request_head(head):
    """A :class:`RequestHead` from a raw request head (without its final CRLF CRLF)."""
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ")
    if (len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not _TOKEN.match(parts[0])
            or _BAD_IN_TARGET.search(parts[1]) or _BAD_IN_VALUE.search(parts[2])):
        raise HeadError(400, "malformed HTTP request line")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise HeadError(400, "obsolete header line folding is not accepted")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise HeadError(400, "malformed header line %r" % line[:60])
        if _BAD_IN_VALUE.search(value):
            raise HeadError(400, "the value of header %r contains a control character (bare CR, LF or NUL); "
                            "header values must be plain text" % name[:60])
        headers.append((name, value.strip(" \t")))
    return RequestHead(parts[0], parts[1], parts[2], headers)


def body_framing(head, limit):
    """How the body of ``head`` is framed: ``("chunked", None)``, ``("length", n)`` with
    ``0 < n <= limit``, or ``(None, None)`` for no body.  Raises :class:`HeadError`."""
    te = head.joined("transfer-encoding").lower()
    if te:
        if te.strip() != "chunked":
            raise HeadError(501, "only chunked transfer-encoding is supported")
        return "chunked", None
    if "content-length" not in head.lowered:
        return None, None
    values = {v.strip(" \t") for v in head.joined("content-length").split(",")}
    if not all(_DIGITS.match(v) for v in values):
        raise HeadError(400, "Content-Length must be a decimal number of bytes (digits only)")
    values = {int(v) for v in values}
    if len(values) != 1:
        raise HeadError(400, "conflicting or negative Content-Length")
    length = values.pop()
    if length > limit:
        raise HeadError(413, "the request body (%d bytes) is larger than the relay's limit of %d bytes"
                        % (length, limit))
    return ("length", length) if length else (None, None)


def decoder_for(framing, length):
    """The body decoder for what :func:`body_framing` returned (None for no body)."""
    if framing == "chunked":
        return ChunkedDecoder()
    if framing == "length":
        return IdentityDecoder(length)
    return None


class IdentityDecoder:
    """Exactly ``length`` bytes of body."""

    def __init__(self, length):
        self.remaining = length
        self.done = False
        self.rest = b""

    def feed(self, data):
        if self.done:
            self.rest += data
            return []
        if len(data) < self.remaining:
            self.remaining -= len(data)
            return [data] if data else []
        body, self.rest = data[:self.remaining], data[self.remaining:]
        self.remaining = 0
        self.done = True
        return [body]


# ChunkedDecoder states
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = "size", "data", "data-end", "trailer", "done"


class ChunkedDecoder:
    """An RFC 9112 chunked body, fed in fragments (see the module comment for what is refused)."""

    def __init__(self):
        self.state = _SIZE
        self.buf = bytearray()
        self.left = 0  # bytes of the current chunk still to come
        self.trailer_bytes = 0
        self.rest = b""

    @property
    def done(self):
        return self.state == _DONE

    def feed(self, data):
        if self.state == _DONE:
            self.rest += data
            return []
        self.buf += data
        out = []
        while self.buf and self.state != _DONE:
            if self.state == _DATA:
                piece = bytes(self.buf[:self.left])
                del self.buf[:self.left]
                self.left -= len(piece)
                out.append(piece)
                if not self.left:
                    self.state = _DATA_END
            elif self.state == _DATA_END:
                if len(self.buf) < 2:
                    if self.buf != b"\r"[:len(self.buf)]:
                        raise BodyError("chunk data did not end with CRLF")
                    break
                if self.buf[:2] != b"\r\n":
                    raise BodyError("chunk data did not end with CRLF")
                del self.buf[:2]
                self.state = _SIZE
            elif self.state == _SIZE:
                if not self._size_line():
                    break
            elif not self._trailer_line():
                break
        if self.state == _DONE:
            self.rest, self.buf = bytes(self.buf), bytearray()
        return out

    def _size_line(self):
        end = self.buf.find(b"\r\n")
        if end < 0:
            if len(self.buf) > MAX_CHUNK_SIZE_LINE:
                raise BodyError("chunk size line longer than %d bytes" % MAX_CHUNK_SIZE_LINE)
            return False
        if end >= MAX_CHUNK_SIZE_LINE:
            raise BodyError("chunk size line longer than %d bytes" % MAX_CHUNK_SIZE_LINE)
        size, _, extensions = bytes(self.buf[:end]).partition(b";")
        if not _HEX.match(size):
            raise BodyError("chunk size must be hexadecimal digits")
        if _BAD_IN_EXTENSION.search(extensions):
            raise BodyError("invalid characters in chunk extensions: %r" % extensions[:60])
        del self.buf[:end + 2]
        self.left = int(size, 16)
        self.state = _DATA if self.left else _TRAILER
        return True

    def _trailer_line(self):
        end = self.buf.find(b"\r\n")
        if end < 0:
            if self.trailer_bytes + len(self.buf) + 1 > MAX_TRAILER_BYTES:
                raise BodyError("trailer lines longer than %d bytes" % MAX_TRAILER_BYTES)
            return False
        del self.buf[:end + 2]
        if end == 0:
            self.state = _DONE
            return True
        self.trailer_bytes += end + 2
        if self.trailer_bytes > MAX_TRAILER_BYTES:
            raise BodyError("trailer lines longer than %d bytes" % MAX_TRAILER_BYTES)
        return True
