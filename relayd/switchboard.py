"""The rendezvous switchboard: listeners per entity, pending rendezvous, deadlines, balancing.

No socket code lives here.  Transports register listener control channels
(:class:`relayd.interfaces.IListenerChannel`) and ask for a rendezvous when a sender arrives; the
switchboard picks a live listener at random (fair over time; with none here, clustered, one on
another node: :mod:`relayd.cluster.routing`), hands it the rendezvous through ``offer()`` (the door's
:class:`relayd.interfaces.IOffer`: it builds its own control message), and resolves the sender's
Deferred when the listener accepts, rejects, or the accept deadline passes.  Time comes from an
injected ``IReactorTime`` so that every deadline is tested with ``twisted.internet.task.Clock``.
"""

import random
import secrets

from twisted.internet import defer
from twisted.logger import Logger

from relayd import connectivity as cx
from relayd.limits import Limits

DEFAULT_MAX_LISTENERS = 25
ACCEPT_TIMEOUT = 30.0
MAX_SENDER_ID = 128


class SwitchboardError(Exception):
    """A rendezvous could not be made.  ``status`` is the HTTP status a front door returns;
    ``retry_after`` (seconds), when set, goes into a ``Retry-After`` header."""

    status = 500
    retry_after = None

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class TooManyListeners(SwitchboardError):
    status = 403


class NoListener(SwitchboardError):
    status = 404


class RendezvousGone(SwitchboardError):
    status = 403


class Rejected(SwitchboardError):
    """The listener rejected the rendezvous with its own status and description."""


class AcceptTimeout(SwitchboardError):
    status = 504


class SenderGone(SwitchboardError):
    status = 410


class Overloaded(SwitchboardError):
    """Too many senders are already waiting for a listener (per entity or in all): 503."""

    status = 503

    def __init__(self, message, retry_after):
        super().__init__(message)
        self.retry_after = retry_after


class Rendezvous:
    """One pending pairing of a sender with a listener.

    ``key`` is the one-time unguessable identifier that goes into the address the listener
    must connect to; ``id`` is the tracing id shown to the listener (the sender's
    ``sb-hc-id`` when given, else ``key``).  ``result`` fires with whatever the listener's
    leg passes to :meth:`accept`, or fails with a :class:`SwitchboardError`.
    """

    def __init__(self, switchboard, entity_path, key, sender_id, offer, listener):
        self._switchboard = switchboard
        self.entity_path = entity_path
        self.kind = offer.kind if offer is not None else "accept"
        self.key = key
        self.entity_key = switchboard._entity_key(entity_path)
        self.id = sender_id or key
        # The door's IOffer (it builds the control message); dropped once the listener has it.
        self.offer = offer
        self.listener = listener
        self.result = defer.Deferred(lambda d: self.cancel())
        self._timer = None
        self.done = False
        self.offered_at = switchboard.clock.seconds()  # for the setup time (accept observers)

    def _finish(self):
        self.done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.offer = None
        self._switchboard._remove_pending(self)
        if hasattr(self.listener, "rendezvous_ended"):  # a listener on another node (relayd.cluster)
            self.listener.rendezvous_ended(self)

    def fail(self, error):
        """End the rendezvous with ``error`` (a SwitchboardError): no listener took it after all."""
        if not self.done:
            self._finish()
            if self.result is not None:
                self.result.errback(error)

    def accept(self, leg):
        """The listener connected its rendezvous leg: fire the sender's Deferred with it."""
        if self.done:
            raise RendezvousGone("rendezvous %s is already completed" % (self.id,))
        self._finish()
        if self.kind == "accept":
            self._report(cx.ESTABLISHED)
        for observer in self._switchboard._accept_observers:
            observer(self, self._switchboard.clock.seconds() - self.offered_at)
        self.result.callback(leg)

    def reject(self, status, description):
        """The listener declined: the sender fails with the listener's status."""
        if self.done:
            raise RendezvousGone("rendezvous %s is already completed" % (self.id,))
        self._finish()
        self._report(cx.REJECTED, status=status, reason=description)
        self.result.errback(Rejected(description, status))

    def expire(self):
        if self.done:
            return
        self._finish()
        self._report(cx.ACCEPT_TIMEOUT if self.kind == "accept" else cx.REQUEST_TIMEOUT)
        self.result.errback(AcceptTimeout("the listener did not accept the connection within %d seconds"
                                          % (self._switchboard.accept_timeout,)))

    def _report(self, name, **details):
        # the key is spent by now (rendezvous ended), so its id may be shown to watchers
        self._switchboard.report(name, self.entity_path, listener=_listener_id(self.listener),
                                 tracking_id=self.id, **details)

    def withdraw(self):
        """The sender will not look at ``result`` (an HTTP request answered on the control
        channel): end it without firing ``result`` (no failure made and handled per request)."""
        if not self.done:
            self._finish()
            self.result = None  # and its callbacks with it (they hold the sender)

    def cancel(self):
        """The sender went away before the listener accepted."""
        if not self.done:
            self._finish()
            if not self.result.called:
                self.result.errback(SenderGone("the sender disconnected before the listener accepted"))


