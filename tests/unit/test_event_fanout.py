"""Event fan-out in memory (issue 11): :meth:`EventPolicy.deliver` over a real
:class:`~relayd.switchboard.Switchboard` (fake clock, seeded balancing) and real
:class:`~relayd.transports.listener.control.ControlChannel` objects whose WebSocket protocol is
a recording stand-in (what the channel writes, and whether its queue is over its bound); the
event's frames are checked byte for byte with :mod:`relayd.wire.wsframe`'s parser."""

import random

from twisted.internet.task import Clock

from relayd.limits import Limits
from relayd.switchboard import Switchboard
from relayd.transports.http.events import MULTICAST, ONEWAY, EventPolicy, event_frames
from relayd.transports.listener.control import EVENT_NOT_SENT, EVENT_SENT, SUBSCRIBER_BEHIND_CODE, SUBSCRIBER_CUT
from relayd.transports.listener.subscriber_queue import QUEUE_MESSAGES_REASON
from relayd.wire import wsframe
from tests.unit.test_subscriber_queue import fill_window, subscriber as open_subscriber

MESSAGE = b'{"request":{"id":"e1","method":"POST","body":true}}'
BODY = b"the event"
FRAMES = event_frames(MESSAGE, BODY)


def subscriber(switchboard, path, behind=False):
    """A subscriber of ``path``; ``behind``: its transport is over its window and its queue
    (limits.subscriber_queue_messages = 1) full."""
    channel, protocol = open_subscriber(Limits(subscriber_queue_messages=1), switchboard=switchboard, path=path)
    if behind:
        fill_window(channel, protocol)
        assert channel.send_event(FRAMES) == EVENT_SENT and channel.queued()[0] == 1
    transport = protocol.transport
    transport.pending, transport.size = [], 0  # what the test looks at: what comes from now on
    protocol.sent = transport.pending
    return channel, protocol


def frames_of(data):
    """(opcode, fin, payload) of each whole, unmasked frame in ``data``."""
    out, offset = [], 0
    while offset < len(data):
        parsed = wsframe.parse_header(data, offset)
        assert parsed is not None, "a cut frame"
        header, size = parsed
        assert not header.masked and offset + size + header.length <= len(data)
        out.append((header.opcode, header.fin, bytes(data[offset + size:offset + size + header.length])))
        offset += size + header.length
    return out


def events_in(protocol):
    """How many events (a request message and its body) were written to ``protocol``, once the turn ended."""
    protocol.transport.end_turn()
    frames = frames_of(b"".join(protocol.sent))
    assert frames == [(wsframe.TEXT, True, MESSAGE), (wsframe.BINARY, True, BODY)] * (len(frames) // 2)
    return len(frames) // 2


def test_event_frames_are_a_text_message_then_a_binary_body():
    assert frames_of(FRAMES) == [(wsframe.TEXT, True, MESSAGE), (wsframe.BINARY, True, BODY)]
    big = bytes(range(256)) * 300  # 76,800 bytes: the 64-bit length form
    assert frames_of(event_frames(MESSAGE, big)) == [(wsframe.TEXT, True, MESSAGE), (wsframe.BINARY, True, big)]
    assert frames_of(event_frames(MESSAGE, b"")) == [(wsframe.TEXT, True, MESSAGE)]  # no body message


def test_send_event_writes_the_frames():
    channel, protocol = subscriber(Switchboard(Clock()), "news")
    assert channel.send_event(FRAMES) == EVENT_SENT
    protocol.transport.end_turn()
    assert protocol.sent == [FRAMES]
    assert channel.queued() == (0, 0)


def test_a_subscriber_over_its_bound_is_cut_and_gets_nothing_more():
    channel, protocol = subscriber(Switchboard(Clock()), "news", behind=True)
    assert channel.send_event(FRAMES) == SUBSCRIBER_CUT
    assert protocol.closed == (SUBSCRIBER_BEHIND_CODE, QUEUE_MESSAGES_REASON) and protocol.sent == []
    assert channel.send_event(FRAMES) == EVENT_NOT_SENT  # closing: neither sent nor cut again


def test_multicast_hands_the_same_bytes_to_everyone_and_cuts_only_the_slow_one():
    switchboard = Switchboard(Clock())
    fast = [subscriber(switchboard, "news") for _ in range(3)]
    slow = subscriber(switchboard, "news", behind=True)
    policy = EventPolicy(MULTICAST)
    assert policy.deliver(switchboard, "news", FRAMES) == 3
    for _, protocol in fast:
        protocol.transport.end_turn()
        assert protocol.sent == [FRAMES]  # encoded once, the same bytes
    assert slow[1].closed[0] == SUBSCRIBER_BEHIND_CODE
    assert policy.deliver(switchboard, "news", FRAMES) == 3
    counts = policy.counts
    assert (counts.published, counts.deliveries, counts.cut, counts.dropped) == (2, 6, 1, 0)


def test_multicast_with_no_subscriber_is_counted_as_dropped():
    policy = EventPolicy(MULTICAST)
    assert policy.deliver(Switchboard(Clock()), "news", FRAMES) == 0
    assert (policy.counts.published, policy.counts.dropped) == (1, 1)


def test_oneway_gives_each_event_to_exactly_one_balanced_listener():
    switchboard = Switchboard(Clock(), rng=random.Random(7))
    listeners = [subscriber(switchboard, "jobs") for _ in range(2)]
    policy = EventPolicy(ONEWAY)
    for _ in range(100):
        assert policy.deliver(switchboard, "jobs", FRAMES) == 1
    got = [events_in(protocol) for _, protocol in listeners]
    assert sum(got) == 100 and min(got) >= 30, got


def test_oneway_skips_a_listener_that_fell_behind():
    switchboard = Switchboard(Clock(), rng=random.Random(1))
    slow = subscriber(switchboard, "jobs", behind=True)
    ok = subscriber(switchboard, "jobs")
    policy = EventPolicy(ONEWAY)
    for _ in range(10):
        assert policy.deliver(switchboard, "jobs", FRAMES) == 1
    assert events_in(ok[1]) == 10 and slow[1].sent == [] and slow[1].closed is not None
    assert policy.counts.cut == 1


def test_oneway_with_no_listener_delivers_nothing():
    policy = EventPolicy(ONEWAY)
    assert policy.deliver(Switchboard(Clock()), "jobs", FRAMES) == 0
    assert policy.counts.dropped == 1


def test_choose_tries_the_others_when_one_refuses():
    switchboard = Switchboard(Clock(), rng=random.Random(3))
    for name in "abc":
        switchboard.add_listener("p", name)
    tried = []
    assert switchboard.choose("p", lambda l: tried.append(l) or l == "c") == "c"
    assert tried[-1] == "c" and len(set(tried)) == len(tried)
    assert switchboard.choose("p", lambda l: False) is None
    assert switchboard.choose("nobody", lambda l: True) is None
