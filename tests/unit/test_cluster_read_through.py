"""NamespaceSync.read_through (relayd/cluster/store.py) with a fake Redis link and a fake clock:
a WebSocket handshake that misses reads the path's candidate entities from Redis once (one HMGET),
applies what it finds, caches what it does not, gives up at the deadline, and bounds the reads
in flight."""

import json

from twisted.internet import defer
from twisted.internet.task import Clock

from relayd.cluster.redis_link import COMMAND_TIMEOUT, RedisDown
from relayd.cluster.store import ENTITIES, MAX_READS_IN_FLIGHT, NEGATIVE_TTL, NamespaceSync, rules_key


class Link:
    """Redis as the sync sees it: each command's answer is the test's to give."""

    def __init__(self):
        self.up = True
        self.sent = []  # (args, Deferred)
        self.on_up = []

    def command(self, *args):
        if not self.up:
            return defer.fail(RedisDown("Redis is down"))
        d = defer.Deferred()
        self.sent.append((args, d))
        return d


class Bus:
    node_id = "n2"

    def on(self, kind, handler):
        pass


class Namespace:
    def __init__(self):
        self.applied = []

    def apply_entity(self, entity):
        self.applied.append(entity)


def make():
    link, ns, clock = Link(), Namespace(), Clock()
    return link, ns, clock, NamespaceSync(ns, link, Bus(), clock)


def result(d):
    out = []
    d.addBoth(out.append)
    return out


def test_an_entity_found_is_applied_with_its_rules():
    link, ns, clock, sync = make()
    got = result(sync.read_through("/Team/Orders/sub"))
    (args, d), = link.sent
    assert args == ("HMGET", ENTITIES, "team", "team/orders", "team/orders/sub")
    d.callback([None, json.dumps({"path": "Team/Orders", "max_listeners": 4}), None])
    (args, d), = link.sent[1:]
    assert args == ("HGETALL", rules_key("team/orders"))
    d.callback(["ops", json.dumps({"key": "k" * 44, "rights": ["Listen"]})])
    assert got == [True]
    entity, = ns.applied
    assert (entity.path, entity.max_listeners, [r.name for r in entity.rules]) == ("Team/Orders", 4, ["ops"])


def test_a_path_not_found_is_cached_for_a_while():
    link, ns, clock, sync = make()
    got = result(sync.read_through("nothing/here"))
    link.sent[0][1].callback([None, None])
    assert got == [False] and ns.applied == []
    for _ in range(100):  # a storm of misses for the same path: no more reads
        assert result(sync.read_through("Nothing/Here/")) == [False]
    assert len(link.sent) == 1
    clock.advance(NEGATIVE_TTL + 0.1)
    sync.read_through("nothing/here")
    assert len(link.sent) == 2


def test_a_read_unanswered_by_the_deadline_is_a_miss_and_redis_down_is_a_miss():
    link, ns, clock, sync = make()
    got = result(sync.read_through("slow"))
    clock.advance(COMMAND_TIMEOUT - 0.1)
    assert got == []
    clock.advance(0.2)
    assert got == [False]
    link.up = False
    assert result(sync.read_through("other")) == [False]


def test_reads_in_flight_are_bounded_and_the_same_path_shares_one():
    link, ns, clock, sync = make()
    pending = [result(sync.read_through("p%d" % i)) for i in range(MAX_READS_IN_FLIGHT)]
    assert result(sync.read_through("p0")) == [] and len(link.sent) == MAX_READS_IN_FLIGHT
    assert result(sync.read_through("one-too-many")) == [False]  # at once, no read
    assert len(link.sent) == MAX_READS_IN_FLIGHT
    link.sent[0][1].callback([None])
    assert pending[0] == [False]
    sync.read_through("now-room")
    assert len(link.sent) == MAX_READS_IN_FLIGHT + 1
