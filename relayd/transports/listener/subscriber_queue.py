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
"""

from collections import deque

from relayd.wire import wsframe

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

    __slots__ = ("write", "max_messages", "max_bytes", "items", "messages", "bytes", "blocked")

    def __init__(self, write, max_messages, max_bytes):
        self.write = write
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.items = deque()
        self.messages = 0
        self.bytes = 0
        self.blocked = False  # the transport holds more than its window

    def put(self, data):
        """Write ``data`` (one message's whole frames) now, or queue it behind the others.
        Returns None, or -- nothing kept -- the name of the limit it would go over."""
        if not self.blocked and not self.items:
            self.write(data)
            return None
        if self.messages >= self.max_messages:
            return QUEUE_MESSAGES
        if self.bytes + len(data) > self.max_bytes:
            return QUEUE_BYTES
        self.items.append(data)
        self.messages += 1
        self.bytes += len(data)
        return None

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
