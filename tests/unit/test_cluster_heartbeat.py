"""The registry's heartbeat on a fake clock (relayd/cluster/registry.py): a SET with a PX expiry
every ``heartbeat`` seconds while Redis is up, none while it is down, the key and entries deleted
on a clean stop.  The Redis link is a recorder here; the Lua and Redis's own expiry are tested
against a real redis-server in test_cluster_link.py."""

from twisted.internet import defer
from twisted.internet.task import Clock

from relayd.cluster.registry import CLEAR, NODE_KEY, OTHERS, REGISTER, Registry


class RecordingLink:
    def __init__(self):
        self.up, self.sent, self.on_up = True, [], []

    def command(self, *args):
        self.sent.append(args)
        return defer.succeed([] if args[0] in ("SMEMBERS", "MGET") else None)

    def eval(self, script, keys, args):
        self.sent.append(("EVAL",) + tuple(keys))
        return defer.succeed(0)


class Bus:
    def __init__(self):
        self.handlers = {}

    def on(self, kind, handler):
        self.handlers[kind] = handler

    def broadcast(self, kind, payload):
        return defer.succeed(1)


def heartbeats(link):
    return [args for args in link.sent if args[0] == "SET"]


def test_a_heartbeat_every_period_with_the_expiry_while_redis_is_up():
    clock, link = Clock(), RecordingLink()
    registry = Registry(link, Bus(), clock, "n1", "ws://a:1", heartbeat=1.0, expiry=3.0)
    registry.start()
    assert heartbeats(link) == [("SET", NODE_KEY + "n1", heartbeats(link)[0][2], "PX", 3000, "GET")]
    clock.advance(0.99)
    assert len(heartbeats(link)) == 1
    clock.advance(0.01)
    assert len(heartbeats(link)) == 2
    link.up = False
    clock.advance(5)
    assert len(heartbeats(link)) == 2  # nothing sent while down: the key expires, the node looks dead
    link.up = True
    clock.advance(1)
    assert len(heartbeats(link)) == 3
    link.sent.clear()
    registry.stop()
    clock.advance(10)
    assert ("DEL", NODE_KEY + "n1", "relayd:node-entities:n1") in link.sent and not heartbeats(link)


class KeyLink(RecordingLink):
    """Redis's answers to the heartbeat's ``SET ... GET``: the key's previous value, or None once
    it has expired (``expire()``); every EVAL recorded with its script; REGISTER admits."""

    def __init__(self):
        super().__init__()
        self.value, self.scripts = None, []

    def command(self, *args):
        if args[0] == "SET":
            self.sent.append(args)
            previous, self.value = self.value, args[2]
            return defer.succeed(previous)
        return super().command(*args)

    def eval(self, script, keys, args):
        self.scripts.append((script, tuple(keys), tuple(args)))
        return defer.succeed(1 if script == REGISTER else [])

    def expire(self):
        self.value = None


class AnnouncingBus(Bus):
    def __init__(self):
        super().__init__()
        self.sent = []

    def broadcast(self, kind, payload):
        self.sent.append((kind, payload))
        return super().broadcast(kind, payload)


def registrations(link):
    return [args[0] for script, keys, args in link.scripts if script == REGISTER]


def test_a_heartbeat_that_finds_its_key_expired_registers_and_announces_the_nodes_listeners_again():
    clock, link, bus = Clock(), KeyLink(), AnnouncingBus()
    registry = Registry(link, bus, clock, "n1", "ws://a:1", heartbeat=1.0, expiry=3.0)
    registry.start()  # a fresh node: no key before its first beat, nothing to register again
    assert registry.register("Echo", "L1").result is True
    assert registry.register("other", "L2").result is True
    assert registrations(link) == ["n1/L1", "n1/L2"]
    link.scripts.clear(), bus.sent.clear()
    clock.advance(1)  # the key was there: nothing more
    assert registrations(link) == [] and bus.sent == []
    link.expire()  # the process was stopped past the expiry; the other nodes swept its entries
    clock.advance(1)
    assert sorted(registrations(link)) == ["n1/L1", "n1/L2"]
    assert CLEAR not in [s for s, _, _ in link.scripts]  # HSET again: a listener registering now stays
    assert sorted((p["event"], p["entity"], p["listener"]) for _, p in bus.sent) == [
        ("online", "Echo", "L1"), ("online", "other", "L2")]  # the other nodes' views refreshed
    assert OTHERS in [s for s, _, _ in link.scripts]  # and this node's view of theirs
    link.scripts.clear(), bus.sent.clear()
    clock.advance(1)
    assert registrations(link) == [] and bus.sent == []


def test_a_node_seen_again_after_it_was_dead_has_its_listeners_read_again():
    clock, link = Clock(), KeyLink()
    registry = Registry(link, Bus(), clock, "n2", "ws://b:1", heartbeat=1.0, expiry=3.0)
    registry._note_nodes({"n1": "ws://a:1", "n2": "ws://b:1"})
    registry._note_nodes({"n2": "ws://b:1"})  # n1's key expired
    link.scripts.clear()
    registry._note_nodes({"n1": "ws://a:1", "n2": "ws://b:1"})  # n1 back
    assert [s for s, _, _ in link.scripts] == [OTHERS]
    link.scripts.clear()
    registry._note_nodes({"n1": "ws://a:1", "n2": "ws://b:1"})
    assert link.scripts == []
