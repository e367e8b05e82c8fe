"""A subscriber's bounded outgoing queue (issue 11; docs/events.rst, "Slow subscribers").

The control channel of a listener on an event entity (``kind = "oneway"`` or
``"multicast"``) writes to its transport only while the transport holds at most
:data:`EVENT_WRITE_WINDOW` unwritten bytes (the transport's ``bufferSize``: Twisted pauses
the channel's producer above it and resumes it once everything is written).  Whatever the
relay sends the subscriber beyond that window -- events, and the ``accept``/``request``
messages that come after them, so that nothing overtakes what is queued -- waits here as
whole WebSocket frames, in order, counted exactly in messages and bytes, and is written
from the producer's ``resumeProducing``.  A message that would take the queue over
``limits.subscriber_queue_messages`` messages or ``limits.subscriber_queue_bytes`` bytes is
refused (:meth:`SubscriberQueue.put` names the limit): the channel then cuts the subscriber
and :meth:`SubscriberQueue.clear` frees the queue at once.

Within the window, what a subscriber is sent during one turn of the reactor (e.g. the events
of one read from a publisher) is gathered and written once, at the end of the turn (a
:class:`Flusher` per clock), or as soon as it reaches :data:`EVENT_WRITE_WINDOW`: one send
per subscriber per turn instead of one per event (fan-out to 100 subscribers spent most of the
relay's time in those sends; docs/performance.rst, "Event fan-out").
"""

import weakref

from twisted.logger import Logger

from collections import deque

from relayd.wire import wsframe

_log = Logger(namespace="relayd.events")

# Bytes a subscriber's transport may hold unwritten before the channel queues instead (the
# transport's bufferSize): small, so that what waits for a subscriber is counted, in messages
# too, in its queue; Twisted's own default write high-water mark.
EVENT_WRITE_WINDOW = 64 * 1024

# The limits, and the close reasons of a subscriber that went over one (docs/events.rst).
QUEUE_MESSAGES = "subscriber_queue_messages"
QUEUE_BYTES = "subscriber_queue_bytes"
QUEUE_MESSAGES_REASON = ("subscriber fell behind: over limits.subscriber_queue_messages messages "
                         "unread; keep reading")
QUEUE_BYTES_REASON = "subscriber fell behind: over limits.subscriber_queue_bytes bytes unread; keep reading"
REASONS = {QUEUE_MESSAGES: QUEUE_MESSAGES_REASON, QUEUE_BYTES: QUEUE_BYTES_REASON}


def message_frames(text, body=None):
    """A control message (``text``, UTF-8 bytes) as the frame the relay sends, then ``body``
    (if not None) as one binary message: unmasked, uncompressed, as Autobahn writes them."""
    frames = wsframe.encode_header(wsframe.TEXT, True, len(text)) + text
    if body is not None:
        frames += wsframe.encode_header(wsframe.BINARY, True, len(body)) + body
    return frames


class SubscriberQueue:
    """The frames waiting for one subscriber's transport.  ``write(data)`` hands bytes to the
    transport; :meth:`block` and :meth:`unblock` follow its producer callbacks."""

    __slots__ = ("write", "max_messages", "max_bytes", "items", "messages", "bytes", "blocked",
                 "schedule", "pending", "pending_bytes", "__weakref__")

    def __init__(self, write, max_messages, max_bytes, schedule=None):
        self.write = write
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.items = deque()
        self.messages = 0
        self.bytes = 0
        self.blocked = False  # the transport holds more than its window
        # schedule(queue): have flush() called at the end of this turn (a Flusher); None: write at once
        self.schedule = schedule
        self.pending = []  # within the window, gathered this turn: written by flush()
        self.pending_bytes = 0

    def put(self, data):
        """Write ``data`` (one message's whole frames) -- at the end of this turn, with the
        others of the turn -- or queue it behind the others.  Returns None, or -- nothing
        kept -- the name of the limit it would go over."""
        if not self.blocked and not self.items:
            if self.schedule is None:
                self.write(data)
                return None
            pending = self.pending
            pending.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes >= EVENT_WRITE_WINDOW:
                self.flush()
            elif len(pending) == 1:
                self.schedule(self)
            return None
        if self.messages >= self.max_messages:
            return QUEUE_MESSAGES
        if self.bytes + len(data) > self.max_bytes:
            return QUEUE_BYTES
        self.items.append(data)
        self.messages += 1
        self.bytes += len(data)
        return None

    def flush(self):
        """Write what was gathered this turn, in one write."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        self.pending_bytes = 0
        self.write(pending[0] if len(pending) == 1 else b"".join(pending))  # may block() at once

    def block(self):
        self.blocked = True

    def unblock(self):
        """The transport wrote everything: hand it what waits, a window's worth per write (one
        write instead of one per message), until it is full again."""
        self.blocked = False
        items = self.items
        while items and not self.blocked:
            data = items.popleft()
            size = len(data)
            if items and size < EVENT_WRITE_WINDOW:
                batch = [data]
                while items and size < EVENT_WRITE_WINDOW:
                    data = items.popleft()
                    batch.append(data)
                    size += len(data)
                self.messages -= len(batch)
                data = b"".join(batch)
            else:
                self.messages -= 1
            self.bytes -= size
            self.write(data)  # may block() at once

    def clear(self):
        self.items.clear()
        self.messages = self.bytes = 0
        self.pending = []
        self.pending_bytes = 0


class Flusher:
    """Calls :meth:`SubscriberQueue.flush` of the queues that gathered frames during this turn
    of the reactor, once, at its end (``clock.callLater(0)``): one per clock, :func:`flusher`."""

    def __init__(self, clock):
        self.clock = clock
        self.dirty = []
        self.call = None

    def __call__(self, queue):
        self.dirty.append(weakref.ref(queue))
        if self.call is None:
            self.call = self.clock.callLater(0, self.flush)

    def flush(self):
        self.call = None
        dirty, self.dirty = self.dirty, []
        for ref in dirty:
            queue = ref()
            if queue is not None:
                try:
                    queue.flush()
                except Exception:  # one subscriber's failed write must not leave the others unwritten
                    _log.failure("writing a subscriber's events failed")


_flushers = weakref.WeakKeyDictionary()


def flusher(clock):
    """The :class:`Flusher` of ``clock`` (the reactor, or a test's Clock)."""
    found = _flushers.get(clock)
    if found is None:
        found = _flushers[clock] = Flusher(clock)
    return found
