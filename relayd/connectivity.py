"""Connectivity status: per entity online/offline, its listener count and since when, and a
bounded ring of recent connectivity events for watchers (``/$relayd/connectivity``,
:mod:`relayd.web.connectivity`).

The switchboard reports what happens to listeners and rendezvous (:meth:`Switchboard.report
<relayd.switchboard.Switchboard.report>` -> :meth:`Connectivity.report`); the events carry the
operation names of Azure Relay's diagnostic logs (category ``HybridConnectionsEvent``), plus
relayd's own ``EntityOnline`` / ``EntityOffline`` for an entity's first listener coming and its
last one going:

=====================================  ============================================================
``NewListenerRegistered``              a listener's control channel registered on the entity
``ListenerUnregistered``               a listener's control channel went away
``SenderListenerConnectionEstablished``  a listener accepted a sender (WebSocket, TCP, net.tcp leg)
``ListenerRejectedConnection``         a listener rejected a sender (``status``, ``reason``)
``ListenerAcceptingConnectionTimeout``  a listener did not accept a sender within the deadline
``ListenerAcceptingRequestTimeout``    ... nor an HTTP request's rendezvous
``ListenerClosingFromExpiredToken``    a listener's token expired unrenewed; it is closed
``EntityOnline`` / ``EntityOffline``   the entity's listener count went from 0 to 1 / to 0
=====================================  ============================================================

Times come from the injected clock (epoch seconds).  Events get ids ``<boot>-<n>``: ``boot``
names this process, ``n`` counts from 1, so a watcher reconnecting with ``Last-Event-ID`` gets
what it missed from the ring (:meth:`Connectivity.events_after`), or all of the ring when the
relay restarted meanwhile.  Memory is bounded: the ring keeps the last ``replay`` events, the
states one small object per entity that has had a listener (forgotten with the entity).
"""

import json
import secrets
from collections import deque

from twisted.logger import Logger

NEW_LISTENER = "NewListenerRegistered"
LISTENER_GONE = "ListenerUnregistered"
ESTABLISHED = "SenderListenerConnectionEstablished"
REJECTED = "ListenerRejectedConnection"
ACCEPT_TIMEOUT = "ListenerAcceptingConnectionTimeout"
REQUEST_TIMEOUT = "ListenerAcceptingRequestTimeout"
TOKEN_EXPIRED = "ListenerClosingFromExpiredToken"
ONLINE = "EntityOnline"
OFFLINE = "EntityOffline"

# Azure Relay's description of each operation (relayd's own for the entity transitions).
MESSAGES = {
    NEW_LISTENER: "New listener registered.",
    LISTENER_GONE: "The listener is unregistered.",
    ESTABLISHED: "The sender and listener established connection successfully.",
    REJECTED: "The listener has rejected the connection.",
    ACCEPT_TIMEOUT: "The listener accepting connection has timed out.",
    REQUEST_TIMEOUT: "The listener accepting request has timed out.",
    TOKEN_EXPIRED: "The listener is closing because the security token has expired.",
    ONLINE: "The entity is online: its first listener registered.",
    OFFLINE: "The entity is offline: its last listener went away.",
}
NAMES = tuple(MESSAGES)

# Events kept for watchers that reconnect with Last-Event-ID (at most about 1 KB each: text
# details, such as a listener's sb-hc-id or a rejection's reason, are cut at MAX_DETAIL characters).
REPLAY_EVENTS = 512
MAX_DETAIL = 256
MAX_SEQ_DIGITS = 19  # of an event id's counter in a Last-Event-ID (longer: not one of ours)


def entity_key(path):
    return path.strip("/").lower()


class Event:
    """One connectivity event: ``id`` (``<boot>-<seq>``), ``name`` (from :data:`NAMES`), the
    entity's ``key`` (lower case, for filters) and ``data`` (what a watcher gets as JSON)."""

    __slots__ = ("seq", "id", "name", "key", "data", "_json")

    def __init__(self, boot, seq, name, key, data):
        self.seq = seq
        self.id = "%s-%d" % (boot, seq)
        self.name = name
        self.key = key
        self.data = data
        self._json = None

    def json(self):
        """The data as one line of JSON (made once, shared by every watcher)."""
        if self._json is None:
            self._json = json.dumps(self.data, separators=(",", ":"))
        return self._json


