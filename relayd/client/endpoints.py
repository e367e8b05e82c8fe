"""Where a listener's next attempt goes, and when (issue 13 item 6: failover for listeners).

A listener may be given several relay endpoints (``Endpoint=sb://a:9090/,sb://b:9091/``,
repeated ``--url``; :mod:`relayd.client.connection_string`), and a name may resolve to several
addresses.  Before each attempt the listener resolves its endpoints into :class:`Target` s
(:func:`resolve_targets`: one per endpoint and address), and an :class:`EndpointRotation` picks
one: the first at random, then round robin, skipping the targets that failed since the last
success (an attempt that failed, or a channel that dropped) until every target has; then a new
round begins.  The delay before each attempt comes from :class:`Backoff`.

Nothing here opens a socket; time and randomness are the caller's (a fake clock, a fixed rng).
"""

import ipaddress
import random
from collections import namedtuple

from twisted.internet import defer
from zope.interface import implementer
from twisted.internet.interfaces import IResolutionReceiver

# (first step in seconds, cap in seconds, jitter): 0.1, 0.2, 0.4, ... 5 s, each +-50%.
DEFAULT_BACKOFF = (0.1, 5.0, 0.5)


class Backoff:
    """Capped exponential backoff with jitter.

    The n-th delay (n = 0, 1, ...) since the last :meth:`reset` is drawn around the step
    ``c = min(cap, base * 2**n)``:

    * ``jitter=None`` ("full jitter"): uniform in ``[0, c)``;
    * ``jitter=j`` (0 < j < 1): uniform in ``[c * (1 - j), min(cap, c * (1 + j))]``, so never
      below half a step with ``j=0.5`` (no busy loop), never above ``cap``.

    ``rng`` is any object with ``random()``.
    """

    def __init__(self, base=1.0, cap=60.0, rng=None, jitter=None):
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap, got base=%r cap=%r" % (base, cap))
        if jitter is not None and not 0 < jitter < 1:
            raise ValueError("backoff jitter must be a fraction between 0 and 1 (0.5: +-50%%), got %r" % (jitter,))
        self.base = float(base)
        self.cap = float(cap)
        self.jitter = jitter
        self.rng = rng or random.SystemRandom()
        self.attempt = 0

    @classmethod
    def from_spec(cls, spec, rng=None):
        """From ``(base, cap)`` (full jitter) or ``(base, cap, jitter)``."""
        base, cap, *rest = spec
        return cls(base, cap, rng, rest[0] if rest else None)

    def ceiling(self, attempt=None):
        n = self.attempt if attempt is None else attempt
        return min(self.cap, self.base * 2 ** min(n, 64))

    def next(self):
        step = self.ceiling()
        self.attempt += 1
        if self.jitter is None:
            return self.rng.random() * step
        low, high = step * (1 - self.jitter), min(self.cap, step * (1 + self.jitter))
        return low + self.rng.random() * (high - low)

    def reset(self):
        self.attempt = 0


class Target(namedtuple("Target", "endpoint address")):
    """One place to try: ``endpoint`` a single-endpoint ConnectionInfo (its host is the Host
    header, the TLS name and the token's audience), ``address`` the IP to connect to (None:
    connect by the endpoint's name)."""

    @property
    def key(self):
        return (self.endpoint.host, self.endpoint.port, self.endpoint.secure, self.address)

    def describe(self):
        """``ws://host:port``, plus `` at ADDRESS`` when a name was resolved (no secrets)."""
        base = self.endpoint.ws_base()
        if self.address is None or self.address == self.endpoint.host:
            return base
        return "%s at %s" % (base, self.address)


class EndpointRotation:
    """Which target next: a random first one, then round robin, skipping the ones marked
    :meth:`failed` until all are (a new round), forgetting the marks on :meth:`succeeded`."""

    def __init__(self, rng=None):
        self.rng = rng or random.SystemRandom()
        self.targets = []
        self._next = None  # index of the next target to consider
        self._failed = set()  # keys of the targets that failed since the last success

    def update(self, targets):
        """The targets as resolved now (the order kept; marks kept for the ones still there)."""
        if not targets:
            raise ValueError("no relay endpoint to try")
        self.targets = list(targets)
        if self._next is None:  # (one target: no draw, the rng is the back-off's too)
            n = len(self.targets)
            self._next = 0 if n == 1 else min(int(self.rng.random() * n), n - 1)

    def pick(self):
        n = len(self.targets)
        keys = [t.key for t in self.targets]
        if all(k in self._failed for k in keys):
            self._failed.clear()  # every one failed: a new round
        for i in range(n):
            index = (self._next + i) % n
            if keys[index] not in self._failed:
                self._next = (index + 1) % n
                return self.targets[index]
        raise AssertionError("unreachable: a round always has a target left")

    def failed(self, target):
        self._failed.add(target.key)

    def succeeded(self):
        self._failed.clear()


def _is_ip(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@implementer(IResolutionReceiver)
class _Addresses:
    def __init__(self):
        self.deferred = defer.Deferred()
        self.found = []

    def resolutionBegan(self, resolution):
        pass

    def addressResolved(self, address):
        if address.host not in self.found:
            self.found.append(address.host)

    def resolutionComplete(self):
        if not self.deferred.called:
            self.deferred.callback(self.found)


def _resolve(reactor, endpoint):
    """Deferred[[Target]]: one per address of the endpoint's host."""
    resolver = getattr(reactor, "nameResolver", None)
    if _is_ip(endpoint.host) or resolver is None:
        return defer.succeed([Target(endpoint, endpoint.host if _is_ip(endpoint.host) else None)])
    receiver = _Addresses()
    try:
        resolver.resolveHostName(receiver, endpoint.host, endpoint.port)
    except Exception:
        return defer.succeed([Target(endpoint, None)])
    d = receiver.deferred
    d.addCallback(lambda found: [Target(endpoint, a) for a in found] or [Target(endpoint, None)])
    d.addErrback(lambda _: [Target(endpoint, None)])
    return d


def resolve_targets(reactor, endpoints):
    """Deferred[[Target]] of ``endpoints`` in order, each name resolved to its addresses with
    the reactor's name resolver (``getaddrinfo`` in a thread; IP literals need none, so a list
    of them resolves at once).  A name that does not resolve stays one target connected by
    name, whose attempt then fails with the resolver's error."""
    pending = [_resolve(reactor, e) for e in endpoints]
    d = defer.gatherResults(pending, consumeErrors=True)
    return d.addCallback(lambda lists: [t for targets in lists for t in targets])