def _listener_id(channel):
    return getattr(channel, "listener_id", None)  # IListenerChannel.listener_id (test doubles may lack it)


class Tracked:
    """What :meth:`Switchboard.track` returns: calling it forgets the leg (once; later calls do
    nothing).  One per leg of every held connection: a slotted object (~56 bytes) rather than a
    closure and its cells (~430)."""

    __slots__ = ("_closables", "_key", "_closable")

    def __init__(self, closables, key, closable):
        self._closables = closables
        self._key = key
        self._closable = closable

    def __call__(self):
        closable, self._closable = self._closable, None
        legs = self._closables.get(self._key) if closable is not None else None
        if legs is not None:
            legs.discard(closable)
            if not legs:
                del self._closables[self._key]


class Switchboard:
    """Listeners per entity path, pending rendezvous by key, and online/offline events."""

    log = Logger()

    def __init__(self, clock, accept_timeout=ACCEPT_TIMEOUT, rng=None, limits=None, connectivity=None):
        limits = limits or Limits()
        self.clock = clock
        # online/offline, listener counts and the events watchers see (relayd.connectivity)
        self.connectivity = connectivity or cx.Connectivity(clock)
        self.accept_timeout = accept_timeout
        # Pending rendezvous (senders waiting for a listener to accept), per entity and in all.
        self.max_pending_per_entity = limits.max_pending_rendezvous_per_entity
        self.max_pending = limits.max_pending_rendezvous
        self.retry_after = limits.rendezvous_retry_after
        self._pending_by_entity = {}  # entity key -> number of pending rendezvous
        # Balancing needs fairness, not secrecy: a seeded PRNG (rendezvous keys use secrets).
        self._rng = rng or random.Random(secrets.randbits(64))
        self._listeners = {}  # entity key -> list of IListenerChannel
        self._pending = {}  # rendezvous key -> Rendezvous
        self._closables = {}  # entity key -> set of IClosable (data legs)
        self._observers = []
        self._accept_observers = []
        self.gate = None  # clustered: relayd.cluster.service.ListenerGate (listeners counted cluster-wide)
        self.router = None  # clustered: relayd.cluster.routing.Router (listeners on other nodes)

    @staticmethod
    def _entity_key(path):
        return path.strip("/").lower()

    # -- observers ---------------------------------------------------------------------

    def add_observer(self, observer):
        """``observer(event, entity_path, listener_count)`` with event "online" / "offline"."""
        self._observers.append(observer)

    def add_accept_observer(self, observer):
        """``observer(rendezvous, seconds)`` when a listener accepts, ``seconds`` after the offer."""
        self._accept_observers.append(observer)

    def _notify(self, event, path):
        count = self.listener_count(path)
        for observer in list(self._observers):
            try:
                observer(event, path, count)
            except Exception:
                self.log.failure("switchboard observer failed")

    def report(self, name, path, **details):
        """Tell :attr:`connectivity` that ``name`` (a :mod:`relayd.connectivity` event) happened
        on the entity at ``path``, with ``details`` (listener, tracking_id, status, reason)."""
        self.connectivity.report(name, path, self.listener_count(path), **details)

    # -- listeners ---------------------------------------------------------------------

    def add_listener(self, path, channel, max_listeners=DEFAULT_MAX_LISTENERS):
        key = self._entity_key(path)
        live = self._listeners.setdefault(key, [])
        if channel in live:
            return
        if max_listeners and len(live) >= max_listeners:
            raise TooManyListeners(
                "entity '%s' already has %d listeners, its maximum (max_listeners); "
                "close a listener or raise max_listeners" % (path, len(live))
            )
        live.append(channel)
        self._notify("online", path)
        self.report(cx.NEW_LISTENER, path, listener=_listener_id(channel))

    def admit_listener(self, path, channel, max_listeners=DEFAULT_MAX_LISTENERS):
        """:meth:`add_listener` (None, or TooManyListeners raised); with a :attr:`gate`, a Deferred
        that fires once the gate admitted and added the channel, or fails with TooManyListeners."""
        if self.gate is None:
            return self.add_listener(path, channel, max_listeners)
        return self.gate.admit(self, path, channel, max_listeners)

    def remove_listener(self, path, channel):
        key = self._entity_key(path)
        live = self._listeners.get(key)
        if not live or channel not in live:
            return
        live.remove(channel)
        if self.gate is not None:
            self.gate.release(path, _listener_id(channel))
        if not live:
            del self._listeners[key]
        self._notify("offline", path)
        self.report(cx.LISTENER_GONE, path, listener=_listener_id(channel))

    def listener_count(self, path):
        return len(self._listeners.get(self._entity_key(path), ()))

    def listeners(self, path):
        return list(self._listeners.get(self._entity_key(path), ()))

    def listener_counts(self):
        return {key: len(live) for key, live in self._listeners.items()}

    def cluster_listener_count(self, path):
        """:meth:`listener_count` on every node of a cluster (with a :attr:`gate`)."""
        return self.listener_count(path) + (self.gate.remote_count(path) if self.gate is not None else 0)

    def cluster_listener_counts(self):
        """:meth:`listener_counts` on every node of a cluster (with a :attr:`gate`)."""
        return self.gate.with_remote(self.listener_counts()) if self.gate is not None else self.listener_counts()

    # -- rendezvous --------------------------------------------------------------------

    def new_key(self):
        return secrets.token_hex(16)

    def open_rendezvous(self, path, offer=None, sender_id=None, timeout=None, listener=None):
        """Pick a listener and offer it a rendezvous for ``offer`` (an
        :class:`relayd.interfaces.IOffer`; its ``kind`` is the rendezvous kind, "accept" when
        None).  Returns the :class:`Rendezvous`.  With ``listener`` (one of the entity's
        channels) the offer goes to that one only (a net.tcp publisher's leg to each subscriber).

        Raises :class:`NoListener` when no live listener takes the offer.
        """
        if sender_id is not None and len(sender_id) > MAX_SENDER_ID:
            raise SwitchboardError("sb-hc-id is longer than %d characters" % (MAX_SENDER_ID,), status=400)
        entity_key = self._entity_key(path)
        candidates = list(self._listeners.get(entity_key, ()))
        if listener is not None:  # one of the entity's channels here, or on another node (router.pinned)
            candidates = [listener] if listener in candidates or hasattr(listener, "rendezvous_ended") else []
        elif not candidates and self.router is not None:  # none here: one on another node
            candidates = self.router.candidates(path)
        if candidates:
            self._check_caps(path, entity_key)
        while candidates:
            listener = self._rng.choice(candidates)
            candidates.remove(listener)
            rv = Rendezvous(self, path, self.new_key(), sender_id, offer, listener)
            self._add_pending(rv)
            if listener.offer(rv) is False:
                self._remove_pending(rv)
                continue
            rv.offer = None  # the offer is encoded and sent: keep none of the handshake
            wait = self.accept_timeout if timeout is None else timeout
            rv._timer = self.clock.callLater(wait, rv.expire)
            return rv
        raise NoListener("no listener is connected to '%s'" % (path,))

    def choose(self, path, attempt):
        """Balance one delivery (an event of a ``oneway`` entity) over the entity's listeners:
        ``attempt(listener)`` on one picked at random, then on the others while it returns
        False.  Returns the listener that took it, or None."""
        candidates = list(self._listeners.get(self._entity_key(path), ()))
        while candidates:
            listener = self._rng.choice(candidates)
            candidates.remove(listener)
            if attempt(listener):
                return listener
        return None

    def _check_caps(self, path, entity_key):
        waiting = self._pending_by_entity.get(entity_key, 0)
        if self.max_pending_per_entity and waiting >= self.max_pending_per_entity:
            raise Overloaded(
                "%d senders are already waiting for a listener of '%s' to accept, its maximum "
                "(limits.max_pending_rendezvous_per_entity); retry later, or add listeners that accept "
                "faster" % (waiting, path), self.retry_after)
        if self.max_pending and len(self._pending) >= self.max_pending:
            raise Overloaded("%d senders are waiting for listeners to accept, the relay's maximum (limits."
                             "max_pending_rendezvous); retry later" % (len(self._pending),), self.retry_after)

    def _add_pending(self, rv):
        self._pending[rv.key] = rv
        self._pending_by_entity[rv.entity_key] = self._pending_by_entity.get(rv.entity_key, 0) + 1

    def _remove_pending(self, rv):
        if self._pending.pop(rv.key, None) is None:
            return
        left = self._pending_by_entity.get(rv.entity_key, 0) - 1
        if left > 0:
            self._pending_by_entity[rv.entity_key] = left
        else:
            self._pending_by_entity.pop(rv.entity_key, None)

    def find(self, key):
        """The pending rendezvous with this key, or raise :class:`RendezvousGone`."""
        rv = self._pending.get(key)
        if rv is None:
            raise RendezvousGone("the rendezvous id is unknown, already used, or its accept deadline passed")
        return rv

    def pending_count(self, path=None):
        """Pending rendezvous in all, or of the entity at ``path``."""
        if path is None:
            return len(self._pending)
        return self._pending_by_entity.get(self._entity_key(path), 0)

    # -- entity lifecycle --------------------------------------------------------------

    def track(self, path, closable):
        """Remember a data leg so that deleting the entity closes it.  Returns an untrack callable
        (a :class:`Tracked`)."""
        key = self._entity_key(path)
        self._closables.setdefault(key, set()).add(closable)
        return Tracked(self._closables, key, closable)

    def close_entity(self, path, code=1001, reason="the entity was deleted or disabled"):
        """Close every listener and data leg of an entity and fail its pending rendezvous; its
        connectivity state is forgotten (deleted, or the relay stops)."""
        key = self._entity_key(path)
        for rv in [rv for rv in self._pending.values() if self._entity_key(rv.entity_path) == key]:
            rv._finish()
            rv.result.errback(SwitchboardError(reason, status=404))
        for channel in list(self._listeners.get(key, ())):
            channel.close(code, reason)
            self.remove_listener(path, channel)
        for leg in list(self._closables.pop(key, ())):
            leg.close(code, reason)
        self.connectivity.forget(path)