class EntityState:
    __slots__ = ("path", "listeners", "since")

    def __init__(self, path, listeners, since):
        self.path = path
        self.listeners = listeners
        self.since = since  # when it went online (listeners > 0) or offline


class Connectivity:
    """The connectivity state of every entity and the event bus for watchers.

    A watcher is any object with ``deliver(event)`` (:meth:`watch` / :meth:`unwatch`); it must
    not block and must bound what it keeps itself."""

    log = Logger()

    def __init__(self, clock, replay=REPLAY_EVENTS):
        self.clock = clock
        self.started = clock.seconds()
        self.boot = secrets.token_hex(4)
        self._seq = 0
        self._ring = deque(maxlen=replay)
        self._states = {}  # entity key -> EntityState
        self._watchers = []

    # -- facts in --------------------------------------------------------------------------

    def report(self, name, path, listeners, **details):
        """The switchboard saw ``name`` happen on the entity at ``path``, which now has
        ``listeners`` listeners; ``details`` (listener, tracking_id, status, reason) go into the
        event as they are.  An entity going from 0 listeners to some, or back, adds
        ``EntityOnline`` / ``EntityOffline`` after the event."""
        key = entity_key(path)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = EntityState(path, 0, self.started)
        was_online = state.listeners > 0
        state.listeners = listeners
        self._emit(name, path, key, listeners, details)
        if (listeners > 0) != was_online:
            state.since = self.clock.seconds()
            self._emit(ONLINE if listeners > 0 else OFFLINE, path, key, listeners, {})

    def forget(self, path):
        """The entity was deleted: drop its state (a new one of the same path starts offline)."""
        self._states.pop(entity_key(path), None)

    def _emit(self, name, path, key, listeners, details):
        self._seq += 1
        data = {"event": name, "entity": path, "time": self.clock.seconds(), "listeners": listeners,
                "message": MESSAGES[name]}
        data.update((k, v[:MAX_DETAIL] if isinstance(v, str) else v) for k, v in details.items() if v is not None)
        event = Event(self.boot, self._seq, name, key, data)
        self._ring.append(event)
        for watcher in list(self._watchers):
            try:
                watcher.deliver(event)
            except Exception:
                self.log.failure("a connectivity watcher failed")

    # -- state out -------------------------------------------------------------------------

    def status(self, path, created_at=None):
        """``{"online", "listeners", "since"}`` of the entity at ``path``: since when it is
        online, or offline (for an entity that never had a listener: since the relay started,
        or since it was created when that is later)."""
        state = self._states.get(entity_key(path))
        if state is not None:
            return {"online": state.listeners > 0, "listeners": state.listeners, "since": state.since}
        since = max(self.started, created_at or 0)
        return {"online": False, "listeners": 0, "since": since}

    @property
    def last_event_id(self):
        """The id of the latest event ("<boot>-0" before the first): a watcher that passes it
        as Last-Event-ID to the stream misses nothing that happens after."""
        return "%s-%d" % (self.boot, self._seq)

    def events_after(self, last_id):
        """``(events, lost)``: the ring's events after the one with id ``last_id`` (all of them
        when ``last_id`` is from another run of the relay or malformed), and whether events the
        watcher has not seen have already left the ring."""
        boot, _, seq = (last_id or "").partition("-")
        events = list(self._ring)
        oldest = events[0].seq if events else self._seq + 1
        if boot == self.boot and seq.isdigit() and len(seq) <= MAX_SEQ_DIGITS:
            seq = int(seq)
            return [e for e in events if e.seq > seq], oldest > seq + 1
        return events, oldest > 1

    def watch(self, watcher):
        self._watchers.append(watcher)

    def unwatch(self, watcher):
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    @property
    def watchers(self):
        return len(self._watchers)
