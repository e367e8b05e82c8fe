"""The shared namespace of a cluster: dynamic entities and SAS rules (keys included) in Redis.

:class:`RedisStore` has the embedded store's interface (:class:`relayd.store.SqliteStore` as
:class:`relayd.namespace.Namespace` uses it), so the namespace works unchanged: its reads at
construction find nothing (the namespace starts with the config file's entities and rules, and
:class:`NamespaceSync` loads the rest from Redis once connected), and its writes -- through
``Namespace.write``, which is plain ``maybeDeferred`` here -- return the Deferred of the Redis
commands.  Each write is then announced on the bus (kind ``"namespace"``); every other node reads
the changed thing back from Redis (read-through: a lost or reordered notification cannot leave a
node with stale data for longer than the next change or reconnection) and applies it to its
in-memory namespace: a deleted entity's channels close there with 1001 (the namespace's removal
observers).  When Redis comes back after an outage, each node reloads the whole namespace.

Keys: ``relayd:ns:entities`` (hash: entity key -> JSON of the entity's fields), and
``relayd:ns:rules`` / ``relayd:ns:rules:{entity key}`` (hash: rule name -> JSON of key,
secondary key, rights, origin).
"""

import json
from collections import OrderedDict

from twisted.internet import defer
from twisted.logger import Logger

from relayd.cluster.redis_link import COMMAND_TIMEOUT, RedisDown, dumps
from relayd.namespace import Entity
from relayd.store import API, ENTITY_COLUMNS
from relayd.wire import sas

ENTITIES = "relayd:ns:entities"
RULES = "relayd:ns:rules"
NAMESPACE_EVENT = "namespace"  # the bus kind of change notifications
# Read-through on a handshake's miss (NamespaceSync.read_through): misses must not amplify.
NEGATIVE_TTL = 1.0  # seconds a path found nowhere in Redis is answered "no" without a read
NEGATIVE_CACHE = 1024  # paths remembered so (the oldest forgotten first)
MAX_READS_IN_FLIGHT = 64  # reads at once; a miss over it is a "no" at once
MAX_CANDIDATES = 32  # leading segments of a path looked up (an entity path is never deeper)


def rules_key(entity):
    return RULES + (":" + entity.strip("/").lower() if entity else "")


def rule_json(rule, origin):
    return dumps({"key": rule.key, "secondary_key": rule.secondary_key, "rights": sorted(rule.rights),
                  "origin": origin})


def as_dict(reply):
    """HGETALL's reply (a flat list of field, value, ...) as a dict."""
    if isinstance(reply, dict):
        return reply
    reply = reply or []
    return {reply[i]: reply[i + 1] for i in range(0, len(reply), 2)}


def rules_from(mapping):
    """``[Rule]`` (sorted by name) from a rules hash as HGETALL returns it."""
    out = []
    for name, text in sorted(as_dict(mapping).items()):
        value = json.loads(text)
        out.append(sas.Rule(name, value["key"], frozenset(value["rights"]), value.get("secondary_key")))
    return out


def entity_from(text, rules):
    fields = json.loads(text)
    fields = {c: fields[c] for c in ENTITY_COLUMNS if c in fields}
    return Entity(rules=rules, **fields)


class RedisStore:
    """The namespace's store when clustered (see the module docstring)."""

    def __init__(self, link, bus, where):
        self.link, self.bus = link, bus
        self.path = where  # shown in log lines, as the SQLite file's path is

    # -- reads at construction: the namespace starts from the config file --------------------

    def rules(self, entity="", origin=None):
        return []

    def entities(self):
        return []

    def close(self):
        pass

    # -- writes ------------------------------------------------------------------------------

    def _announce(self, result, **what):
        self.bus.broadcast(NAMESPACE_EVENT, what).addErrback(lambda f: None)
        return result

    def _written(self, d, **what):
        """Announce the change once written; a write Redis is down for fails with a RedisDown
        that says what happens to the change."""
        def down(failure):
            failure.trap(RedisDown)
            raise RedisDown("the cluster's Redis is down: the change holds on this node only, and is undone "
                            "when Redis is back and the namespace is read from it again; retry once "
                            "GET /$relayd/status shows cluster.redis up")

        return d.addCallbacks(self._announce, down, callbackKeywords=what)

    def put_entity(self, entity):
        fields = {c: getattr(entity, c) for c in ENTITY_COLUMNS}
        key = entity.path.lower()
        d = self.link.command("HSET", ENTITIES, key, dumps(fields))
        if entity.rules:
            args = []
            for rule in entity.rules:
                args += [rule.name, rule_json(rule, API)]
            d.addCallback(lambda _: self.link.command("HSET", rules_key(key), *args))
        return self._written(d, what="entity", path=entity.path)

    def delete_entity(self, path):
        key = path.lower()
        d = self.link.command("HDEL", ENTITIES, key)
        d.addCallback(lambda _: self.link.command("DEL", rules_key(key)))
        return self._written(d, what="entity", path=path)

    def put_rule(self, rule, entity="", origin=API):
        d = self.link.command("HSET", rules_key(entity), rule.name, rule_json(rule, origin))
        return self._written(d, what="rules", path=entity or None)

    def delete_rule(self, name, entity=""):
        d = self.link.command("HDEL", rules_key(entity), name)
        return self._written(d, what="rules", path=entity or None)

    def delete_rules(self, entity):
        d = self.link.command("DEL", rules_key(entity))
        return self._written(d, what="rules", path=entity or None)


