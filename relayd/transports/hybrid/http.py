"""Hybrid Connections HTTP request relaying: ``http(s)://relay/{path}[/suffix][?query]``.

Wire protocol (Azure Relay Hybrid Connections, "Request operation"):

* Any method but CONNECT, and no Upgrade, on an HC entity path (no ``$hc``) becomes a
  ``request`` for one listener (balanced).  Small requests (a known body of at most 64 kB)
  go over the listener's control channel: the ``request`` JSON text message, then the body
  as ONE binary message.  Every such message carries an ``address`` the listener may use
  to upgrade the request to a rendezvous (``sb-hc-action=request``), e.g. to answer with a
  large response.
* Larger, chunked or unknown-length bodies go by rendezvous: the control message carries only
  ``address`` and ``id``; the listener connects there and the relay sends the full
  ``request`` JSON followed by the body, streamed as the fragments of one binary message.
* The listener answers ``{"response": {requestId, statusCode, statusDescription,
  responseHeaders, body}}`` followed, when ``body`` is true, by binary message(s); an empty
  binary message after ``body: false`` is tolerated.  A rendezvous socket, once made, serves
  every later request of the same client HTTP connection and closes with it.
* Headers: hop-by-hop and framing headers are stripped both ways, ``Via`` is kept and
  extended with the relay's host, ``sb-hc-*`` query parameters and the relay's token are
  stripped.  Errors: 404 unknown path, 401/403 auth, 405 CONNECT, 400 Upgrade, 413 body
  over the limit, 502 no listener, 504 no response in time (per entity), 431 head too big
  (the front door).

Bodies stream in both directions with backpressure; the relay holds at most 64 kB of a
control-channel request body and a transport buffer's worth of anything else.
"""

import json
import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http import _ChunkedTransferDecoder, _IdentityTransferDecoder, RESPONSES
from zope.interface import implementer

from relayd import access, pipe

from relayd.wire import sas
from relayd.interfaces import IResponseRouter
from relayd.switchboard import SwitchboardError
from relayd.wire import hc
from relayd.transports.listener.offers import RequestOffer
from relayd.transports.soap import door as soap_door
from relayd.wire.soap import envelope as soap_envelope

SMALL_BODY = 64 * 1024
HOP_BY_HOP = {
    "expect", "connection", "content-length", "host", "te", "trailer", "transfer-encoding", "upgrade",
    "close", "keep-alive", "proxy-connection",
}
RESPONSE_SKIP = HOP_BY_HOP | {"via"}
MAX_RESPONSE_JSON = 64 * 1024

# One module-level logger: a Logger reached through an instance records that instance as the
# event's log_source, and an event kept by an observer would then keep the connection alive.
log = Logger(namespace="relayd.transports.hybrid.http")


