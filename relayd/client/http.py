"""Listener-side HTTP: serve relayed HTTP requests from a local HTTP service or a twisted.web
Resource (``relayd bridge -H ENTITY:http://HOST:PORT``).

Per the Hybrid Connections request protocol (see ``relayd.transports.http``; the
messages are :mod:`relayd.wire.hc`'s :class:`~relayd.wire.hc.Request` and ``encode_response``):

* a ``request`` with a method on the control channel is complete there (its body, when
  ``body`` is true, is the next binary message); the answer goes back on the control channel
  when the local response has a known length of at most 64 kB, otherwise over a rendezvous
  WebSocket to the request's ``address`` (``sb-hc-action=request``), streamed;
* a ``request`` with only ``address`` asks for a rendezvous: the agent connects there, reads
  the full request (JSON, then the body streamed as it arrives) and answers on that socket,
  which then serves the client connection's later requests too.

Bodies stream both ways with backpressure (nothing is held whole but control-channel
bodies, which are at most 64 kB).  Multi-valued response headers (Set-Cookie) are sent as
JSON lists.  The local service's 502/504 become 500 (the protocol reserves them for the
relay), and an unreachable service gives 503.  Requests of the control channel are whole: they
go through the lean client of :mod:`relayd.client.http_local`; streamed ones through ``Agent``.
"""

from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.web.client import URI, Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, RequestGenerationFailed
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory
from zope.interface import implementer

from relayd.client.event_order import EventQueue
from relayd.client.http_local import LocalClient
from relayd.client.http_body import BodyToBytes, BodyToLeg, Discard, RequestCutShort, StreamBody
from relayd.client.handshake import open_websocket
from relayd.client.websocket import RelayedConnection
from relayd.wire import hc, http1
from relayd.wire.paths import fully_decoded, has_dot_segment

log = Logger(namespace="relayd.http")
PLAIN_TEXT = {"Content-Type": "text/plain"}  # the headers of the bridge's own answers


def _response_head(response):
    """``(statusCode, statusDescription, responseHeaders)`` of a local response, for
    :func:`relayd.wire.hc.encode_response`."""
    headers = {}
    for name, values in response.headers.getAllRawHeaders():
        name = name.decode("latin-1")
        if name.lower() in http1.HOP_BY_HOP:
            continue
        values = [v.decode("latin-1") for v in values]
        headers[name] = values if len(values) > 1 else values[0]
    status = response.code
    description = response.phrase.decode("latin-1", "replace") if response.phrase else None
    if status in (502, 504):
        description = "%d %s (from the service)" % (status, description or "")
        status = 500
    return status, description, headers


class RequestLeg(RelayedConnection):
    """A rendezvous WebSocket (``sb-hc-action=request``): requests in, responses out."""

    handler = None
    _text = None
    _body = None
    _current_body = None
    response_body = None  # the BodyToLeg streaming a local response into this leg

    def onClose(self, wasClean, code, reason):
        # A request cut short (client abort, the relay's 413/502/504): end the local request.
        body, self._current_body, self._body = self._current_body, None, None
        if body is not None and not body.ended:
            body.fail("the relayed request ended early (WebSocket close %s)" % (code,))
        streaming, self.response_body = self.response_body, None
        if streaming is not None:
            streaming.leg_lost()
        super().onClose(wasClean, code, reason)

    def onConnect(self, response):
        super().onConnect(response)
        self.maxMessagePayloadSize = 0
        self.maxFramePayloadSize = 0

    # the frame reader's sink (see RelayedConnection): requests are text, bodies binary
    def message_begin(self, is_binary):
        if is_binary:
            self._body = self._current_body
        else:
            self._text = []
            self._size = 0

    def message_data(self, view):
        if self._text is not None:
            self._size += len(view)
            if self._size > hc.MAX_CONTROL_JSON:
                self.sendClose(1000)
                return
            self._text.append(bytes(view))
        elif self._body is not None:
            self._body.data(bytes(view))

    def message_end(self):
        if self._text is not None:
            text, self._text = b"".join(self._text), None
            try:
                request = hc.decode_from_relay(text, hc.MAX_CONTROL_JSON)
            except hc.MessageError as e:
                log.info("ignoring a rendezvous message that is not a request: {err}", err=e)
                return
            if not isinstance(request, hc.Request):
                log.info("ignoring a rendezvous message that is not a request")
                return
            self._current_body = StreamBody(self) if request.body else None
            self.handler.serve(request, self, self._current_body)
        elif self._body is not None:
            body, self._body = self._body, None
            body.end()


