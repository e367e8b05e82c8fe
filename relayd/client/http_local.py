"""A lean HTTP/1.1 client for the requests ``relayd bridge -H`` answers on its control channel
(:mod:`relayd.client.http`): the request whole (no body, or at most 64 kB), the response read
with the same framing rules and decoders as the relay's door (:mod:`relayd.wire.http1`).

Twisted's ``Agent`` spent about half of the bridge's CPU on a small request (URI parsing,
six Deferreds, a line receiver per header, a ``Headers`` object each way); this client makes
one Deferred per request and parses the head in one pass.  Requests that stream (rendezvous
legs) keep using ``Agent``.

* Connections are kept per service (``HTTP/1.1`` without ``Connection: close``, or ``HTTP/1.0``
  with ``keep-alive``), at most ``max_idle`` idle; a kept connection the service closed before
  answering is retried once on a new one when the request may be repeated (an idempotent
  method without a body, the rule ``Agent`` follows).
* Response framing (RFC 9112 6.3): none for HEAD, 1xx (skipped), 204 and 304; chunked; a
  ``Content-Length``; else the body ends with the connection.  A head over
  :data:`MAX_RESPONSE_HEAD` bytes, a malformed status line or framing fails the request
  (:class:`LocalResponseError`: the bridge answers 503).
* The response is an object with what :mod:`relayd.client.http` reads of Twisted's ``IResponse``:
  ``code``, ``phrase``, ``version``, ``headers`` (``getAllRawHeaders``, ``getRawHeaders``),
  ``length`` and ``deliverBody(protocol)``; the protocol's transport pauses, resumes and stops
  the connection (backpressure), and its ``connectionLost`` gets ``ResponseDone`` at the end.
"""

import re

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import UNKNOWN_LENGTH

from relayd.pipe import no_delay
from relayd.wire import http1

MAX_RESPONSE_HEAD = 64 * 1024  # bytes of a local response's status line and headers
RETRYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: (.*))?\Z")
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*\Z")


class LocalResponseError(Exception):
    """The local service's answer could not be read as HTTP/1.1."""


class _Headers:
    """The response's header lines, in order, with the service's own casing."""

    def __init__(self, pairs):
        self.pairs = pairs
        self.lowered = {}  # lower-case name -> values
        for name, value in pairs:
            self.lowered.setdefault(name.lower(), []).append(value)

    def getAllRawHeaders(self):
        grouped = {}
        for name, value in self.pairs:
            grouped.setdefault(name, []).append(value)
        return grouped.items()

    def getRawHeaders(self, name, default=None):
        return self.lowered.get(name.lower(), default)


class LocalResponse:
    def __init__(self, connection, version, code, phrase, headers, length):
        self._connection = connection
        self.version = (b"HTTP", 1, version)
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.length = length

    def deliverBody(self, protocol):
        self._connection.deliver_to(protocol)


class _BodyTransport:
    """The body protocol's transport: backpressure on the local connection."""

    def __init__(self, connection):
        self.connection = connection

    def pauseProducing(self):
        self.connection.transport.pauseProducing()

    def resumeProducing(self):
        self.connection.transport.resumeProducing()

    def stopProducing(self):
        self.connection.reusable = False
        self.connection.transport.abortConnection()