class HttpError(Exception):
    def __init__(self, status, message, close=False, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.headers = headers  # extra response headers, e.g. Retry-After with a 503


# RFC 9110 token characters (header names, methods); bare CR, LF and NUL are never accepted
# anywhere in a head (only CRLF ends a line), nor other control characters in a value but TAB.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")
_DIGITS = re.compile(r"[0-9]+\Z")


def parse_head(head):
    """(method, target, version, [(name, value)]) from a raw request head (no final CRLFCRLF)."""
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ")
    if (len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not _TOKEN.match(parts[0])
            or _BAD_IN_TARGET.search(parts[1]) or _BAD_IN_VALUE.search(parts[2])):
        raise HttpError(400, "malformed HTTP request line", close=True)
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise HttpError(400, "obsolete header line folding is not accepted", close=True)
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise HttpError(400, "malformed header line %r" % line[:60], close=True)
        if _BAD_IN_VALUE.search(value):
            raise HttpError(400, "the value of header %r contains a control character (bare CR, LF or NUL); "
                            "header values must be plain text" % name[:60], close=True)
        headers.append((name, value.strip(" \t")))
    return parts[0], parts[1], parts[2], headers


_SEPARATORS = re.compile(r"[/\\]")


def normalise_path(raw_path, entity_depth=0, entity_name=""):
    """The path to forward for ``raw_path`` (percent-encoded, starting with '/').

    Without dot segments the path is returned as it came.  With them -- raw or percent-encoded
    (``..``, ``%2e%2e``, ``..%2f``; a backslash counts as a separator too) -- the decoded path is
    normalised (RFC 3986 remove_dot_segments) and returned re-encoded; if a ``..`` would remove
    one of the first ``entity_depth`` segments (the entity's own path) or climb above the root,
    :class:`HttpError` 400 is raised: the target escapes its entity.
    """
    decoded = unquote(raw_path)
    segments = _SEPARATORS.split(decoded.lstrip("/"))
    if not any(seg in (".", "..") for seg in segments):
        return raw_path
    out = []
    for seg in segments:
        if seg == "..":
            if len(out) <= entity_depth:
                raise HttpError(400, "the request target's dot segments ('..') climb out of %s; "
                                "request a path inside it" % ("the entity '%s'" % entity_name if entity_name
                                                                else "the relay's namespace"), close=True)
            out.pop()
        elif seg == ".":
            continue
        else:
            out.append(seg)
    if segments[-1] in (".", ".."):
        out.append("")  # "/a/b/.." is the directory "/a/"
    return "/" + quote("/".join(out), safe="/:@!$&'()*+,;=~-._")


def request_headers(pairs, via_host, drop):
    """The ``requestHeaders`` object: hop-by-hop, framing and token headers removed, Via extended."""
    out = {}
    via = None
    for name, value in pairs:
        low = name.lower()
        if low in HOP_BY_HOP or low in drop:
            continue
        if low == "via":
            via = value if via is None else via + ", " + value
            continue
        out[name] = out[name] + ", " + value if name in out else value
    out["Via"] = (via + ", " if via else "") + "1.1 " + via_host
    return out


def response_head(status, description, headers, via_host, length=None, chunked=False, close=False):
    """The HTTP/1.1 response head for a listener's response."""
    phrase = description or RESPONSES.get(status, b"").decode("ascii") or "Status"
    phrase = phrase.replace("\r", " ").replace("\n", " ")
    lines = ["HTTP/1.1 %d %s" % (status, phrase)]
    via = None
    for name, value in headers.items():
        if not isinstance(name, str) or not name or any(c in name for c in ":\r\n "):
            continue
        low = name.lower()
        if low == "via":
            via = str(value)
            continue
        if low in RESPONSE_SKIP:
            continue
        values = value if isinstance(value, list) else [value]
        for v in values:
            v = str(v).replace("\r", " ").replace("\n", " ")
            lines.append("%s: %s" % (name, v))
    lines.append("Via: %s1.1 %s" % (via + ", " if via else "", via_host))
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append("Content-Length: %d" % length)
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


@implementer(IResponseRouter)
class HttpDoor:
    """Shared state of the HTTP relaying door; owns the exchanges in flight by request id."""

    def __init__(self, namespace, switchboard, hybrid_factory, settings, clock):
        self.namespace = namespace
        self.switchboard = switchboard
        self.hybrid = hybrid_factory
        self.settings = settings
        self.limits = settings.limits
        self.clock = clock
        self.exchanges = {}
        self._discard_next_binary = set()
        # SOAP entities: bytes of envelopes read before their sender is authenticated, and
        # the parser that moves large envelopes off the reactor thread
        self.soap_budget = soap_door.Budget(settings.limits.soap_unauthenticated_budget)
        self.soap_parser = soap_door.EnvelopeParser(clock)
        hybrid_factory.set_response_router(self)

    def switchboard_channels(self, path):
        return self.switchboard.listeners(path)

    def buildProtocol(self, addr):
        p = HttpRelayProtocol(self)
        p.factory = self
        return p

    # -- responses over a listener's control channel ----------------------------------------

    def control_response(self, channel, fields):
        # Any control channel of the request's entity may answer: hyco-https answers on its
        # newest channel after a reconnect, not necessarily the one the request came in on.
        exchange = self.exchanges.get(fields["requestId"])
        if exchange is None or exchange.entity.path.lower() != channel.entity_path.lower():
            if fields["body"]:
                self._discard_next_binary.add(channel)
            return
        exchange.response_start(fields, via_control=True)
        if fields["body"]:
            channel._awaiting_body = exchange

    def control_binary(self, channel, payload):
        if channel in self._discard_next_binary:
            self._discard_next_binary.discard(channel)
            return
        exchange = getattr(channel, "_awaiting_body", None)
        channel._awaiting_body = None
        if exchange is None:
            return  # e.g. the empty binary message some listeners send after body:false
        exchange.response_body_whole(payload)


class HttpRelayProtocol(Protocol):
    """One client HTTP/1.1 connection; one request at a time (later ones wait, unread)."""

    def __init__(self, door):
        self.door = door
        self.buf = b""
        self.exchange = None
        self.leg = None  # rendezvous WebSocket kept for later requests of this connection
        self.leg_entity = None
        self.closed = False
        # Between requests: the keep-alive idle timer, then the head deadline from the first
        # byte of the next request (limits.http_keepalive_timeout, limits.open_handshake_timeout).
        self.wait_timer = None

    def connectionMade(self):
        self.secure = ISSLTransport.providedBy(self.transport)
        pipe.no_delay(self.transport)

    # -- waiting between requests ------------------------------------------------------------

    def _wait(self, seconds, expired):
        self._stop_waiting()
        self.wait_timer = self.door.clock.callLater(seconds, expired)

    def _stop_waiting(self):
        timer, self.wait_timer = self.wait_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _idle_expired(self):
        self.wait_timer = None
        if self.exchange is None and not self.buf and not self.closed:
            self.closed = True
            self.transport.loseConnection()

    def _head_expired(self):
        self.wait_timer = None
        if self.exchange is None and not self.closed:
            self.buf = b""
            self.send_error(408, "the request head did not arrive within %s seconds"
                            % self.door.limits.open_handshake_timeout, close=True)

    # -- reading ---------------------------------------------------------------------------

    def dataReceived(self, data):
        if self.closed:
            return
        if self.exchange is not None:
            if self.exchange.decoder is not None:
                self.exchange.feed(data)
            else:
                self.buf += data
                if len(self.buf) > self.door.limits.max_header_bytes:
                    self.transport.pauseProducing()
            return
        self.buf += data
        self._next_request()

    def _next_request(self):
        self._read_request()
        if self.exchange is None and not self.closed and self.wait_timer is None:
            if self.buf:
                self._wait(self.door.limits.open_handshake_timeout, self._head_expired)
            else:
                self._wait(self.door.limits.http_keepalive_timeout, self._idle_expired)

    def _read_request(self):
        if self.closed or self.exchange is not None:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > self.door.limits.max_header_bytes:
                self.send_error(431, "the request head is larger than %d bytes" % self.door.limits.max_header_bytes,
                                close=True)
            elif self.buf and (self.wait_timer is None or self.wait_timer.func != self._head_expired):
                self._wait(self.door.limits.open_handshake_timeout, self._head_expired)
            return
        self._stop_waiting()
        if end > self.door.limits.max_header_bytes:
            self.send_error(431, "the request head is larger than %d bytes" % self.door.limits.max_header_bytes,
                            close=True)
            return
        head, self.buf = self.buf[:end], self.buf[end + 4:]
        try:
            exchange = Exchange(self, *parse_head(head))
        except HttpError as e:
            self.send_error(e.status, e.message, close=True)
            return
        try:
            self.exchange = exchange
            exchange.start()
        except HttpError as e:
            self.exchange = None
            exchange._dispose_quietly()
            exchange.send_error(e.status, e.message, close=e.close, headers=e.headers)
            if not e.close and self.buf:
                self._read_request()
        except Exception:
            log.failure("HTTP relay request failed unexpectedly")
            self.exchange = None
            exchange._dispose_quietly()
            self.send_error(500, "internal error in the relay", close=True)

    # -- writing errors ----------------------------------------------------------------------

    def send_error(self, status, message, close=False, headers=()):
        tracking = access.tracking_id()
        body = json.dumps({"error": {"code": status, "message": message, "trackingId": tracking}}).encode()
        phrase = RESPONSES.get(status, b"Error").decode("ascii")
        head = ["HTTP/1.1 %d %s" % (status, phrase), "Content-Type: application/json",
                "Content-Length: %d" % len(body)]
        head += ["%s: %s" % h for h in headers]
        if close:
            head.append("Connection: close")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body)
        log.info("HTTP relay answered {status}: {message} (tracking {tracking})", status=status,
                       message=message, tracking=tracking)
        if close:
            self.closed = True
            pipe.close_after_flush(self.transport)

    def send_fault(self, fault, close=True, headers=()):
        phrase = RESPONSES.get(fault.status, b"Error").decode("ascii")
        head = ["HTTP/1.1 %d %s" % (fault.status, phrase), "Content-Type: %s" % fault.content_type,
                "Content-Length: %d" % len(fault.body)]
        head += ["%s: %s" % h for h in headers]
        if close:
            head.append("Connection: close")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + fault.body)
        log.info("SOAP relay answered a fault, HTTP {status}", status=fault.status)
        if close:
            self.closed = True
            pipe.close_after_flush(self.transport)

    def exchange_done(self, exchange, close):
        if self.exchange is exchange:
            self.exchange = None
        if close or self.closed:
            self.closed = True
            pipe.close_after_flush(self.transport)
            return
        self.transport.resumeProducing()
        self._next_request()

    # -- the kept rendezvous leg -------------------------------------------------------------

    def attach_leg(self, leg, entity_path, keep):
        """Use ``leg`` for this connection.  A leg the listener opened to fetch a request is
        kept for later requests; one it opened only to send a large response is closed when
        that response ends (Azure's hyco-https never reads from such a socket)."""
        if self.leg is not None:
            self.detach_leg()
        self.leg = leg
        self.leg_keep = keep
        self.leg_entity = entity_path.lower()
        leg.partner = LegReader(self)
        leg.start_data_leg()
        pipe.splice_transports(self.transport, leg.transport)
        leg.notify_on_lost(self._leg_lost)

    def detach_leg(self, code=1000, reason="response complete"):
        leg, self.leg = self.leg, None
        if leg is None:
            return
        leg.partner = None
        leg.notify_on_lost(None)
        for t in (self.transport, leg.transport):
            if getattr(t, "producer", None) is not None:
                t.unregisterProducer()
        self.transport.resumeProducing()
        leg.close(code, reason)

    def _leg_lost(self):
        leg, self.leg = self.leg, None
        if leg is not None and getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()
        if self.exchange is not None:
            self.exchange.leg_lost()

    def connectionLost(self, reason):
        self.closed = True
        self._stop_waiting()
        if self.exchange is not None:
            self.exchange.client_lost()
            self.exchange = None
        leg, self.leg = self.leg, None
        if leg is not None:
            leg.partner = None
            leg.notify_on_lost(None)
            leg.close(1001, "the HTTP client closed its connection")


