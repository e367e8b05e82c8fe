"""Event distribution from the client side (docs/events.rst): :func:`publish` and
:func:`subscribe`.

::

    n = yield publish(cs, "news", b"hello")   # -> subscribers it was handed to
    sub = yield subscribe(cs, "news", lambda body, content_type: print(body))
    ...
    yield sub.stop()

:func:`publish` is an HTTP ``POST`` to the relay with a Send token (``ServiceBusAuthorization``);
the relay answers ``202`` with ``X-Relayd-Delivered: N``.  A refusal raises
:class:`PublishError` naming the cause.  :func:`subscribe` is a :class:`HybridListener` whose
``request`` messages marked ``X-Relayd-Event`` go to the callback (answered ``202`` at once;
the relay ignores the answer); other requests get ``501``.
"""

import io
import json

from twisted.internet import defer
from twisted.logger import Logger
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers

from relayd.client.connection_string import ConnectionInfo
from relayd.client.listener import HybridListener
from relayd.wire import hc

log = Logger(namespace="relayd.events")
DEFAULT_CONTENT_TYPE = "application/octet-stream"
DELIVERED_HEADER = b"X-Relayd-Delivered"
PUBLISH_TIMEOUT = 30  # seconds for one POST's answer
ANSWER_MAX = 64 * 1024  # bytes of the relay's answer body kept (for the error's detail)

# what each refusal means, for PublishError's message
CAUSES = {
    401: "no token: the entity requires a Send token (pass a key with the Send right)",
    403: "the token lacks the Send right on this entity (or the entity does not exist)",
    404: "no such entity",
    405: "the entity is not an event entity (kind = \"multicast\" or \"oneway\")",
    413: "the event is larger than the entity's max_message",
    502: "no listener is connected to the oneway entity (events are not stored)",
}


class PublishError(Exception):
    """The relay refused an event: ``status`` (HTTP), ``cause`` (what it means), ``detail``
    (the relay's own words)."""

    def __init__(self, status, cause, detail=""):
        self.status, self.cause, self.detail = status, cause, detail
        super().__init__("%s %s%s" % (status, cause, (" (relay: %s)" % detail) if detail else ""))


def _detail(body):
    text = body.decode("utf-8", "replace").strip()
    try:
        value = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(value, dict):
        for name in ("error", "message", "detail"):
            if isinstance(value.get(name), str):
                return value[name][:300]
    return text[:300]


class _Answer(Protocol):
    """Collects at most ANSWER_MAX bytes of a response body (the rest is dropped)."""

    def __init__(self):
        self.done = defer.Deferred()
        self.parts, self.size = [], 0

    def dataReceived(self, data):
        if self.size < ANSWER_MAX:
            self.parts.append(data[:ANSWER_MAX - self.size])
            self.size += len(self.parts[-1])

    def connectionLost(self, reason):
        self.done.callback(b"".join(self.parts))


def _read_answer(response):
    answer = _Answer()
    response.deliverBody(answer)
    return answer.done


class Publisher:
    """Publishes events to entities of one relay over keep-alive connections, in order when
    each :meth:`publish` is awaited before the next."""

    def __init__(self, reactor, info, token_ttl=3600):
        self.reactor = reactor
        self.info = info
        self.token_ttl = token_ttl
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.agent = Agent(reactor, pool=self.pool, connectTimeout=PUBLISH_TIMEOUT)

    @defer.inlineCallbacks
    def publish(self, path, data, content_type=DEFAULT_CONTENT_TYPE):
        """POST ``data`` (bytes) as one event to ``path``; fires with the number of
        subscribers it was handed to, fails with :class:`PublishError`."""
        path = self.info.resolve_path(path)
        if isinstance(data, str):
            data = data.encode("utf-8")
        headers = Headers({b"Content-Type": [content_type.encode("latin-1")]})
        token = self.info.token_for(path, self.token_ttl)
        if token:
            headers.setRawHeaders(b"ServiceBusAuthorization", [token.encode("latin-1")])
        url = ("%s/%s" % (self.info.http_base(), path)).encode("ascii")
        d = self.agent.request(b"POST", url, headers, FileBodyProducer(io.BytesIO(data)))
        d.addTimeout(PUBLISH_TIMEOUT, self.reactor)
        response = yield d
        body = yield _read_answer(response)
        if response.code == 202:
            delivered = response.headers.getRawHeaders(DELIVERED_HEADER, [b"0"])[0]
            return int(delivered)
        cause = CAUSES.get(response.code, "the relay refused the event")
        raise PublishError(response.code, cause, _detail(body))

    def close(self):
        return self.pool.closeCachedConnections()


def _setup(connection, reactor):
    """``connection``: a :class:`ConnectionInfo` or a connection string."""
    if reactor is None:
        from twisted.internet import reactor
    info = connection if isinstance(connection, ConnectionInfo) else ConnectionInfo.parse(connection)
    return reactor, info


@defer.inlineCallbacks
def publish(connection, path, data, content_type=DEFAULT_CONTENT_TYPE, reactor=None):
    """Publish one event (see :class:`Publisher`); fires with the delivered count."""
    publisher = Publisher(*_setup(connection, reactor))
    try:
        return (yield publisher.publish(path, data, content_type))
    finally:
        yield publisher.close()


class EventHandler:
    """The HTTP side of a subscribing :class:`HybridListener`: each ``request`` carrying
    ``X-Relayd-Event`` (with its body, the next binary message) goes to
    ``callback(body, content_type)``; answered 202 at once."""

    def __init__(self, callback):
        self.callback = callback
        self._awaiting = {}  # control channel -> the request whose body comes next

    def control_request(self, listener, channel, request):
        if request.is_rendezvous:
            return  # events always come whole on the control channel
        if request.body:
            self._awaiting[channel] = request
            return
        self._handle(channel, request, b"")

    def control_binary(self, listener, data):
        request = self._awaiting.pop(listener.channel, None)
        if request is not None:
            self._handle(listener.channel, request, bytes(data))

    def _handle(self, channel, request, body):
        headers = {k.lower(): v for k, v in request.request_headers.items()}
        if hc.EVENT_HEADER.lower() not in headers:
            channel.send(hc.encode_response(request.id, 501, "Not Implemented (an event subscriber)"))
            return
        channel.send(hc.encode_response(request.id, 202, "Accepted"))
        content_type = headers.get("content-type", DEFAULT_CONTENT_TYPE)
        if isinstance(content_type, list):
            content_type = content_type[0]
        try:
            self.callback(body, content_type)
        except Exception:
            log.failure("the event callback failed")


def subscriber(connection, path, callback, reactor=None, **listener_options):
    """A (not started) :class:`HybridListener` on ``path`` calling ``callback(body,
    content_type)`` for each event; senders that try to connect are refused."""
    reactor, info = _setup(connection, reactor)
    return HybridListener(reactor, info, path, lambda request: False,
                          http_handler=EventHandler(callback), **listener_options)


def subscribe(connection, path, callback, reactor=None, **listener_options):
    """Start a :func:`subscriber`; fires with the listener once online (stop it with
    ``listener.stop()``)."""
    return subscriber(connection, path, callback, reactor, **listener_options).start()