class LocalConnection(Protocol):
    """One connection to the local service, one request at a time."""

    pool = None
    key = None

    def __init__(self):
        self.answered = None  # the request's Deferred until its head is read
        self.method = None
        self.got_bytes = False
        self.buf = b""
        self.decoder = None  # the body decoder; None with no body or a body to the close
        self.to_close = False  # the body ends with the connection
        self.body_protocol = None
        self.held = []  # body bytes that came before deliverBody
        self.body_ended = False
        self.reusable = False
        self.lost = False

    def connectionMade(self):
        no_delay(self.transport)

    def request(self, method, data):
        self.method = method
        self.got_bytes = False
        self.decoder = None
        self.to_close = self.body_ended = self.reusable = False
        self.held = []
        self.answered = defer.Deferred()
        self.transport.write(data)
        return self.answered

    # -- the head --------------------------------------------------------------------------

    def dataReceived(self, data):
        self.got_bytes = True
        if self.answered is not None:
            self.buf += data
            try:
                self._read_head()
            except (LocalResponseError, http1.BodyError, http1.HeadError) as e:
                self._fail(LocalResponseError(str(e)))
            return
        if self.decoder is not None or self.to_close:
            self._body(data)
        else:
            self.reusable = False  # bytes nobody asked for (an idle kept connection): drop it
            self.transport.abortConnection()

    def _read_head(self):
        while self.answered is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_RESPONSE_HEAD:
                    raise LocalResponseError("the response head is larger than %d bytes" % MAX_RESPONSE_HEAD)
                return
            if end > MAX_RESPONSE_HEAD:
                raise LocalResponseError("the response head is larger than %d bytes" % MAX_RESPONSE_HEAD)
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            lines = head.split(b"\r\n")
            m = _STATUS_LINE.match(lines[0])
            if not m:
                raise LocalResponseError("not an HTTP/1.x status line: %r" % lines[0][:80])
            version, code, phrase = int(m.group(1)), int(m.group(2)), m.group(3) or b""
            if code < 100:
                raise LocalResponseError("status %d is not an HTTP status" % code)
            pairs = []
            for line in lines[1:]:
                h = _HEADER.match(line)
                if not h:
                    raise LocalResponseError("malformed response header line: %r" % line[:80])
                pairs.append((h.group(1), h.group(2)))
            if 100 <= code < 200:
                continue  # 100 Continue and the like: the answer follows
            self._start_body(version, code, phrase, _Headers(pairs))

    def _start_body(self, version, code, phrase, headers):
        lowered = headers.lowered
        connection = b",".join(lowered.get(b"connection", ())).lower()
        self.reusable = (b"close" not in connection) if version == 1 else (b"keep-alive" in connection)
        length = UNKNOWN_LENGTH
        if self.method == b"HEAD" or code in (204, 304):
            length = 0
        elif b"transfer-encoding" in lowered:
            codings = b",".join(lowered[b"transfer-encoding"]).lower().split(b",")
            if codings[-1].strip() != b"chunked":
                raise LocalResponseError("a response body framed by %r" % codings[-1].strip())
            self.decoder = http1.ChunkedDecoder()
        elif b"content-length" in lowered:
            values = {v.strip() for v in b",".join(lowered[b"content-length"]).split(b",")}
            if len(values) != 1:
                raise LocalResponseError("the response's Content-Length is not one number")
            value = values.pop()
            if not value.isdigit():
                raise LocalResponseError("the response's Content-Length is not one number")
            length = int(value)
            self.decoder = http1.IdentityDecoder(length)
        else:
            self.to_close = True
            self.reusable = False
        answered, self.answered = self.answered, None
        rest, self.buf = self.buf, b""
        self.body_ended = length == 0
        answered.callback(LocalResponse(self, version, code, phrase, headers, length))
        if rest and not self.body_ended:
            self._body(rest)
        elif self.body_ended:
            self.reusable = self.reusable and not rest
            self._end_body()

    # -- the body --------------------------------------------------------------------------

    def deliver_to(self, protocol):
        self.body_protocol = protocol
        protocol.makeConnection(_BodyTransport(self))
        held, self.held = self.held, []
        for data in held:
            protocol.dataReceived(data)
        if not self.lost:
            self.transport.resumeProducing()  # paused while the body had nobody to go to
        if self.body_ended:
            self._finish_body(ResponseDone("the response is complete"))
        elif self.lost:
            self._finish_body(Failure(LocalResponseError("the service closed the connection mid-response")))

    def _body(self, data):
        if self.to_close:
            pieces = [data]
        else:
            try:
                pieces = self.decoder.feed(data)
            except http1.BodyError as e:
                self.reusable = False
                self.transport.abortConnection()
                self._end_body(Failure(LocalResponseError("malformed response body: %s" % e)))
                return
        for piece in pieces:
            if not piece:
                continue
            if self.body_protocol is None:
                self.held.append(piece)
                self.transport.pauseProducing()
            else:
                self.body_protocol.dataReceived(piece)
        if self.decoder is not None and self.decoder.done:
            if self.decoder.rest:
                self.reusable = False  # bytes after the response: not a connection to keep
            self._end_body()

    def _end_body(self, reason=None):
        self.decoder = None
        self.to_close = False
        self.body_ended = True
        if self.body_protocol is not None:
            self._finish_body(reason or ResponseDone("the response is complete"))

    def _finish_body(self, reason):
        protocol, self.body_protocol = self.body_protocol, None
        if protocol is None:
            return
        if not isinstance(reason, Failure):
            reason = Failure(reason)
        if self.reusable and not self.lost and self.pool is not None:
            self.pool.put(self)
        elif not self.lost:
            self.transport.loseConnection()
        protocol.connectionLost(reason)

    def _fail(self, error):
        answered, self.answered = self.answered, None
        self.reusable = False
        if not self.lost:
            self.transport.abortConnection()
        if answered is not None:
            answered.errback(error)

    def connectionLost(self, reason):
        self.lost = True
        if self.pool is not None:
            self.pool.forget(self)
        if self.answered is not None:
            answered, self.answered = self.answered, None
            answered.errback(_Lost(self.got_bytes, reason.getErrorMessage()))
        elif self.to_close:
            self.to_close = False
            self.body_ended = True
            if self.body_protocol is not None:
                self._finish_body(ResponseDone("the response ended with the connection"))
        elif self.decoder is not None:
            self.decoder = None
            if self.body_protocol is not None:
                self._finish_body(Failure(LocalResponseError("the service closed the connection mid-response")))


