"""The switchboard's record of a relayed data leg (Switchboard.track, issue 10 item 4): one per
leg of every held connection, so it must be small -- a slotted object, not a closure with its
cells (~430 bytes a leg) -- and still forget the leg exactly once."""

import gc
import tracemalloc

from twisted.internet.task import Clock

from relayd.switchboard import Switchboard

LEGS = 4000
MAX_BYTES_PER_LEG = 200  # the record and the leg's share of the entity's set (a closure: ~420)


class Leg:
    __slots__ = ("closed", "__weakref__")

    def __init__(self):
        self.closed = None

    def close(self, code, reason):
        self.closed = (code, reason)


def test_a_tracked_leg_costs_little_memory():
    sb = Switchboard(Clock())
    legs = [Leg() for _ in range(LEGS)]
    sb.track("echo", legs[0])  # the entity's set exists before the measurement
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        records = [sb.track("echo", leg) for leg in legs[1:]]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    per_leg = (after - before - 8 * len(records)) / len(records)  # minus the test's own list
    assert per_leg < MAX_BYTES_PER_LEG, "%.0f bytes per tracked leg" % per_leg
    for untrack in records:
        untrack()
        untrack()  # a second call is harmless
    sb.close_entity("echo")
    assert legs[0].closed is not None and all(leg.closed is None for leg in legs[1:])


def test_untrack_forgets_only_its_own_leg():
    sb = Switchboard(Clock())
    a, b = Leg(), Leg()
    untrack_a = sb.track("Echo", a)
    sb.track("echo/", b)
    untrack_a()
    sb.close_entity("ECHO")
    assert a.closed is None and b.closed[0] == 1001
    untrack_a()  # after the entity is gone too
