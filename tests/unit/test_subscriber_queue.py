"""A subscriber's bounded outgoing queue (issue 11, Deliver 4), in memory with a fake clock.

Real :class:`~relayd.transports.listener.control.ControlChannel` objects of event entities
over a transport whose peer does not read until the test says so (:class:`StalledTransport`:
like Twisted's ``FileDescriptor`` it pauses its streaming producer when more than
``bufferSize`` bytes wait and resumes it once everything is written).  Events past the
channel's small write window wait in the channel's own queue, counted exactly in messages and
bytes; over ``limits.subscriber_queue_messages`` or ``limits.subscriber_queue_bytes`` the
subscriber is cut (1008, a reason naming the limit), counted, and its queue freed at once."""

from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock

from relayd import config
from relayd.limits import Limits
from relayd.switchboard import Switchboard
from relayd.transports.http.events import MULTICAST, EventPolicy, event_frames
from relayd.transports.listener.control import (
    EVENT_SENT, SUBSCRIBER_BEHIND_CODE, SUBSCRIBER_CUT, ControlChannel)
from relayd.transports.listener.subscriber_queue import (
    EVENT_WRITE_WINDOW, QUEUE_BYTES_REASON, QUEUE_MESSAGES_REASON)
from relayd.wire import wsframe

MESSAGE = b'{"request":{"id":"e1","method":"POST","body":true}}'


def event(i, size=100):
    return event_frames(MESSAGE, (b"%06d" % i).ljust(size, b"."))


class StalledTransport:
    """What the relay writes stays here until :meth:`drain` (the subscriber reads it all)."""

    bufferSize = 65536

    def __init__(self):
        self.pending = []
        self.size = 0
        self.read = b""  # what the subscriber has read so far
        self.producer = None
        self.producer_paused = False
        self.reading = True
        self.disconnected = False

    def registerProducer(self, producer, streaming):
        assert streaming and self.producer is None
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        self.pending.append(bytes(data))
        self.size += len(data)
        if self.producer is not None and not self.producer_paused and self.size > self.bufferSize:
            self.producer_paused = True
            self.producer.pauseProducing()

    clock = None  # the channel's: what it gathered this turn is written when the turn ends

    def end_turn(self):
        if self.clock is not None:
            self.clock.advance(0)

    def drain(self):
        """The turn ends, and the subscriber reads everything written so far; the producer is
        resumed (it may write more)."""
        self.end_turn()
        while self.pending:
            self.read += b"".join(self.pending)
            self.pending, self.size = [], 0
            if self.producer is not None and self.producer_paused:
                self.producer_paused = False
                self.producer.resumeProducing()

    # the transport's own reading (held by the channel's pressure producer)
    def pauseProducing(self):
        self.reading = False

    def resumeProducing(self):
        self.reading = True


class Protocol:
    """The WebSocket protocol as the channel uses it: whole frames written to the transport."""

    STATE_CONNECTING, STATE_OPEN, STATE_CLOSING = 0, 1, 2

    def __init__(self, limits, clock):
        self.state = self.STATE_OPEN
        self.factory = SimpleNamespace(limits=limits, clock=clock, switchboard=Switchboard(clock))
        self.transport = StalledTransport()
        self.transport.clock = clock
        self.closed = None

    def sendData(self, data):
        self.transport.write(data)

    def sendMessage(self, payload, isBinary=False):
        self.transport.write(wsframe.encode_header(wsframe.BINARY if isBinary else wsframe.TEXT, True,
                                                   len(payload)) + payload)

    def close(self, code, reason):
        self.closed = (code, reason)
        self.state = self.STATE_CLOSING


def subscriber(limits=None, kind=MULTICAST, switchboard=None, path="news"):
    protocol = Protocol(limits or Limits(), Clock())
    channel = ControlChannel(protocol, "relay", SimpleNamespace(path=path, kind=kind), "sub-%d" % id(protocol))
    channel.opened()
    if switchboard is not None:
        switchboard.add_listener(path, channel)
    return channel, protocol


def fill_window(channel, protocol, size=100):
    """Events until the transport is over its write window; returns how many were written."""
    n = 0
    while not protocol.transport.producer_paused:
        assert channel.send_event(event(n, size)) == EVENT_SENT
        protocol.transport.end_turn()
        n += 1
    return n


def frames_of(data):
    out, offset = [], 0
    while offset < len(data):
        header, size = wsframe.parse_header(data, offset)
        out.append((header.opcode, bytes(data[offset + size:offset + size + header.length])))
        offset += size + header.length
    return out