class LegReader:
    """Receives what the listener sends on a request rendezvous leg (ILeg as the partner)."""

    def __init__(self, client):
        self.client = client
        self._binary = False
        self._text = []
        self._size = 0

    def begin_message(self, is_binary):
        self._binary = is_binary
        self._text = []
        self._size = 0
        if is_binary and self.client.exchange is not None:
            self.client.exchange.response_body_begin()

    def frame_begin(self, length):
        pass

    def frame_data(self, data):
        if self._binary:
            if self.client.exchange is not None:
                self.client.exchange.response_body_data(data)
        else:
            self._size += len(data)
            if self._size > MAX_RESPONSE_JSON:
                self.client.leg.close(1008, "response message larger than %d bytes" % MAX_RESPONSE_JSON)
                return
            self._text.append(data)

    def end_message(self):
        exchange = self.client.exchange
        if self._binary:
            if exchange is not None:
                exchange.response_body_end()
            return
        try:
            kind, fields = hc.decode(b"".join(self._text))
        except hc.MessageError as e:
            self.client.leg.close(1008, "bad response message: %s" % e)
            return
        if kind == "response" and exchange is not None and fields["requestId"] == exchange.id:
            exchange.response_start(fields, via_control=False)

    def close(self, code, reason):
        self.client.leg = None
        if self.client.exchange is not None:
            self.client.exchange.leg_lost()