class NamespaceSync:
    """Keeps a node's :class:`~relayd.namespace.Namespace` in step with Redis: a full load at
    start and after each outage (:meth:`load`), and each change another node announces."""

    log = Logger()

    def __init__(self, namespace, link, bus, clock):
        self.namespace, self.link, self.bus, self.clock = namespace, link, bus, clock
        self.loaded = 0  # full loads done
        self._absent = OrderedDict()  # path -> until when it is known absent (bounded)
        self._reading = {}  # path -> Deferred[bool] of the read in flight
        bus.on(NAMESPACE_EVENT, self._changed)
        link.on_up.append(self.load)

    def _changed(self, payload, from_node):
        if from_node == self.bus.node_id:
            return  # made here: already in memory
        what, path = payload.get("what"), payload.get("path")
        if what == "entity" and isinstance(path, str):
            d = self._read_entity(path)
        elif what == "rules" and (path is None or isinstance(path, str)):
            d = self._read_rules(path)
        else:
            self.bus.dropped["malformed"] += 1
            return
        d.addErrback(self._failed, "%s %s" % (what, path))

    def _read_entity(self, path):
        key = path.lower()
        d = defer.gatherResults([self.link.command("HGET", ENTITIES, key),
                                 self.link.command("HGETALL", rules_key(key))], consumeErrors=True)

        def apply(replies):
            text, rules = replies
            if text is None:
                self.namespace.apply_removed(path)
            else:
                self.namespace.apply_entity(entity_from(text, rules_from(rules)))

        return d.addCallback(apply)

    def read_through(self, path):
        """A handshake for ``path`` found no entity here: it may have been made on another node
        a moment ago (its notice not in yet).  Read the path's candidate entities from Redis (one
        HMGET, then the found ones' rules), apply them, and fire True if one was found; False if
        none, Redis is down, the read passes COMMAND_TIMEOUT, or MAX_READS_IN_FLIGHT are
        already out.  Paths found nowhere are remembered for NEGATIVE_TTL (NEGATIVE_CACHE
        paths at most), so a storm of misses costs few reads."""
        key = path.strip("/").lower()
        now = self.clock.seconds()
        if self._absent.get(key, 0) > now or not self.link.up:
            return defer.succeed(False)
        self._absent.pop(key, None)
        if key in self._reading:
            return _follow(self._reading[key])
        if len(self._reading) >= MAX_READS_IN_FLIGHT:
            return defer.succeed(False)
        segments = key.split("/")[:MAX_CANDIDATES]
        candidates = ["/".join(segments[:n]) for n in range(1, len(segments) + 1)]
        d = self.link.command("HMGET", ENTITIES, *candidates)
        d.addCallback(self._found, candidates)
        d.addTimeout(COMMAND_TIMEOUT, self.clock)
        d.addErrback(lambda failure: False)  # down, failed or late: a miss, as without the read
        self._reading[key] = d  # before _read_done, which may run at once
        d.addCallback(self._read_done, key)
        return _follow(d)

    def _found(self, texts, candidates):
        found = [(k, t) for k, t in zip(candidates, texts or ()) if t is not None]
        if not found:
            return False
        d = defer.gatherResults([self.link.command("HGETALL", rules_key(k)) for k, _ in found], consumeErrors=True)

        def apply(rules):
            for (_, text), entity_rules in zip(found, rules):
                self.namespace.apply_entity(entity_from(text, rules_from(entity_rules)))
            return True

        return d.addCallback(apply)

    def _read_done(self, found, key):
        self._reading.pop(key, None)
        if not found:
            self._absent[key] = self.clock.seconds() + NEGATIVE_TTL
            while len(self._absent) > NEGATIVE_CACHE:
                self._absent.popitem(last=False)
        return found

    def _read_rules(self, path):
        d = self.link.command("HGETALL", rules_key(path))
        return d.addCallback(lambda rules: self.namespace.apply_rules(path, rules_from(rules)))

    def load(self):
        """Read every entity and rule from Redis and make the namespace match (entities deleted
        meanwhile are removed, their channels closed)."""
        d = self.link.command("HGETALL", ENTITIES)

        def entities(stored):
            stored = as_dict(stored)
            keys = sorted(stored)
            reads = [self.link.command("HGETALL", rules_key(k)) for k in keys]
            reads.append(self.link.command("HGETALL", rules_key(None)))
            return defer.gatherResults(reads, consumeErrors=True).addCallback(
                lambda rules: self._apply_all(stored, keys, rules))

        d.addCallback(entities)
        d.addErrback(self._failed, "the namespace")
        return d

    def _apply_all(self, stored, keys, rules):
        ns = self.namespace
        ns.apply_rules(None, rules_from(rules[-1]))
        for key, entity_rules in zip(keys, rules):
            ns.apply_entity(entity_from(stored[key], rules_from(entity_rules)))
        for entity in ns.entities():
            if not entity.static and entity.path.lower() not in stored:
                ns.apply_removed(entity.path)
        self.loaded += 1
        self.log.info("cluster: namespace loaded from Redis ({n} entities)", n=len(keys))

    def _failed(self, failure, what):
        if failure.check(RedisDown):
            return  # reloaded when Redis is back
        self.log.failure("cluster: cannot read {what} from Redis", failure, what=what)


def _follow(d):
    """A Deferred firing with ``d``'s result, leaving ``d`` as it is for others to follow."""
    out = defer.Deferred()
    d.addBoth(lambda result: (out.callback(result), result)[1])
    return out
