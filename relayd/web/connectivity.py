"""Connectivity status over the management API (Manage token, as all of ``/$relayd/``).

* ``GET /$relayd/connectivity[?entity=PATH]`` -> ``{"entities": [{path, kind, online, listeners,
  since}], "last_event_id", "watchers"}``
* ``GET /$relayd/connectivity/{path}``       -> one entity's ``{path, kind, online, listeners, since}``
* ``GET /$relayd/connectivity/stream[?entity=PATH]`` -> a live stream of changes as server-sent
  events (``text/event-stream``)

``since`` is when the entity went online, or offline (epoch seconds); the state and the events
come from :mod:`relayd.connectivity`.

Stream wire format (WHATWG HTML, "Server-sent events")::

    retry: 2000                                  once, first
    event: EventsLost / data: {...}              when Last-Event-ID is older than the replay ring
    id: <boot>-<n>                               per event: the replayed ones after Last-Event-ID,
    event: NewListenerRegistered                   then live ones
    data: {"event":..,"entity":..,"time":..,"listeners":..,"message":..,"listener":..}
    : heartbeat                                  every HEARTBEAT_INTERVAL seconds

Bounds: at most ``limits.status_watchers`` streams at once (503 over it).  A watcher is a push
producer on its connection: while the connection's write buffer is full, events wait in the
watcher's own queue, and one that would take it past ``WATCHER_BACKLOG`` bytes drops the
watcher (the connection is aborted), as does staying unable to write for ``STALL_BEATS``
heartbeats; the socket's send buffer is fixed at ``WATCHER_SOCKET_BUFFER`` so that this happens
after little is buffered.  The stream ends when the token it was opened with expires.
"""

import json
import socket
from collections import deque

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import server
from zope.interface import implementer

from relayd import connectivity as cx
from relayd.web.replies import json_error, json_reply

STREAM = "stream"
HEARTBEAT_INTERVAL = 15.0  # seconds between heartbeat comments (they keep proxies open)
STALL_BEATS = 2  # heartbeats in a row at which a watcher could not be written to: dropped
WATCHER_BACKLOG = 64 * 1024  # bytes of events a watcher that does not read may have waiting
WATCHER_SOCKET_BUFFER = 64 * 1024  # SO_SNDBUF of a stream's socket
RETRY_MS = 2000  # the reconnection delay a watcher's EventSource is told
HEARTBEAT = b": heartbeat\n\n"
EVENTS_LOST = "EventsLost"


def frame(event):
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event.id.encode(), event.name.encode(), event.json().encode())


class ConnectivityApi:
    """``/$relayd/connectivity...`` for :class:`relayd.web.site.Management`."""

    log = Logger()

    def __init__(self, namespace, switchboard, limits, clock):
        self.namespace = namespace
        self.switchboard = switchboard
        self.connectivity = switchboard.connectivity
        self.max_watchers = limits.status_watchers
        self.clock = clock
        self.watchers = set()
        self.dropped = 0

    def status(self, entity):
        s = self.connectivity.status(entity.path, entity.created_at)
        return {"path": entity.path, "kind": entity.kind, "online": s["online"],
                "listeners": s["listeners"], "since": s["since"]}

    def describe(self, entity):
        """What an entity's description gains: ``online`` and ``online_since`` or ``offline_since``
        (the other one null)."""
        s = self.connectivity.status(entity.path, entity.created_at)
        return {"online": s["online"], "online_since": s["since"] if s["online"] else None,
                "offline_since": None if s["online"] else s["since"]}

    def render(self, request, parts, verified):
        """``parts``: the path after ``connectivity``; ``verified``: the request's Manage token."""
        if request.method != b"GET":
            return json_error(request, 405, "use GET on /$relayd/connectivity")
        wanted = _arg(request, b"entity")
        if parts == [STREAM]:
            return self._stream(request, wanted, verified)
        if parts:
            entity = self.namespace.get("/".join(parts))
            if entity is None:
                return json_error(request, 404, "no entity %r; GET /$relayd/connectivity lists them" % "/".join(parts))
            return json_reply(request, self.status(entity))
        entities = self.namespace.entities()
        if wanted is not None:
            entities = [e for e in entities if cx.entity_key(e.path) == cx.entity_key(wanted)]
        return json_reply(request, {"entities": [self.status(e) for e in entities],
                                    "last_event_id": self.connectivity.last_event_id,
                                    "watchers": len(self.watchers), "watchers_dropped": self.dropped})

    def _stream(self, request, wanted, verified):
        if not self.max_watchers:
            return json_error(request, 503, "the connectivity stream is turned off on this relay "
                                            "(limits.status_watchers = 0); GET /$relayd/connectivity still works")
        if len(self.watchers) >= self.max_watchers:
            request.setHeader(b"retry-after", b"%d" % int(HEARTBEAT_INTERVAL))
            return json_error(request, 503, "the relay already serves %d connectivity streams, its maximum "
                                            "(limits.status_watchers); close one, or raise limits.status_watchers"
                              % len(self.watchers))
        if wanted is not None and self.namespace.get(wanted) is None:
            return json_error(request, 404, "no entity %r to watch; GET /$relayd/connectivity lists them" % wanted)
        header = request.getHeader(b"last-event-id")
        last = header.decode("latin-1") if header is not None else _arg(request, b"last_event_id")
        watcher = Watcher(self, request, None if wanted is None else cx.entity_key(wanted))
        self.watchers.add(watcher)
        watcher.start(last, verified.expires)
        return server.NOT_DONE_YET

    def drop(self, watcher, why):
        self.dropped += 1
        self.log.info("connectivity watcher {peer} dropped: {why}", peer=watcher.peer, why=why)