def test_an_event_channel_writes_through_a_small_window_and_queues_the_rest_exactly():
    channel, protocol = subscriber(Limits(subscriber_queue_messages=50))
    assert protocol.transport.bufferSize == EVENT_WRITE_WINDOW
    written = fill_window(channel, protocol)
    assert channel.queued() == (0, 0)
    sizes = []
    for i in range(written, written + 50):
        frames = event(i)
        assert channel.send_event(frames) == EVENT_SENT
        sizes.append(len(frames))
        assert channel.queued() == (len(sizes), sum(sizes))  # counted exactly, in messages and bytes
    assert protocol.transport.size <= EVENT_WRITE_WINDOW + len(event(0))  # the transport holds no more
    protocol.transport.drain()  # the subscriber reads: everything queued is written, in order
    assert channel.queued() == (0, 0) and protocol.closed is None
    got = frames_of(protocol.transport.read)
    assert [body[:6] for op, body in got if op == wsframe.BINARY] == [b"%06d" % i for i in range(written + 50)]


def test_the_message_bound_cuts_a_stalled_subscriber_and_frees_its_queue():
    switchboard, policy = Switchboard(Clock()), EventPolicy(MULTICAST)
    slow, slow_protocol = subscriber(Limits(subscriber_queue_messages=20), switchboard=switchboard)
    fast, fast_protocol = subscriber(Limits(subscriber_queue_messages=20), switchboard=switchboard)
    written = fill_window(slow, slow_protocol)
    fast_protocol.transport.drain()
    for i in range(written, written + 20):
        assert policy.deliver(switchboard, "news", event(i)) == 2
        fast_protocol.transport.drain()
    assert slow.queued()[0] == 20 and slow_protocol.closed is None
    assert policy.deliver(switchboard, "news", event(written + 20)) == 1  # the 21st: over the bound
    assert slow_protocol.closed == (SUBSCRIBER_BEHIND_CODE, QUEUE_MESSAGES_REASON)
    assert "limits.subscriber_queue_messages" in QUEUE_MESSAGES_REASON and "keep reading" in QUEUE_MESSAGES_REASON
    assert slow.queued() == (0, 0) and not slow._queue.items  # freed at once
    assert policy.counts.cut == 1
    fast_protocol.transport.drain()
    got = [body[:6] for op, body in frames_of(fast_protocol.transport.read) if op == wsframe.BINARY]
    assert got == [b"%06d" % i for i in range(written, written + 21)]  # the other one got every event


def test_the_byte_bound_cuts_a_stalled_subscriber_with_large_events():
    channel, protocol = subscriber(Limits(subscriber_queue_bytes=100_000, subscriber_queue_messages=1000))
    fill_window(channel, protocol, size=30_000)
    for i in range(3):  # 3 x 30 KB queued: under 100,000 bytes
        assert channel.send_event(event(i, 30_000)) == EVENT_SENT
    assert channel.queued()[0] == 3
    assert channel.send_event(event(3, 30_000)) == SUBSCRIBER_CUT  # a 4th is over the byte bound
    assert protocol.closed == (SUBSCRIBER_BEHIND_CODE, QUEUE_BYTES_REASON)
    assert "limits.subscriber_queue_bytes" in QUEUE_BYTES_REASON
    assert channel.queued() == (0, 0)
    for reason in (QUEUE_BYTES_REASON, QUEUE_MESSAGES_REASON):
        assert len(reason.encode()) <= wsframe.MAX_CLOSE_REASON


def test_a_subscriber_that_keeps_reading_is_never_cut():
    channel, protocol = subscriber(Limits(subscriber_queue_messages=10))
    for i in range(5000):
        assert channel.send_event(event(i)) == EVENT_SENT
        if i % 7 == 0:
            protocol.transport.drain()
    protocol.transport.drain()
    assert protocol.closed is None and channel.queued() == (0, 0)
    got = [body[:6] for op, body in frames_of(protocol.transport.read) if op == wsframe.BINARY]
    assert got == [b"%06d" % i for i in range(5000)]


def test_offers_wait_behind_queued_events_in_order():
    channel, protocol = subscriber()
    written = fill_window(channel, protocol)
    assert channel.send_event(event(written)) == EVENT_SENT  # queued
    rendezvous = SimpleNamespace(offer=SimpleNamespace(
        host="relay", secure=False, message=lambda base_url, rv: '{"accept":{"id":"a1"}}'))
    protocol.factory.base_url = lambda host, secure: "ws://relay"
    assert channel.offer(rendezvous) is True
    assert channel.offer_raw('{"request":{"id":"r1"}}', b"body") is True
    assert channel.send_event(event(written + 1)) == EVENT_SENT
    assert channel.queued()[0] == 4
    protocol.transport.drain()
    tail = frames_of(protocol.transport.read)[-7:]
    assert tail == [(wsframe.TEXT, MESSAGE), (wsframe.BINARY, event(written)[-100:]),
                    (wsframe.TEXT, b'{"accept":{"id":"a1"}}'),
                    (wsframe.TEXT, b'{"request":{"id":"r1"}}'), (wsframe.BINARY, b"body"),
                    (wsframe.TEXT, MESSAGE), (wsframe.BINARY, event(written + 1)[-100:])]


