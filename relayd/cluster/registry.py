"""Node heartbeats and the cluster-wide listener registry, in Redis.

Keys:

* ``relayd:node:{node_id}`` -- a node's heartbeat: JSON ``{"url", "started"}`` with a PX expiry of
  ``expiry`` seconds, refreshed every ``heartbeat`` seconds; its absence means the node is dead.
* ``relayd:nodes`` -- the set of node ids ever seen (pruned of dead ones).
* ``relayd:listeners:{entity key}`` -- a hash ``"{node_id}/{listener_id}" -> node_id`` of the
  entity's listeners anywhere in the cluster (entity key: the path, lower case).
* ``relayd:node-entities:{node_id}`` -- the entity keys a node has listeners in (for the sweep).

The per-entity cap is enforced atomically by :data:`REGISTER` (a Lua script): it counts only
entries whose node's heartbeat key exists, deletes the others, and adds the listener only under
the cap.  Every heartbeat each node also runs :data:`SWEEP`, which deletes every entry of every
node whose heartbeat key has expired: a dead node's entries are gone within ``expiry`` plus one
heartbeat.

API (what the switchboard hook and the cross-node rendezvous build on)::

    registry = Registry(link, bus, clock, node_id, node_url, heartbeat=1.0, expiry=3.0)
    registry.start(); registry.stop()
    registry.register(entity_path, listener_id, max_listeners)  # Deferred[bool]: False = over the cap
    registry.unregister(entity_path, listener_id)                # Deferred
    registry.listeners(entity_path)   # Deferred[list[(node_id, listener_id)]], live nodes only
    registry.up                       # Redis is up (as the link knows it)
    registry.count(entity_path)       # Deferred[int]
    registry.nodes()                  # Deferred[dict node_id -> node_url] of live nodes
    registry.on_listener(callback)    # callback(event "online"/"offline", entity_path, node_id, listener_id)

Every method but ``on_listener`` fails with :class:`relayd.cluster.redis_link.RedisDown` while
Redis is down.  The registry remembers this node's listeners, so when Redis comes back (the
link's ``on_up``) -- or when a heartbeat's ``SET ... GET`` finds this node's own key had expired
(the process was stopped or starved past the expiry and the other nodes swept its entries) -- it
re-registers every one of them (no cap check: they are connected), announces them "online" on the
bus and reads the other nodes' listeners again (:meth:`Registry.rejoin`).  A node that sees
another node live again after it was dead reads the other nodes' listeners again too.
"""

import json

from twisted.internet import defer, task
from twisted.logger import Logger

from relayd.cluster.redis_link import RedisDown, dumps

NODE_KEY = "relayd:node:"
NODES = "relayd:nodes"
LISTENERS = "relayd:listeners:"
NODE_ENTITIES = "relayd:node-entities:"
LISTENER_EVENT = "listener"  # the bus kind of online/offline notifications

# KEYS[1] listeners hash, KEYS[2] this node's entity set; ARGV: field, node id, cap (0: none),
# node key prefix, entity key.  1 when registered, 0 over the cap.
REGISTER = """
local entries = redis.call('HGETALL', KEYS[1])
local live = 0
for i = 1, #entries, 2 do
  local field, node = entries[i], entries[i + 1]
  if field == ARGV[1] then
  elseif redis.call('EXISTS', ARGV[4] .. node) == 1 then
    live = live + 1
  else
    redis.call('HDEL', KEYS[1], field)
  end
end
local cap = tonumber(ARGV[3])
if cap > 0 and live >= cap then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[5])
return 1
"""

# KEYS[1] listeners hash; ARGV[1] node key prefix.  The live entries as a flat [field, node, ...].
LIVE = """
local entries = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #entries, 2 do
  if redis.call('EXISTS', ARGV[1] .. entries[i + 1]) == 1 then
    out[#out + 1] = entries[i]
    out[#out + 1] = entries[i + 1]
  else
    redis.call('HDEL', KEYS[1], entries[i])
  end
end
return out
"""

