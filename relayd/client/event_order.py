"""Events in order to the service behind ``relayd bridge -H`` (issue 11; docs/events.rst).

The relay marks each event it hands a listener with the ``X-Relayd-Event`` request header
(:data:`relayd.wire.hc.EVENT_HEADER`).  The bridge passes ordinary requests to its local
service concurrently, but events one at a time per entity, in the order they came, so a
webhook sees them in the order a publisher sent them: an :class:`EventQueue` starts the next
event once the service has answered the one before (or :data:`EVENT_DEADLINE` passed).

The queue is bounded (:data:`MAX_QUEUED_EVENTS` events, :data:`MAX_QUEUED_EVENT_BYTES` of
bodies): an event over the bound is dropped with a warning and counted (``dropped``) -- the
relay's guarantee is at most once, nothing is stored.  ``relayd bridge`` sets the bounds and
the deadline with ``--event-queue``, ``--event-queue-bytes`` and ``--event-deadline``
(:func:`event_settings` checks them).
"""

from collections import deque

from twisted.internet import defer
from twisted.logger import Logger

from relayd.wire import hc

log = Logger(namespace="relayd.http")
MAX_QUEUED_EVENTS = 1000  # events waiting for the local service, per entity
MAX_QUEUED_EVENT_BYTES = 16 * 1024 * 1024  # their bodies, per entity
EVENT_DEADLINE = 60.0  # seconds the service may take to answer an event before the next one goes
# What each of those settings may be (relayd bridge flags).
EVENT_SETTINGS = (
    # (flag, EventQueue argument, lowest, highest, integer)
    ("--event-queue", "max_events", 1, 1_000_000, True),
    ("--event-queue-bytes", "max_bytes", 1024, 1 << 34, True),
    ("--event-deadline", "deadline", 0.1, 86400, False),
)


def event_settings(values):
    """``values``: {EventQueue argument: value} -> the same, checked; a ValueError names the
    flag, its range and the value."""
    for flag, name, low, high, integer in EVENT_SETTINGS:
        value = values[name]
        if not low <= value <= high:
            raise ValueError("%s must be %s from %s to %s, got %s" % (
                flag, "an integer" if integer else "a number of seconds", low, high, "%g" % value))
    return values


def is_event(headers):
    """Whether relayed request ``headers`` (the ``requestHeaders`` object) mark an event."""
    wanted = hc.EVENT_HEADER.lower()
    return any(name.lower() == wanted for name in headers)


class EventQueue:
    """Runs event requests one at a time, in the order they were :meth:`submit`-ted."""

    def __init__(self, clock, max_events=MAX_QUEUED_EVENTS, max_bytes=MAX_QUEUED_EVENT_BYTES,
                 deadline=EVENT_DEADLINE):
        self.clock = clock
        self.max_events, self.max_bytes, self.deadline = max_events, max_bytes, deadline
        self.waiting = deque()  # (call, size)
        self.waiting_bytes = 0
        self.running = None  # a token for the event with the service, or None
        self.pumping = False
        self.dropped = 0  # events over the bound, not passed on

    def dispatch(self, headers, size, call):
        """``call()`` (a Deferred, or a value) passes a request to the service: at once for an
        ordinary request, queued for an event (``headers`` carry the mark; ``size``: its body)."""
        if is_event(headers):
            self.submit(call, size)
        else:
            call()

    def submit(self, call, size):
        """Queue one event; False (and counted) if the queue is full."""
        if len(self.waiting) >= self.max_events or self.waiting_bytes + size > self.max_bytes:
            self.dropped += 1
            log.warn("the local service is behind: an event was dropped ({n} queued, {b} bytes; "
                     "{dropped} dropped so far); make the service answer events faster",
                     n=len(self.waiting), b=self.waiting_bytes, dropped=self.dropped)
            return False
        self.waiting.append((call, size))
        self.waiting_bytes += size
        self._pump()
        return True

    def _pump(self):
        if self.pumping:
            return  # an event answered at once, inside the loop below: it goes on
        self.pumping = True
        try:
            while self.waiting and self.running is None:
                call, size = self.waiting.popleft()
                self.waiting_bytes -= size
                token = self.running = object()
                timer = self.clock.callLater(self.deadline, self._late, token)
                d = defer.maybeDeferred(call)
                d.addErrback(lambda f: log.failure("passing an event to the local service failed", f))
                d.addBoth(self._done, token, timer)
        finally:
            self.pumping = False

    def _late(self, token):
        log.warn("the local service took over {s} s to answer an event; the next one goes now",
                 s=self.deadline)
        self._done(None, token, None)

    def _done(self, result, token, timer):
        if timer is not None and timer.active():
            timer.cancel()
        if self.running is token:
            self.running = None
            self._pump()
