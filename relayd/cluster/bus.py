"""Node-to-node messages over Redis pub/sub.

Channels: ``relayd:node:{node_id}`` for the messages to one node, ``relayd:nodes`` (BROADCAST)
for every node.  A message is one JSON object ``{"k": kind, "f": from node, "p": payload}`` of
at most ``MAX_MESSAGE`` bytes (a bigger one is refused by :meth:`Bus.send` with ValueError, and
dropped and counted when received).

API (what the other cluster modules and the cross-node rendezvous build on)::

    bus = Bus(link, node_id)
    bus.on("offer", handler)            # handler(payload: dict, from_node: str); one per kind
    bus.send(node_id, "offer", {...})   # Deferred of the number of nodes that received it (0: gone)
    bus.broadcast("entity", {...})      # every node, this one too (handlers may skip from_node == own)

Delivery is at most once: a message to a node that is gone, or sent while Redis is down
(the Deferred fails with :class:`relayd.cluster.redis_link.RedisDown`), is lost -- a caller that
waits for an answer must have its own deadline.  Messages of a kind with no handler, malformed
ones and oversized ones are dropped and counted in :attr:`Bus.dropped` (by reason).
"""

import json
from collections import Counter

from twisted.logger import Logger

from relayd.cluster.redis_link import dumps

PREFIX = "relayd:node:"
BROADCAST = "relayd:nodes"
MAX_MESSAGE = 256 * 1024  # bytes of one message's JSON


def node_channel(node_id):
    return PREFIX + node_id


def encode(kind, from_node, payload):
    """The message's text; ValueError past MAX_MESSAGE."""
    text = dumps({"k": kind, "f": from_node, "p": payload})
    if len(text.encode("utf-8")) > MAX_MESSAGE:
        raise ValueError("a %r bus message of %d bytes is over MAX_MESSAGE (%d)" % (kind, len(text), MAX_MESSAGE))
    return text


def decode(message):
    """``(kind, from_node, payload)``, or None with the reason as a string for a bad message."""
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            return None, "malformed"
    if not isinstance(message, str):
        return None, "malformed"
    if len(message) > MAX_MESSAGE:
        return None, "oversized"
    try:
        value = json.loads(message)
    except ValueError:
        return None, "malformed"
    if (not isinstance(value, dict) or not isinstance(value.get("k"), str) or not isinstance(value.get("f"), str)
            or not isinstance(value.get("p"), dict)):
        return None, "malformed"
    return (value["k"], value["f"], value["p"]), None


class Bus:
    log = Logger()

    def __init__(self, link, node_id):
        self.link = link
        self.node_id = node_id
        self.handlers = {}
        self.dropped = Counter()  # reason ("unknown kind", "malformed", "oversized") -> messages
        self.received = 0
        link.on_message = self._received
        link.subscribe(node_channel(node_id))
        link.subscribe(BROADCAST)

    def on(self, kind, handler):
        """``handler(payload, from_node)`` for every message of ``kind`` (replaces an earlier one)."""
        self.handlers[kind] = handler

    def send(self, node_id, kind, payload):
        """To one node: a Deferred of how many received it (0: that node is gone; the message is lost)."""
        return self.link.publish(node_channel(node_id), encode(kind, self.node_id, payload))

    def broadcast(self, kind, payload):
        """To every node (this one included)."""
        return self.link.publish(BROADCAST, encode(kind, self.node_id, payload))

    def _received(self, channel, message):
        decoded, problem = decode(message)
        if decoded is None:
            self.dropped[problem] += 1
            return
        kind, from_node, payload = decoded
        handler = self.handlers.get(kind)
        if handler is None:
            self.dropped["unknown kind"] += 1
            return
        self.received += 1
        try:
            handler(payload, from_node)
        except Exception:
            self.log.failure("cluster: the handler of a {kind!r} message from {node} failed", kind=kind,
                             node=from_node)