# Deletes every entry of ``node`` (a Lua function shared by SWEEP and CLEAR).
_CLEAR_NODE = """
local function clear(node, entities_prefix, listeners_prefix)
  local removed = 0
  for _, entity in ipairs(redis.call('SMEMBERS', entities_prefix .. node)) do
    local key = listeners_prefix .. entity
    local entries = redis.call('HGETALL', key)
    for i = 1, #entries, 2 do
      if entries[i + 1] == node then
        redis.call('HDEL', key, entries[i])
        removed = removed + 1
      end
    end
  end
  redis.call('DEL', entities_prefix .. node)
  return removed
end
"""

# KEYS[1] the nodes set; ARGV: node key prefix, node-entities prefix, listeners prefix.
# Deletes every entry of every node whose heartbeat key is gone; returns the entries deleted.
SWEEP = _CLEAR_NODE + """
local removed = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. node) == 0 then
    removed = removed + clear(node, ARGV[2], ARGV[3])
    redis.call('SREM', KEYS[1], node)
  end
end
return removed
"""

# ARGV: node id, node-entities prefix, listeners prefix: this node's entries, left from before an
# outage (a listener that left while Redis was down), deleted before it registers its own again.
CLEAR = _CLEAR_NODE + "return clear(ARGV[1], ARGV[2], ARGV[3])\n"


# KEYS[1] the nodes set; ARGV: node key prefix, node-entities prefix, listeners prefix, this node.
# The entries of every other live node as a flat [entity key, field, node, ...].
OTHERS = """
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if node ~= ARGV[4] and redis.call('EXISTS', ARGV[1] .. node) == 1 then
    for _, entity in ipairs(redis.call('SMEMBERS', ARGV[2] .. node)) do
      local entries = redis.call('HGETALL', ARGV[3] .. entity)
      for i = 1, #entries, 2 do
        if entries[i + 1] == node then
          out[#out + 1] = entity
          out[#out + 1] = entries[i]
          out[#out + 1] = node
        end
      end
    end
  end
end
return out
"""


def entity_key(path):
    return path.strip("/").lower()


def _pairs(flat):
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat or ()), 2)]