class _Lost(LocalResponseError):
    def __init__(self, got_bytes, why):
        super().__init__("the service closed the connection before its answer: %s" % why)
        self.got_bytes = got_bytes


class LocalClient:
    """Requests to one local service (``endpoint``, ``host``: the Host header it gets by default)."""

    def __init__(self, endpoint, host, max_idle=64):
        self.endpoint = endpoint
        self.host = host
        self.max_idle = max_idle
        self.idle = []
        self.factory = Factory.forProtocol(LocalConnection)
        self.factory.noisy = False  # no "Starting factory" line per connection (issue 12)

    def request(self, method, target, headers, body=None):
        """``headers``: (name, value) bytes pairs (no framing headers); ``body``: bytes or None.
        Fires with a :class:`LocalResponse` once its head is read."""
        lines = [method + b" " + target + b" HTTP/1.1"]
        if not any(name.lower() == b"host" for name, _ in headers):
            lines.append(b"Host: " + self.host)
        lines += [name + b": " + value for name, value in headers]
        if body is not None or method in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"Content-Length: %d" % len(body or b""))
        data = b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")
        retry = method in RETRYABLE and body is None
        if self.idle:
            connection = self.idle.pop()
            d = connection.request(method, data)
            if retry:
                d.addErrback(self._retry, method, data)
            return d
        return self._new(method, data)

    def _new(self, method, data):
        d = self.endpoint.connect(self.factory)

        def connected(connection):
            connection.pool = self
            return connection.request(method, data)

        return d.addCallback(connected)

    def _retry(self, failure, method, data):
        failure.trap(_Lost)
        if failure.value.got_bytes:
            return failure
        return self._new(method, data)  # the kept connection was closed by the service meanwhile

    def put(self, connection):
        if len(self.idle) >= self.max_idle:
            connection.transport.loseConnection()
            return
        self.idle.append(connection)

    def forget(self, connection):
        if connection in self.idle:
            self.idle.remove(connection)

    def close(self):
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.pool = None
            connection.transport.loseConnection()