class Exchange:
    """One HTTP request and its response."""

    def __init__(self, client, method, target, version, headers):
        self.client = client
        self.door = client.door
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.decoder = None
        self.body_small = None  # buffered body for the control-channel path
        self.soap = None  # relayd.transports.soap.door.SoapExchange for SOAP entities
        self.soap_version = None  # "1.1"/"1.2": relay-side errors become SOAP faults
        self.sent_on_leg = False
        self.channel = None
        self.rv = None
        self.id = None
        self.timer = None
        self.responding = False
        self.response_chunked = False
        self.body_received = 0
        self.request_done = False
        self.finished = False
        lowered = {}
        for name, value in headers:
            lowered.setdefault(name.lower(), []).append(value)
        self.lowered = lowered
        connection = ",".join(lowered.get("connection", [])).lower()
        self.close_after = ("close" in connection) or (version == "HTTP/1.0" and "keep-alive" not in connection)

    # -- routing and checks -----------------------------------------------------------------

    def start(self):
        door = self.door
        if self.method == "CONNECT":
            raise HttpError(405, "CONNECT is not relayed", close=True)
        if "upgrade" in self.lowered:
            raise HttpError(400, "Upgrade requests are not relayed over HTTP; WebSockets connect to /$hc/{path}",
                            close=True)
        parts = urlsplit(self.target if self.target.startswith("/") else "/" + self.target.split("/", 3)[-1])
        raw_path = parts.path
        path = unquote(raw_path)
        segments = _SEPARATORS.split(path.lstrip("/"))
        dots = next((i for i, seg in enumerate(segments) if seg in (".", "..")), None)
        if dots is not None:
            # dot segments may act only below the entity named by the segments before them
            entity, _ = door.namespace.resolve("/".join(segments[:dots])) if dots else (None, None)
            raw_path = normalise_path(raw_path, entity.path.count("/") + 1 if entity else len(segments),
                                      entity.path if entity else "")
            path = unquote(raw_path)
        entity, suffix = door.namespace.resolve(path.lstrip("/"))
        if entity is None:
            ctype = self.lowered.get("content-type", [""])[0]
            if self.method == "POST" and soap_envelope.soap_version_for_content_type(ctype):
                self.soap_version = soap_envelope.soap_version_for_content_type(ctype)
            raise HttpError(404, "no hybrid connection at '%s'" % path.strip("/"), close=self._body_expected())
        self.entity = entity
        query_pairs = parse_qsl(parts.query, keep_blank_values=True)
        self.query_token = next((v for k, v in query_pairs if k.lower() == "sb-hc-token"), None)
        self.request_target = path_and_query(raw_path, parts.query)
        self.via_host = self._via_host()
        soap_post = False
        if entity.kind == "soap":
            self.soap = soap_door.SoapExchange(self, parts.query)
            soap_post = self.soap.is_soap_post()
        if not soap_post:
            self._authorize(None)

        # body framing
        te = ",".join(self.lowered.get("transfer-encoding", [])).lower()
        length = None
        limit = door.limits.http_max_body
        if te:
            if te.strip() != "chunked":
                raise HttpError(501, "only chunked transfer-encoding is supported", close=True)
            self.decoder = _ChunkedTransferDecoder(self._body_data, self._body_end)
        elif "content-length" in self.lowered:
            values = {v.strip(" \t") for v in ",".join(self.lowered["content-length"]).split(",")}
            if not all(_DIGITS.match(v) for v in values):
                raise HttpError(400, "Content-Length must be a decimal number of bytes (digits only)", close=True)
            values = {int(v) for v in values}
            if len(values) != 1 or min(values) < 0:
                raise HttpError(400, "conflicting or negative Content-Length", close=True)
            length = values.pop()
            if length > limit:
                raise HttpError(413, "the request body (%d bytes) is larger than the relay's limit of %d bytes"
                                % (length, limit), close=True)
            if length:
                self.decoder = _IdentityTransferDecoder(length, self._body_data, self._body_end)
        self.has_body = self.decoder is not None
        self.small = not self.has_body or (length is not None and length <= SMALL_BODY)
        if self.has_body:
            self._start_body_clock()
        if soap_post:
            self.soap.collect(length)  # parse, authorise and route once the envelope is complete
        else:
            self._route()
        if self.has_body and "100-continue" in ",".join(self.lowered.get("expect", [])).lower():
            self.client.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.client.buf:
            data, self.client.buf = self.client.buf, b""
            if self.decoder is not None:
                self.feed(data)
            else:
                self.client.buf = data
                self.client.transport.pauseProducing()

    def head_token(self):
        """The token that wins over any other, given in the request head: the query's
        ``sb-hc-token`` or the ``ServiceBusAuthorization`` header (None if neither)."""
        return self.query_token or self.lowered.get("servicebusauthorization", [None])[0]

    def sender_known(self):
        """Whether the head already proves a sender with the Send right: a winning token
        (checked by _authorize) or a valid token in ``Authorization``."""
        if not self.entity.requires_client_authorization or self.head_token():
            return True
        token = self.lowered.get("authorization", [None])[0]
        if not token:
            return False
        try:
            self._verify(token)
        except sas.AuthError:
            return False  # e.g. the service's own Bearer token
        return True

    def _verify(self, token):
        door = self.door
        host = self.lowered.get("host", [None])[0]
        public = door.settings.public_url
        access.authorize(door.namespace, self.entity, token, sas.SEND,
                         access.candidate_hosts(host, urlsplit(public).hostname if public else None),
                         door.clock.seconds())

    def _authorize(self, extra_token):
        """Check the Send right (unless the entity is anonymous); strip the token headers."""
        sba = self.lowered.get("servicebusauthorization", [None])[0]
        drop = {"servicebusauthorization"}
        if self.entity.requires_client_authorization:
            token = self.query_token or sba or extra_token
            if not token and "authorization" in self.lowered:
                token = self.lowered["authorization"][0]
                drop.add("authorization")
            try:
                self._verify(token)
            except sas.AuthError as e:
                raise HttpError(e.status, str(e), close=self._body_expected())
        self.forward_headers = request_headers(self.headers, self.via_host, drop)

    def _route(self):
        """Hand the request to a listener (the kept rendezvous leg, or a balanced listener)."""
        door, entity = self.door, self.entity
        if self.client.leg is not None and self.client.leg_keep and self.client.leg_entity == entity.path.lower():
            self.id = door.switchboard.new_key()
            door.exchanges[self.id] = self
            self._send_on_leg(self.client.leg)
        else:
            self._open_rendezvous()
        self._arm_timer()
        if self.small:
            self.body_small = [] if self.has_body else None
            if not self.has_body:
                self._request_complete()

    def _body_expected(self):
        return "content-length" in self.lowered or "transfer-encoding" in self.lowered

    def _via_host(self):
        public = self.door.settings.public_url
        if public:
            return urlsplit(public).netloc
        return self.lowered.get("host", ["relayd"])[0]

    def _open_rendezvous(self):
        door = self.door
        # A bodiless small request goes whole with the offer; a small one with a body later,
        # with its body (_request_complete); a large one is fetched over the listener's leg.
        offer = RequestOffer(
            self.lowered.get("host", [None])[0], self.client.secure,
            head=(self.request_target, self.method, self.forward_headers) if self.small and not self.has_body else None,
            announce=not self.small,
        )
        try:
            self.rv = door.switchboard.open_rendezvous(
                self.entity.path, offer, timeout=self.entity_response_timeout())
        except SwitchboardError as e:
            if e.status == 404:
                raise HttpError(502, "no listener is connected to '%s'" % self.entity.path,
                                close=self._body_expected())
            retry = [("Retry-After", "%d" % e.retry_after)] if e.retry_after is not None else ()
            raise HttpError(e.status, e.message, close=True, headers=retry)
        self.id = self.rv.key
        self.address = offer.address
        self.channel = self.rv.listener
        door.exchanges[self.id] = self
        self.rv.result.addCallbacks(self._leg_arrived, self._rendezvous_failed)
        # A bodiless request went out with the offer; a small one with a body goes out when
        # the body is complete (_request_complete); a large one waits for the listener's leg.

    def entity_response_timeout(self):
        return getattr(self.entity, "response_timeout", 60.0)

    # -- request body -------------------------------------------------------------------------

    def feed(self, data):
        try:
            self.decoder.dataReceived(data)
        except Exception as e:  # malformed chunked encoding
            self.send_error(400, "malformed request body: %s" % e, close=True)
            self.abort()

    # The body must arrive within limits.http_body_timeout seconds plus one second per
    # limits.http_body_min_rate bytes received (a slow upload goes on, a dribble does not); the
    # clock restarts while the relay itself holds the client back (backpressure, or waiting for
    # the listener's leg).  body_hard_limit, when set, caps the whole allowance (SOAP envelopes
    # read before their sender is authenticated).
    body_timer = None
    body_hard_limit = None

    def _start_body_clock(self):
        self.body_started = self.door.clock.seconds()
        self.body_progress = 0
        self.body_timer = self.door.clock.callLater(self._body_allowance(), self._body_deadline)

    def _body_allowance(self):
        limits = self.door.limits
        allowed = limits.http_body_timeout + self.body_progress / limits.http_body_min_rate
        if self.body_hard_limit is not None:
            allowed = min(allowed, self.body_hard_limit)
        return allowed

    def _stop_body_clock(self):
        timer, self.body_timer = self.body_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _held_back(self):
        if getattr(self, "pending_body", None):
            return True
        leg = self.client.leg
        producer = getattr(getattr(leg, "transport", None), "producer", None) if leg is not None else None
        return bool(getattr(producer, "paused", False))

    def _body_deadline(self):
        self.body_timer = None
        if self.finished or self.decoder is None:
            return
        now = self.door.clock.seconds()
        if self._held_back() and self.body_hard_limit is None:
            self.body_started, self.body_progress = now, 0
        left = self.body_started + self._body_allowance() - now
        if left > 0:
            self.body_timer = self.door.clock.callLater(left, self._body_deadline)
            return
        self.decoder = None
        message = "the request body did not arrive in time (%d bytes in %.0f seconds)" % (
            self.body_progress, now - self.body_started)
        if self.responding:
            self.abort()
        else:
            self.fail(408, message)

    def _body_data(self, data):
        if not data:
            return
        self.body_progress += len(data)
        self._touch()  # upload progress: the response deadline counts from the last byte
        if self.soap is not None and self.soap.collecting:
            self.soap.data(data)
            return
        self.body_received += len(data)
        if self.body_received > self.door.limits.http_max_body:
            self.send_error(413, "the request body is larger than the relay's limit of %d bytes"
                            % self.door.limits.http_max_body, close=True)
            self.abort()
            return
        if self.body_small is not None:
            self.body_small.append(data)
            return
        leg = self.client.leg
        if self.sent_on_leg and leg is not None:
            leg.beginMessageFrame(len(data))
            leg.sendMessageFrameData(data)
        else:
            # the leg is not there yet: hold the client until it is
            self.pending_body = getattr(self, "pending_body", [])
            self.pending_body.append(data)
            self.client.transport.pauseProducing()

    def _body_end(self, rest):
        self.decoder = None
        self._stop_body_clock()
        if rest:
            self.client.buf = rest + self.client.buf
            self.client.transport.pauseProducing()
        if self.soap is not None and self.soap.collecting:
            self.soap.complete()
            return
        self._request_complete()

    def _request_complete(self):
        self.request_done = True
        if self.body_small is not None or (self.small and not self.has_body):
            body = b"".join(self.body_small or [])
            self.body_small = None
            if self.sent_on_leg:
                leg = self.client.leg
                if body:
                    leg.sendMessage(body, isBinary=True)
                return
            if self.rv is not None and self.has_body:
                # small request with a body: request JSON + the body as one binary message
                message = hc.encode_request(self.address, self.id, self.request_target, self.method,
                                                  self.forward_headers, True)
                if not self.channel.offer_raw(message, body):
                    self.fail(502, "the listener went away")
            return
        leg = self.client.leg
        if self.sent_on_leg and leg is not None:
            leg.endMessage()

    # -- rendezvous leg ---------------------------------------------------------------------

    def _leg_arrived(self, leg):
        self.rv = None
        if self.finished or self.client.closed:
            leg.close(1001, "the HTTP client went away")
            return
        self.client.attach_leg(leg, self.entity.path, keep=not self.small)
        if not self.small:
            self._send_on_leg(leg)

    def _rendezvous_failed(self, failure):
        failure.trap(SwitchboardError)
        self.rv = None
        if not self.finished and not self.responding:
            self.fail(504, "the listener did not answer within %d seconds" % self.entity_response_timeout())

    def _send_on_leg(self, leg):
        self.sent_on_leg = True
        message = hc.encode_request(getattr(self, "address", ""), self.id, self.request_target, self.method,
                                          self.forward_headers, self.has_body)
        leg.sendMessage(message.encode("utf-8"), isBinary=False)
        if self.small:
            return  # body (if any) goes as one message when complete
        leg.beginMessage(isBinary=True)
        pending = getattr(self, "pending_body", None)
        if pending:
            self.pending_body = []
            for chunk in pending:
                leg.beginMessageFrame(len(chunk))
                leg.sendMessageFrameData(chunk)
            self.client.transport.resumeProducing()
        if self.request_done:
            leg.endMessage()

    # -- response ---------------------------------------------------------------------------

    def _arm_timer(self):
        self._cancel_timer()
        self.timer = self.door.clock.callLater(self.entity_response_timeout(), self._timed_out)

    def _touch(self):
        if self.timer is not None and self.timer.active():
            self.timer.reset(self.entity_response_timeout())

    def _cancel_timer(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _timed_out(self):
        self.timer = None
        if self.responding:
            self.abort()  # an ongoing response went idle
        else:
            self.fail(504, "the listener did not answer within %d seconds" % self.entity_response_timeout())

    def response_start(self, fields, via_control):
        if self.responding or self.finished:
            return
        self.responding = True
        self._arm_timer()
        status = fields["statusCode"]
        self.response_has_body = fields["body"]
        transport = self.client.transport
        if not self.response_has_body:
            transport.write(response_head(status, fields["statusDescription"], fields["responseHeaders"],
                                          self.via_host, length=0, close=self.close_after))
            self.finish()
            return
        self.response_fields = fields
        self.response_via_control = via_control
        if not via_control and self.soap is not None and self.soap.rewrites:
            self.response_buffer = []  # a WSDL/XSD: rewritten whole, then sent with its length
            self.response_buffered = 0
            return
        if not via_control:
            self.response_streaming = True
            if self.version == "HTTP/1.0":
                self.close_after = True  # no chunked encoding in HTTP/1.0: the close ends the body
                self.response_chunked = False
            else:
                self.response_chunked = True
            transport.write(response_head(status, fields["statusDescription"], fields["responseHeaders"],
                                          self.via_host, chunked=self.response_chunked, close=self.close_after))

    def response_body_whole(self, payload):
        if self.soap is not None:
            payload = self.soap.rewrite(payload, self.response_fields["responseHeaders"])
        f = self.response_fields
        self.client.transport.write(response_head(f["statusCode"], f["statusDescription"], f["responseHeaders"],
                                                  self.via_host, length=len(payload), close=self.close_after))
        self.client.transport.write(payload)
        self.finish()

    def response_body_begin(self):
        pass

    response_streaming = False

    def response_body_data(self, data):
        if getattr(self, "response_buffer", None) is not None and not self.finished:
            self.response_buffered += len(data)
            if self.response_buffered > soap_door.MAX_WSDL:
                self.fail(502, "the listener's WSDL is larger than %d bytes" % soap_door.MAX_WSDL)
                return
            self._arm_timer()
            self.response_buffer.append(data)
            return
        if not self.responding or not self.response_streaming or self.finished or not data:
            return
        self._touch()
        if self.response_chunked:
            self.client.transport.write(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            self.client.transport.write(data)

    def response_body_end(self):
        if getattr(self, "response_buffer", None) is not None and not self.finished:
            body, self.response_buffer = b"".join(self.response_buffer), None
            self.response_body_whole(body)
            return
        if self.responding and self.response_streaming and not self.finished:
            if self.response_chunked:
                self.client.transport.write(b"0\r\n\r\n")
            self.finish()

    # -- ending -----------------------------------------------------------------------------

    def _dispose(self):
        self._let_go()
        self.door.exchanges.pop(self.id, None)
        rv, self.rv = self.rv, None
        if rv is not None and not rv.done:
            rv.cancel()
        for channel in self.door.switchboard_channels(self.entity.path):
            if getattr(channel, "_awaiting_body", None) is self:
                channel._awaiting_body = None

    def _let_go(self):
        """The exchange is over: stop its timers and break the cycles it is part of (the body
        decoder holds bound methods of this exchange, the SOAP helper points back at it), so
        reference counting frees it without waiting for the garbage collector."""
        self.finished = True
        self._cancel_timer()
        self._stop_body_clock()
        self.decoder = None
        if self.soap is not None:
            self.soap.release()
            self.soap.exchange = None

    def _dispose_quietly(self):
        if self.id is not None:
            self._dispose()
        else:
            self._let_go()

    def finish(self):
        self._dispose()
        if self.client.leg is not None and not self.client.leg_keep:
            self.client.detach_leg()
        if not self.request_done:
            # the listener answered before the whole request arrived: stop here
            self.client.exchange_done(self, close=True)
            return
        self.client.exchange_done(self, close=self.close_after)

    def fail(self, status, message):
        if self.finished:
            return
        self._dispose()
        if self.responding:
            self.client.exchange_done(self, close=True)
            return
        self.client.exchange = None
        self.send_error(status, message, close=True)

    def send_error(self, status, message, close, headers=()):
        """A relay-side error: a SOAP fault for SOAP requests, else JSON."""
        if self.soap_version:
            self.client.send_fault(soap_door.fault_for(self, status, message), close=close, headers=headers)
        else:
            self.client.send_error(status, message, close=close, headers=headers)

    def abort(self):
        self._dispose()
        self.client.exchange = None
        self.client.closed = True
        pipe.close_after_flush(self.client.transport)

    def leg_lost(self):
        if not self.finished:
            self.fail(502, "the listener's rendezvous connection closed before the response completed")

    def client_lost(self):
        self._dispose()


def path_and_query(path, query):
    kept = hc.strip_sb_params(query)
    return path + ("?" + kept if kept else "")