class _Pool(HTTPConnectionPool):
    """A pool that can stop pooling: once ``persistent`` is turned off, connections that
    finish their request (even ones opened before) are closed instead of kept."""

    def _putConnection(self, key, connection):
        if not self.persistent:
            connection.transport.loseConnection()
            return
        super()._putConnection(key, connection)


@implementer(IAgentEndpointFactory)
class _ServiceEndpoint:
    """The local service's endpoint, made once: Twisted's Agent makes a new one for every
    request otherwise (the host name checked through IDNA each time, a tenth of the bridge's
    CPU per small request).  TCP for http, TCP+TLS for https, as Agent's own."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.key = self.endpoint = None

    def endpointForURI(self, uri):
        key = (uri.scheme, uri.host, uri.port)
        if key != self.key:
            if uri.scheme not in (b"http", b"https"):
                raise SchemeNotSupported("unsupported scheme %r: the local service must be http or https"
                                         % (uri.scheme,))
            endpoint = endpoints.HostnameEndpoint(self.reactor, uri.host.decode("ascii"), uri.port)
            if uri.scheme == b"https":
                creator = BrowserLikePolicyForHTTPS().creatorForNetloc(uri.host, uri.port)
                endpoint = endpoints.wrapClientTLS(creator, endpoint)
            self.key, self.endpoint = key, endpoint
        return self.endpoint


class HttpHandler:
    """Answers relayed HTTP requests by calling a local HTTP service (``base_url``)."""

    def __init__(self, reactor, base_url, trust_root=None, events=None):
        self.reactor = reactor
        self.base = base_url.rstrip("/")
        self.trust_root = trust_root
        self.pool = _Pool(reactor, persistent=True)
        # Twisted keeps 2 idle connections per host by default; relayed requests arrive
        # concurrently, so keep enough to avoid a new backend connection per request.
        self.pool.maxPersistentPerHost = 64
        self.endpoints = _ServiceEndpoint(reactor)
        self.agent = Agent.usingEndpointFactory(reactor, self.endpoints, pool=self.pool)  # streamed requests
        self.local = None  # the LocalClient for whole requests (control channel), made on first use
        self._awaiting = {}  # control channel -> hc.Request waiting for its body
        # events go to the service one at a time, in order (``events``: EventQueue's bounds)
        self.events = EventQueue(reactor, **(events or {}))

    # -- control channel -------------------------------------------------------------------

    def control_request(self, listener, channel, request):
        """An :class:`relayd.wire.hc.Request` that came on the control channel."""
        self.listener = listener
        if request.is_rendezvous:
            self._rendezvous(request.address)
            return
        if request.body:
            self._awaiting[channel] = request
            return
        self.events.dispatch(request.request_headers, 0, lambda: self.serve(request, None, None, channel=channel))

    def control_binary(self, listener, data):
        channel = listener.channel
        request = self._awaiting.pop(channel, None)
        if request is None:
            return
        body = bytes(data)
        self.events.dispatch(request.request_headers, len(body),
                             lambda: self.serve(request, None, body, channel=channel))

    def _rendezvous(self, address):
        if not address:
            return
        d = open_websocket(self.reactor, address, RequestLeg, trust_root=self.listener.info.trust_root)

        def opened(leg):
            leg.handler = self
            return leg

        d.addCallbacks(opened, lambda f: log.info("request rendezvous failed: {err}", err=f.getErrorMessage()))

    # -- one request -----------------------------------------------------------------------

    def serve(self, request, leg, body, channel=None):
        """Answer ``request`` (an :class:`relayd.wire.hc.Request`) from the local service, on
        ``leg`` (the rendezvous it came on) or else on ``channel``."""
        method = (request.method or "GET").encode("ascii", "replace")
        target = request.request_target or "/"
        try:
            local = local_target(target, self.listener.path)
        except BadTarget as e:
            self._refuse(400, str(e), request, leg, body, channel)
            return
        pairs = [(name.encode("latin-1", "replace"), str(v).encode("latin-1", "replace"))
                 for name, value in request.request_headers.items() if name.lower() not in http1.HOP_BY_HOP
                 for v in (value if isinstance(value, list) else [value])]
        if leg is None:  # a whole request (``body``: bytes or None): the lean client
            d = defer.maybeDeferred(self._request_whole, method, local, pairs, body)
        else:
            headers = Headers()
            for name, value in pairs:
                headers.addRawHeader(name, value)
            d = self.agent.request(method, (self.base + local).encode("utf-8"), headers, body)
        d.addCallbacks(self._got_response, self._local_failed, callbackArgs=(request, leg, channel),
                       errbackArgs=(request, leg, channel))
        d.addErrback(lambda f: log.failure("answering request {id} failed", f, id=request.id))
        return d

    def _request_whole(self, method, local, pairs, body):
        if self.local is None:
            uri = URI.fromBytes(self.base.encode("utf-8"))
            self.local = LocalClient(self.endpoints.endpointForURI(uri), uri.netloc.rpartition(b"@")[2])
            self.local.prefix = uri.path
        return self.local.request(method, self.local.prefix + local.encode("utf-8"), pairs, body)

    def close(self):
        """Close the kept connections to the local service (a Deferred)."""
        if self.local is not None:
            self.local.close()
        return self.pool.closeCachedConnections()

    def _check_persistence(self, response):
        """Twisted's pool keeps an HTTP/1.0 connection that has no ``Connection: close`` as if it
        were persistent, but such a server (wsgiref, ``python -m http.server``) closes it; a POST
        sent on it later fails and is not retried.  Stop pooling for such a backend."""
        if not self.pool.persistent or response.version[1:] != (1, 0):
            return
        connection = b",".join(response.headers.getRawHeaders(b"connection", [])).lower()
        if b"keep-alive" not in connection:
            log.info("{base} answers with HTTP/1.0 without keep-alive: not pooling its connections",
                     base=self.base)
            self.pool.persistent = False
            self.pool.closeCachedConnections()

    def _refuse(self, status, description, request, leg, body, channel):
        """Answer without calling the local service (its request body, if any, is read and dropped)."""
        log.info("refused {method} {target!r}: {status} {description}", method=request.method,
                 target=str(request.request_target)[:200], status=status, description=description)
        if isinstance(body, StreamBody):
            body.startProducing(Discard())
        self._send_json(hc.encode_response(request.id, status, description, PLAIN_TEXT), leg, channel)

    def _local_failed(self, failure, request, leg, channel):
        if failure.check(RequestGenerationFailed) and any(
                f.check(RequestCutShort) for f in failure.value.reasons):
            log.info("{method} {target}: the relayed request ended early; the local request was aborted",
                     method=request.method, target=request.request_target)
            return
        log.info("the local service failed for {method} {target}: {err}", method=request.method,
                 target=request.request_target, err=failure.getErrorMessage())
        message = hc.encode_response(request.id, 503, "the bridge cannot reach its local service", PLAIN_TEXT)
        self._send_json(message, leg, channel)

    def _send_json(self, message, leg, channel):
        """Send the control message ``message`` (text) on ``leg``, or else on ``channel``."""
        if leg is not None:
            if leg.state != leg.STATE_OPEN:
                return  # the leg closed (the request was cut short): nobody to answer
            leg.send(message)
        elif channel is not None:
            channel.send(message)

    def _got_response(self, response, request, leg, channel):
        if leg is not None:  # Agent's (the lean client keeps only what it may)
            self._check_persistence(response)
        head = _response_head(response)
        length = response.length
        if leg is None and length is not UNKNOWN_LENGTH and length <= hc.MAX_CONTROL_BODY:
            done = defer.Deferred()
            response.deliverBody(BodyToBytes(done, hc.MAX_CONTROL_BODY))

            def send(body):
                message = hc.encode_response(request.id, *head, body=bool(body))
                if body:
                    channel.send_together(message, body)  # one write: one wake-up of the relay
                else:
                    channel.send(message)

            return done.addCallback(send)
        if leg is None:
            # large or unknown length: answer over a rendezvous to the request's address
            address = request.address
            if not address:
                response.deliverBody(BodyToBytes(defer.Deferred(), 0))
                return None
            opened = open_websocket(self.reactor, address, RequestLeg, trust_root=self.listener.info.trust_root)

            def got_leg(new_leg):
                new_leg.handler = self
                return self._stream(response, request.id, head, new_leg, close_after=True)

            return opened.addCallback(got_leg)
        return self._stream(response, request.id, head, leg)

    def _stream(self, response, request_id, head, leg, close_after=False):
        leg.send(hc.encode_response(request_id, *head, body=True))
        done = defer.Deferred()
        response.deliverBody(BodyToLeg(leg, done))
        if close_after:
            done.addCallback(lambda _: leg.sendClose(1000))
        return done


class BadTarget(ValueError):
    """A request target the bridge will not pass to its local service (answered with 400)."""


def local_target(target, entity_path):
    """The path and query to ask the local service for: ``target`` without the entity path
    prefix (``/web/a?b`` -> ``/a?b``), appended by the caller to the service's base path.

    Raises :class:`BadTarget` for a target that could leave the base path once a server
    normalises it: a ``.`` or ``..`` segment, raw or percent-encoded at any depth (also behind
    an encoded ``/`` or a backslash), a target that is not an absolute path, or one with
    control characters or spaces.
    """
    if not target.startswith("/"):
        raise BadTarget("the request target must be an absolute path starting with '/'")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in target):
        raise BadTarget("the request target contains a space or control character")
    path, sep, query = target.partition("?")
    segments = path.split("/")[1:]
    entity = [seg.lower() for seg in entity_path.strip("/").split("/")]
    if [fully_decoded(seg).lower() for seg in segments[:len(entity)]] == entity:
        segments = segments[len(entity):]
    for seg in segments:
        if has_dot_segment(seg):
            raise BadTarget("the request path has a '.' or '..' dot segment (raw or percent-encoded); "
                            "the bridge does not forward it, as it could reach outside the service's "
                            "base path: request the resolved path instead")
    path = "/" + "/".join(segments)
    return path + (sep + query if sep else "")


class HttpForwarder:
    """``-H ENTITY:URL``: a listener on ENTITY serving HTTP requests from the service at URL."""

    def __init__(self, reactor, info, entity, url, events=None):
        from relayd.client.listener import HybridListener

        self.label = "-H %s->%s" % (entity, url)
        self.handler = HttpHandler(reactor, url, events=events)
        self.listener = HybridListener(reactor, info, entity, self._no_websockets,
                                       on_status=self._status, http_handler=self.handler)

    def _no_websockets(self, request):
        return request.reject(501, "this listener serves HTTP requests only")

    def _status(self, status, detail):
        log.info("bridge {label}: {status} {detail}", label=self.label, status=status, detail=detail)

    def start(self):
        return self.listener.start()

    def stop(self):
        return defer.gatherResults([self.listener.stop(), self.handler.close()])


def serve_resource(reactor, info, entity, resource):
    """Serve a twisted.web ``resource`` on ENTITY through the relay.  The resource runs in a
    Site on an ephemeral loopback port that only this process talks to.  Fires with the
    started :class:`HttpForwarder` (``stop()`` it to end)."""
    from twisted.web.server import Site

    endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")

    def listening(port):
        forwarder = HttpForwarder(reactor, info, entity, "http://127.0.0.1:%d" % port.getHost().port)
        forwarder.site_port = port
        original_stop = forwarder.stop
        forwarder.stop = lambda: original_stop().addBoth(lambda _: port.stopListening())
        return forwarder.start().addCallback(lambda _: forwarder)

    return endpoint.listen(Site(resource)).addCallback(listening)