def test_a_closing_subscriber_frees_its_queue():
    channel, protocol = subscriber()
    written = fill_window(channel, protocol)
    assert channel.send_event(event(written)) == EVENT_SENT and channel.queued()[0] == 1
    channel.lost()
    assert channel.queued() == (0, 0) and protocol.transport.reading


def test_nothing_queued_follows_a_close():
    channel, protocol = subscriber()
    written = fill_window(channel, protocol)
    assert channel.send_event(event(written)) == EVENT_SENT and channel.queued()[0] == 1
    channel.close(1001, "the entity was deleted")  # e.g. the entity deleted: its close frame goes now
    assert channel.queued() == (0, 0)
    protocol.transport.drain()
    assert len([f for f in frames_of(protocol.transport.read) if f[0] == wsframe.BINARY]) == written

    channel, protocol = subscriber()
    written = fill_window(channel, protocol)
    assert channel.send_event(event(written)) == EVENT_SENT
    protocol.state = protocol.STATE_CLOSING  # the subscriber closed: Autobahn answered its close frame
    protocol.transport.drain()
    assert channel.queued() == (0, 0)
    assert len([f for f in frames_of(protocol.transport.read) if f[0] == wsframe.BINARY]) == written


def test_ordinary_listeners_keep_the_control_queue_bound():
    channel, protocol = subscriber(kind="hybrid_connection")
    assert protocol.transport.bufferSize == Limits().control_queue_max


def test_queue_limits_are_read_and_validated():
    lim = config.parse({"limits": {"subscriber_queue_bytes": 65536, "subscriber_queue_messages": 10}}).limits
    assert (lim.subscriber_queue_bytes, lim.subscriber_queue_messages) == (65536, 10)
    defaults = config.parse({}).limits
    assert (defaults.subscriber_queue_bytes, defaults.subscriber_queue_messages) == (1 << 20, 1000)
    for key, bad in (("subscriber_queue_bytes", 10), ("subscriber_queue_messages", 0),
                     ("subscriber_queue_messages", "many")):
        with pytest.raises(config.ConfigError) as e:
            config.parse({"limits": {key: bad}}, "relayd.toml")
        assert "relayd.toml: limits.%s: must be an integer from" % key in str(e.value)


def test_what_a_subscriber_is_sent_in_one_turn_is_written_once_at_its_end():
    """Fan-out writes once per subscriber per turn of the reactor, not once per event: the
    events of one turn are gathered, in order, and written together when the turn ends (or as
    soon as they fill the write window)."""
    channel, protocol = subscriber()
    transport = protocol.transport
    for i in range(10):
        assert channel.send_event(event(i)) == EVENT_SENT
    assert transport.pending == [] and channel.queued() == (0, 0)  # gathered, not queued
    transport.end_turn()
    assert transport.pending == [b"".join(event(i) for i in range(10))]  # one write
    many = (EVENT_WRITE_WINDOW // len(event(0))) + 1
    for i in range(many):  # a turn that gathers a whole window writes it at once
        channel.send_event(event(i))
    assert len(transport.pending) == 2 and len(transport.pending[1]) >= EVENT_WRITE_WINDOW
    channel.close(1000, "bye")  # what this turn gathered still goes before the close frame
    transport.drain()
    got = [body[:6] for op, body in frames_of(transport.read) if op == wsframe.BINARY]
    assert got == [b"%06d" % i for i in range(10)] + [b"%06d" % i for i in range(many)]


def test_a_failed_write_does_not_keep_the_other_subscribers_waiting():
    from twisted.internet.task import Clock

    from relayd.transports.listener.subscriber_queue import SubscriberQueue, flusher

    clock, written = Clock(), []

    def broken(data):
        raise OSError("the socket is gone")

    schedule = flusher(clock)
    queues = [SubscriberQueue(broken, 10, 10_000, schedule), SubscriberQueue(written.append, 10, 10_000, schedule)]
    for queue in queues:
        assert queue.put(b"event") is None
    clock.advance(0)
    assert written == [b"event"] and queues[0].pending == []
    assert queues[0].put(b"next") is None and queues[1].put(b"next") is None  # both gather again
    clock.advance(0)
    assert written == [b"event", b"next"]
