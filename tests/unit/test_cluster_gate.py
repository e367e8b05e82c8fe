"""The switchboard's cluster gate (relayd/cluster/service.py ListenerGate) with a fake clock: a
listener's handshake waits for the registry's cluster-wide count, at most ADMIT_TIMEOUT; over the
cap it is refused as on one node; with Redis down or late the node's own count decides and the
listener is remembered for re-registration."""

from twisted.internet import defer
from twisted.internet.task import Clock

from relayd.cluster.redis_link import RedisDown
from relayd.cluster.service import ADMIT_TIMEOUT, ListenerGate
from relayd.switchboard import Switchboard, TooManyListeners


class Channel:
    def __init__(self, listener_id):
        self.listener_id = listener_id
        self.closed = None

    def close(self, code, reason):
        self.closed = (code, reason)


class Registry:
    """The registry as the gate sees it: its answers are the test's to give."""

    def __init__(self):
        self.asked, self.remembered, self.released = [], [], []

    def register(self, path, listener_id, max_listeners):
        d = defer.Deferred()
        self.asked.append((path, listener_id, max_listeners, d))
        return d

    def remember(self, path, listener_id):
        self.remembered.append((path, listener_id))

    def unregister(self, path, listener_id):
        self.released.append((path, listener_id))
        return defer.succeed(None)

    def forget(self, path, listener_id):
        pass


class Link:
    up = True


def gated():
    clock, registry, link = Clock(), Registry(), Link()
    switchboard = Switchboard(clock)
    switchboard.gate = ListenerGate(registry, link, clock)
    return clock, registry, link, switchboard


def outcome(d):
    out = []
    d.addBoth(out.append)
    return out


def test_the_handshake_waits_for_the_registry_and_is_refused_over_the_cluster_cap():
    clock, registry, link, sb = gated()
    first = outcome(sb.admit_listener("few", Channel("a"), 2))
    assert first == [] and sb.listener_count("few") == 0  # not yet: the registry decides
    registry.asked[0][3].callback(True)
    assert first == [None] and sb.listener_count("few") == 1
    second = outcome(sb.admit_listener("few", Channel("b"), 2))
    registry.asked[1][3].callback(False)  # two elsewhere in the cluster already
    assert isinstance(second[0].value, TooManyListeners) and "in the cluster" in str(second[0].value)
    assert sb.listener_count("few") == 1


def test_a_registry_that_does_not_answer_in_time_leaves_the_decision_to_the_node():
    clock, registry, link, sb = gated()
    got = outcome(sb.admit_listener("few", Channel("a"), 2))
    clock.advance(ADMIT_TIMEOUT - 0.01)
    assert got == []
    clock.advance(0.02)
    assert got == [None] and sb.listener_count("few") == 1
    assert registry.remembered == [("few", "a")]


def test_with_redis_down_the_local_count_decides_at_once_and_removal_releases():
    clock, registry, link, sb = gated()
    link.up = False
    channels = [Channel(n) for n in "abc"]
    results = [outcome(sb.admit_listener("few", c, 2)) for c in channels[:2]]
    assert results == [[None], [None]] and registry.asked == []
    try:
        sb.admit_listener("few", channels[2], 2)
        raise AssertionError("the local cap was not applied")
    except TooManyListeners:
        pass
    sb.remove_listener("few", channels[0])
    assert registry.released == [("few", "a")]


def test_a_failing_registry_leaves_the_decision_to_the_node():
    clock, registry, link, sb = gated()
    first = outcome(sb.admit_listener("few", Channel("a"), 2))
    registry.asked[0][3].errback(RedisDown("gone"))
    second = outcome(sb.admit_listener("few", Channel("b"), 2))
    registry.asked[1][3].errback(ValueError("a Lua error"))  # logged
    assert first == second == [None] and sb.listener_count("few") == 2
    assert registry.remembered == [("few", "a"), ("few", "b")]