class Registry:
    log = Logger()

    def __init__(self, link, bus, clock, node_id, node_url, heartbeat=1.0, expiry=3.0):
        self.link, self.bus, self.clock = link, bus, clock
        self.node_id, self.node_url = node_id, node_url
        self.heartbeat, self.expiry = heartbeat, expiry
        self.started = clock.seconds()
        self.local = {}  # (entity key, listener id) -> entity path: this node's listeners
        self.live_nodes = {}  # node id -> url, as of the last heartbeat
        self.remote = {}  # entity key -> {(node id, listener id)} on the other live nodes
        self._observers = []
        self._loop = None
        self.swept = 0  # entries of dead nodes this node deleted
        self.twin = None  # the URL of another node seen with this node_id
        self.beaten = False  # a heartbeat has been written: a missing key from now on means it expired
        self.rejoined = 0  # times this node found its key expired and registered its listeners again
        bus.on(LISTENER_EVENT, self._listener_event)
        link.on_up.append(self._redis_up)

    @property
    def up(self):
        """Redis is up, as the link knows it (no read is tried while it is down)."""
        return self.link.up

    def _field(self, listener_id, node_id=None):
        return "%s/%s" % (node_id or self.node_id, listener_id)

    # -- heartbeat ---------------------------------------------------------------------------

    def start(self):
        self._loop = task.LoopingCall(self.beat)
        self._loop.clock = self.clock
        self._loop.start(self.heartbeat, now=True)

    def stop(self):
        """Stop beating and delete this node's key and entries (a clean leave)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if not self.link.up:
            return defer.succeed(None)
        fields = {}
        for (key, listener_id) in self.local:
            fields.setdefault(key, []).append(self._field(listener_id))
        calls = [self.link.command("HDEL", LISTENERS + key, *names) for key, names in fields.items()]
        calls.append(self.link.command("DEL", NODE_KEY + self.node_id, NODE_ENTITIES + self.node_id))
        calls.append(self.link.command("SREM", NODES, self.node_id))
        return defer.gatherResults(calls, consumeErrors=True).addErrback(lambda f: None)

    def beat(self, after_outage=False):
        """Refresh this node's key, note the live nodes, sweep dead nodes' entries; this node's
        key found expired (not ``after_outage``: Redis may have restarted empty) -- :meth:`rejoin`."""
        if not self.link.up:
            return
        value = dumps({"url": self.node_url, "started": self.started})
        d = self.link.command("SET", NODE_KEY + self.node_id, value, "PX", int(self.expiry * 1000), "GET")
        d.addCallback(self._check_key, after_outage)
        d.addCallback(lambda _: self.link.command("SADD", NODES, self.node_id))
        d.addCallback(lambda _: self.link.eval(SWEEP, [NODES], [NODE_KEY, NODE_ENTITIES, LISTENERS]))
        d.addCallback(self._swept)
        d.addCallback(lambda _: self.nodes())
        d.addErrback(self._beat_failed)

    def _check_key(self, previous, after_outage):
        self._check_twin(previous)
        if previous is None and self.beaten and not after_outage:
            self.rejoined += 1
            self.log.warn("cluster: this node's heartbeat had expired (the process was stopped or starved "
                          "longer than cluster.expiry, {expiry} s): the other nodes removed its listener "
                          "entries; registering its {n} listeners again", expiry=self.expiry, n=len(self.local))
            self.rejoin()
        self.beaten = True

    def _check_twin(self, previous):
        """Another live node with this node_id (its key holds another URL): said once, loudly --
        the two would take each other's listeners for their own."""
        url = _url(previous) if previous is not None else None
        if url is not None and url != self.node_url and url != self.twin:
            self.twin = url
            self.log.error("cluster: another node ({url}) uses node_id {node}: give each node its own "
                           "cluster.node_id", url=url, node=self.node_id)

    def _swept(self, removed):
        if removed:
            self.swept += removed
            self.log.info("cluster: removed {n} listener entries of dead nodes", n=removed)

    def _beat_failed(self, failure):
        if not failure.check(RedisDown):
            self.log.failure("cluster: heartbeat failed", failure)

    def nodes(self):
        """Deferred[{node_id: node_url}] of the nodes whose heartbeat key exists."""
        d = self.link.command("SMEMBERS", NODES)

        def read(ids):
            ids = sorted(ids or ())
            if not ids:
                return {}
            return self.link.command("MGET", *[NODE_KEY + i for i in ids]).addCallback(
                lambda values: {i: _url(v) for i, v in zip(ids, values) if v is not None})

        d.addCallback(read)
        d.addCallback(self._note_nodes)
        return d

    def _note_nodes(self, nodes):
        back = self.live_nodes and set(nodes) - set(self.live_nodes) - {self.node_id}
        self.live_nodes = nodes
        if back:  # a node (re)joined: its listeners may have been dropped here while it looked dead
            self.refresh_remote()
        for key, held in list(self.remote.items()):  # a dead node's listeners are gone
            held.difference_update({entry for entry in held if entry[0] not in nodes})
            if not held:
                del self.remote[key]
        return nodes

    def remote_count(self, entity_path):
        """The entity's listeners on the other live nodes, as this node knows them now (the bus's
        online/offline notifications, node deaths, a full read whenever Redis comes back)."""
        return len(self.remote.get(entity_key(entity_path), ()))

    def remote_counts(self):
        return {key: len(held) for key, held in self.remote.items()}

    def refresh_remote(self):
        """Read every other live node's listeners from Redis (start, and Redis back)."""
        d = self.link.eval(OTHERS, [NODES], [NODE_KEY, NODE_ENTITIES, LISTENERS, self.node_id])

        def read(flat):
            remote = {}
            flat = flat or []
            for i in range(0, len(flat), 3):
                remote.setdefault(flat[i], set()).add((flat[i + 2], flat[i + 1].split("/", 1)[1]))
            self.remote = remote

        return d.addCallback(read).addErrback(self._beat_failed)

    # -- listeners ---------------------------------------------------------------------------

    def register(self, entity_path, listener_id, max_listeners=0):
        """Deferred[bool]: True when registered, False when the entity already has
        ``max_listeners`` live listeners in the cluster (0: no cap)."""
        key = entity_key(entity_path)
        d = self.link.eval(REGISTER, [LISTENERS + key, NODE_ENTITIES + self.node_id],
                           [self._field(listener_id), self.node_id, int(max_listeners or 0), NODE_KEY, key])

        def registered(result):
            if int(result) != 1:
                return False
            self.local[(key, listener_id)] = entity_path
            self._announce("online", entity_path, listener_id)
            return True

        return d.addCallback(registered)

    def unregister(self, entity_path, listener_id):
        key = entity_key(entity_path)
        if self.local.pop((key, listener_id), None) is None:
            return defer.succeed(None)
        d = self.link.command("HDEL", LISTENERS + key, self._field(listener_id))
        d.addCallback(lambda _: self._announce("offline", entity_path, listener_id))
        return d

    def forget(self, entity_path, listener_id):
        """This node no longer holds the listener (e.g. Redis was down when it left): not re-registered."""
        self.local.pop((entity_key(entity_path), listener_id), None)

    def listeners(self, entity_path):
        """Deferred[[(node_id, listener_id)]] of the entity's listeners on live nodes."""
        d = self.link.eval(LIVE, [LISTENERS + entity_key(entity_path)], [NODE_KEY])
        return d.addCallback(lambda flat: sorted((node, field.split("/", 1)[1]) for field, node in _pairs(flat)))

    def count(self, entity_path):
        return self.listeners(entity_path).addCallback(len)

    def on_listener(self, callback):
        """``callback(event, entity_path, node_id, listener_id)`` for every listener that comes
        ("online") or goes ("offline") on any node, this one included."""
        self._observers.append(callback)

    def _announce(self, event, entity_path, listener_id):
        d = self.bus.broadcast(LISTENER_EVENT, {"event": event, "entity": entity_path, "listener": listener_id})
        d.addErrback(lambda f: None)  # a lost notification: counts are read from the registry anyway

    def _listener_event(self, payload, from_node):
        event, path, listener = payload.get("event"), payload.get("entity"), payload.get("listener")
        if event not in ("online", "offline") or not isinstance(path, str) or not isinstance(listener, str):
            self.bus.dropped["malformed"] += 1
            return
        if from_node != self.node_id:
            held = self.remote.setdefault(entity_key(path), set())
            (held.add if event == "online" else held.discard)((from_node, listener))
            if not held:
                del self.remote[entity_key(path)]
        for callback in list(self._observers):
            try:
                callback(event, path, from_node, listener)
            except Exception:
                self.log.failure("cluster: a listener observer failed")

    # -- Redis back --------------------------------------------------------------------------

    def remember(self, entity_path, listener_id):
        """A listener admitted while Redis was down (the cap counted on this node only): it is
        registered when Redis is back."""
        self.local[(entity_key(entity_path), listener_id)] = entity_path

    def _redis_up(self):
        """Heartbeat, this node's stale entries cleared (sent at once: before any new listener's
        registration), then :meth:`rejoin`."""
        self.beat(after_outage=True)
        d = self.link.eval(CLEAR, [], [self.node_id, NODE_ENTITIES, LISTENERS])
        d.addCallback(lambda _: self.rejoin()).addErrback(self._beat_failed)

    def rejoin(self):
        """Every local listener registered again (they are connected: no cap check) and announced
        "online" (the other nodes may have dropped them), and the other nodes' listeners read again."""
        for (key, listener_id), path in list(self.local.items()):
            d = self.link.eval(REGISTER, [LISTENERS + key, NODE_ENTITIES + self.node_id],
                               [self._field(listener_id), self.node_id, 0, NODE_KEY, key])
            d.addCallback(lambda _, path=path, listener_id=listener_id: self._announce("online", path, listener_id))
            d.addErrback(self._beat_failed)
        if self.local:
            self.log.info("cluster: re-registered {n} listeners of this node", n=len(self.local))
        self.refresh_remote()


def _url(value):
    try:
        return json.loads(value).get("url")
    except (TypeError, ValueError, AttributeError):
        return None