def _arg(request, name):
    values = request.args.get(name)
    return values[0].decode("utf-8", "replace") if values else None


def _socket_of(transport):
    """The socket under ``transport`` (through protocol wrappers), or None (TLS, tests)."""
    for _ in range(4):
        handle = getattr(transport, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            return handle
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


@implementer(IPushProducer)
class Watcher:
    """One ``/$relayd/connectivity/stream`` response, registered as the producer of its request."""

    def __init__(self, api, request, key):
        self.api = api
        self.request = request
        self.key = key  # only this entity's events (lower case), or None for all
        self.peer = str(request.getClientAddress())
        self.paused = False
        self.queue = deque()
        self.queued = 0
        self.stalls = 0
        self.done = False
        self._beat = self._expiry = None

    def start(self, last_event_id, expires):
        request, api = self.request, self.api
        clock = api.clock
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        request.channel.lift_deadline()  # this response has the deadlines below instead
        sock = _socket_of(request.channel.transport)
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, WATCHER_SOCKET_BUFFER)
        request.notifyFinish().addBoth(self._gone)
        request.registerProducer(self, True)
        self._send(b"retry: %d\n\n" % RETRY_MS)
        if last_event_id is not None:
            events, lost = api.connectivity.events_after(last_event_id)
            if lost:
                self._send(b"event: %s\ndata: {\"after\":%s,\"message\":\"events after it left the replay ring; "
                           b"GET /$relayd/connectivity for the state\"}\n\n"
                           % (EVENTS_LOST.encode(), json.dumps(last_event_id).encode()))
            for event in events:
                self.deliver(event)
        api.connectivity.watch(self)
        self._beat = clock.callLater(HEARTBEAT_INTERVAL, self._heartbeat)
        self._expiry = clock.callLater(max(0.0, expires - clock.seconds()), self._token_expired)

    # -- events in -------------------------------------------------------------------------

    def deliver(self, event):
        if not self.done and (self.key is None or event.key == self.key):
            self._send(frame(event))

    def _send(self, data):
        if self.done:
            return
        if self.paused or self.queue:
            self.queue.append(data)
            self.queued += len(data)
            if self.queued > WATCHER_BACKLOG:
                self._drop("it did not read its stream (%d bytes of events waiting, the bound is %d)"
                           % (self.queued, WATCHER_BACKLOG))
            return
        self.request.write(data)

    def _heartbeat(self):
        self._beat = None
        if self.paused:
            self.stalls += 1
            if self.stalls >= STALL_BEATS:
                self._drop("it could not be written to for %d heartbeats of %g s"
                           % (self.stalls, HEARTBEAT_INTERVAL))
                return
        else:
            self._send(HEARTBEAT)
        self._beat = self.api.clock.callLater(HEARTBEAT_INTERVAL, self._heartbeat)

    def _token_expired(self):
        self._expiry = None
        if self.done:
            return
        self._send(b": the token expired; reconnect with a new one\n\n")
        self._end()
        self.request.unregisterProducer()
        self.request.finish()

    # -- IPushProducer (the connection's write buffer) -------------------------------------

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        self.stalls = 0
        while self.queue and not self.paused and not self.done:
            data = self.queue.popleft()
            self.queued -= len(data)
            self.request.write(data)

    def stopProducing(self):
        self._end()

    # -- the end ---------------------------------------------------------------------------

    def _drop(self, why):
        self.api.drop(self, why)
        self._end()
        self.request.channel.transport.abortConnection()

    def _end(self):
        """Stop watching and free what waits (the response may still be finishing)."""
        if self.done:
            return
        self.done = True
        self.queue.clear()
        self.queued = 0
        self.api.connectivity.unwatch(self)
        self.api.watchers.discard(self)
        for timer in (self._beat, self._expiry):
            if timer is not None and timer.active():
                timer.cancel()
        self._beat = self._expiry = None

    def _gone(self, _result):
        self._end()
