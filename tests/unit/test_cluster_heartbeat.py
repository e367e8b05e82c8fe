"""The registry's heartbeat on a fake clock (relayd/cluster/registry.py): a SET with a PX expiry
every ``heartbeat`` seconds while Redis is up, none while it is down, the key and entries deleted
on a clean stop.  The Redis link is a recorder here; the Lua and Redis's own expiry are tested
against a real redis-server in test_cluster_link.py."""

from twisted.internet import defer
from twisted.internet.task import Clock

from relayd.cluster.registry import NODE_KEY, Registry


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
