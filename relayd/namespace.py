"""Entities and SAS rules of the relay's one namespace, kept in memory.

Entities and rules declared in the config file are *static*; those made at run time
(management API, ``create_on_listen``) are *dynamic* and kept in the embedded store
(:mod:`relayd.store`) under the data directory, as is the generated namespace root rule when
the config declares no namespace rules.  A change is made in memory at once (it applies to the
next token checked) and written through ``write`` (at run time the store's writer thread,
:class:`relayd.store_writer.StoreWriter`): each method that changes something returns the
Deferred of its write.  Rule changes are :mod:`relayd.namespace_rules`.
"""

import time
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.logger import Logger

from relayd import access
from relayd.entity_fields import DISCOVERY
from relayd.store import API, GENERATED, SqliteStore as _Store
from relayd.wire import sas
from relayd.wire.names import validate_entity_path

HYBRID_CONNECTION = "hybrid_connection"
ROOT_RULE = "RootManageSharedAccessKey"
MAX_RULES = 12  # rules made through the API, per namespace and per entity (Azure Relay's limit too)


@dataclass
class Entity:
    path: str
    kind: str = HYBRID_CONNECTION
    requires_client_authorization: bool = True
    max_listeners: int = 25
    rules: list = field(default_factory=list)
    static: bool = False
    response_timeout: float = 60.0
    max_message: int = 65536  # the largest event of an event entity (kind oneway / multicast)
    discovery: str = DISCOVERY[0]  # "public": listed in the discovery feed while a listener is online
    display_name: str | None = None
    user_metadata: str | None = None
    created_at: float | None = None  # epoch seconds, set by the relay
    updated_at: float | None = None

    def describe(self):
        return {
            "path": self.path,
            "kind": self.kind,
            "requires_client_authorization": self.requires_client_authorization,
            "max_listeners": self.max_listeners,
            "response_timeout": self.response_timeout,
            "max_message": self.max_message,
            "discovery": self.discovery,
            "display_name": self.display_name,
            "user_metadata": self.user_metadata,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "rules": [{"name": r.name, "rights": sorted(r.rights)} for r in self.rules],
            "static": self.static,
        }


class SqliteStore(_Store):
    """:class:`relayd.store.SqliteStore` whose ``entities()`` are :class:`Entity` objects."""

    def entities(self):
        return [Entity(**fields) for fields in self.entity_rows()]


class NamespaceError(Exception):
    status = 400


class NotFound(NamespaceError):
    status = 404


class Conflict(NamespaceError):
    """409: the thing is declared in the config file, or already exists."""

    status = 409


class Namespace:
    log = Logger()
    # clustered: read_through(path) -> Deferred, a path missing here read from Redis
    # (relayd.cluster.store.NamespaceSync.read_through, set by the cluster service); else None
    read_through = None

    def __init__(self, store, settings, clock=None):
        self.store = store
        self.clock = clock
        self.create_on_listen = settings.create_on_listen
        self.write = defer.maybeDeferred  # the store's writer thread at run time (relay_service)
        self.grants = access.Grants()  # connections held open on a verified token
        self._entities = {}
        self._static_rules = set()  # (entity key or "", rule name) of rules from the config file
        self._removal_observers = []
        self.generated_root = False
        self._generated_names = set()  # namespace rules of origin "generated" (relayd.store)
        started = self.now()
        if settings.rules:
            self.rules = [spec.to_rule() for spec in settings.rules]
            self._static_rules.update(("", r.name) for r in self.rules)
        else:
            self.rules = store.rules("", GENERATED)
            if not self.rules and not store.rules("", API):  # (a deleted generated root stays deleted)
                root = sas.Rule(ROOT_RULE, sas.generate_key(), sas.normalize_rights(["Manage"]))
                store.put_rule(root, "", GENERATED)
                self.rules = [root]
                self.generated_root = True
            self._generated_names = {r.name for r in self.rules}
        self.rules += store.rules("", API)
        for entity in store.entities():
            problem = validate_entity_path(entity.path)
            if problem:
                # stored by an older relayd, before names were restricted: never routed to
                self.log.warn("ignoring stored entity {path!r}: its path {problem}; delete it and create "
                              "it again under a valid name", path=entity.path, problem=problem)
                continue
            self._entities[entity.path.lower()] = entity
        for spec in settings.entities:
            rules = [r.to_rule() for r in spec.rules]
            self._static_rules.update((spec.path.lower(), r.name) for r in rules)
            self._entities[spec.path.lower()] = Entity(
                spec.path, spec.kind, spec.requires_client_authorization, spec.max_listeners,
                rules + store.rules(spec.path), static=True, response_timeout=spec.response_timeout,
                max_message=spec.max_message, discovery=spec.discovery, display_name=spec.display_name,
                user_metadata=spec.user_metadata, created_at=started, updated_at=started,
            )

    def now(self):
        return self.clock.seconds() if self.clock is not None else time.time()

    def on_removed(self, observer):
        self._removal_observers.append(observer)

    def entities(self):
        return sorted(self._entities.values(), key=lambda e: e.path.lower())

    def get(self, path):
        return self._entities.get(path.strip("/").lower())

    def resolve(self, path):
        """Longest entity whose path is a segment prefix of ``path``.

        Returns ``(entity, suffix)`` where suffix is the rest of the path (``""`` or
        ``"/more/segments"``), or ``(None, None)``.
        """
        segments = path.strip("/").split("/")
        for n in range(len(segments), 0, -1):
            entity = self._entities.get("/".join(segments[:n]).lower())
            if entity is not None:
                rest = "/".join(segments[n:])
                return entity, ("/" + rest if rest else "")
        return None, None

    def rules_for(self, entity):
        return list(entity.rules) + list(self.rules)

    def is_static_rule(self, entity, name):
        return (entity.path.lower() if entity is not None else "", name) in self._static_rules

    def put(self, entity, persist=True):
        """Create or replace a dynamic entity (a replaced one keeps its rules and ``created_at``).
        Returns ``(entity, Deferred of its write)``; the entity applies at once."""
        problem = validate_entity_path(entity.path)
        if problem:
            raise NamespaceError("entity path %r %s" % (entity.path, problem))
        existing = self.get(entity.path)
        if existing is not None and existing.static:
            raise Conflict("entity %r is declared in the config file; change it there" % entity.path)
        now = self.now()
        entity.created_at = existing.created_at if existing is not None else now
        entity.updated_at = now
        if existing is not None and not entity.rules:
            entity.rules = existing.rules
        self._entities[entity.path.lower()] = entity
        return entity, (self.write(self.store.put_entity, entity) if persist else defer.succeed(None))

    def add(self, entity, persist=True):
        """:meth:`put`, returning the entity (a failed write is logged)."""
        entity, written = self.put(entity, persist)
        written.addErrback(self.write_failed, "entity %s" % entity.path)
        return entity

    def delete(self, path):
        """Delete a dynamic entity; its channels close (the removal observers).  Returns
        ``(entity, Deferred of the write)``."""
        entity = self.get(path)
        if entity is None:
            raise NotFound("no entity %r" % path)
        if entity.static:
            raise Conflict("entity %r is declared in the config file; remove it there" % path)
        del self._entities[entity.path.lower()]
        written = self.write(self.store.delete_entity, entity.path)
        for observer in list(self._removal_observers):
            observer(entity)
        return entity, written

    def remove(self, path):
        entity, written = self.delete(path)
        written.addErrback(self.write_failed, "entity %s" % entity.path)
        return entity

    # -- changes made on another node (relayd.cluster.store): applied in memory, never written --

    def apply_entity(self, entity):
        """Another node created or changed the dynamic ``entity`` (its rules and timestamps as
        stored); a static entity of the same path wins."""
        existing = self.get(entity.path)
        if existing is not None and existing.static:
            return
        self._entities[entity.path.lower()] = entity
        self.grants.revoke(self)

    def apply_removed(self, path):
        """Another node deleted the dynamic entity at ``path``: its channels close here too."""
        entity = self.get(path)
        if entity is None or entity.static:
            return
        del self._entities[entity.path.lower()]
        for observer in list(self._removal_observers):
            observer(entity)

    def apply_rules(self, path, rules):
        """Another node changed the rules of the namespace (``path`` None) or of an entity: the
        rules not from the config file become ``rules``; connections they no longer allow close."""
        entity = self.get(path) if path is not None else None
        if path is not None and entity is None:
            return
        kept = [r for r in (entity.rules if entity is not None else self.rules) if self.is_static_rule(entity, r.name)]
        if entity is None:
            self._generated_names = set()
            self.rules = kept + list(rules)
        else:
            entity.rules = kept + list(rules)
        self.grants.revoke(self)

    def write_failed(self, failure, what):
        """Log a failed write (the change holds in memory until the relay restarts)."""
        self.log.failure("cannot write {what} to the store", failure, what=what)

    # -- SAS rules at run time ------------------------------------------------------------------
    # ``path`` None: the namespace's rules; else the entity's.  Each change returns
    # ``(rule, Deferred of its write)``, applies at once and closes the connections it revokes.

    def scope(self, path):
        """``(entity or None, its rules)``; NotFound for an unknown entity."""
        if path is None:
            return None, self.rules
        entity = self.get(path)
        if entity is None:
            raise NotFound("no entity %r" % path)
        return entity, entity.rules

    def find_rule(self, path, name):
        entity, rules = self.scope(path)
        for rule in rules:
            if rule.name.lower() == name.lower():
                return entity, rule
        where = "entity %r" % entity.path if entity is not None else "the namespace"
        raise NotFound("%s has no rule %r" % (where, name))

    def _dynamic(self, entity, rule, action):
        if self.is_static_rule(entity, rule.name):
            raise Conflict("rule %r is declared in the config file; %s it there and restart the relay"
                           % (rule.name, action))

    def _replace(self, entity, old, new):
        rules = [r for r in (entity.rules if entity is not None else self.rules) if r is not old]
        if new is not None:
            rules.append(new)
        if entity is None:
            self.rules = rules
        else:
            entity.rules = rules
        self.grants.revoke(self)

    def _origin(self, entity, rule):
        return GENERATED if entity is None and rule.name in self._generated_names else API

    def create_rule(self, path, name, rights, key=None, secondary_key=None):
        entity, rules = self.scope(path)
        if any(r.name.lower() == name.lower() for r in rules):
            raise Conflict("rule %r exists; regenerate its keys or delete it first" % name)
        if len(rules) >= MAX_RULES:
            raise Conflict("%s has %d rules, the most there may be (as in Azure Relay); delete one first"
                           % ("entity %r" % entity.path if entity is not None else "the namespace", len(rules)))
        rule = sas.Rule(name, key or sas.generate_key(), rights, secondary_key or sas.generate_key())
        self._replace(entity, None, rule)
        return rule, self.write(self.store.put_rule, rule, entity.path if entity else "", API)

    def regenerate_rule(self, path, name, which, key=None):
        """A new primary or secondary key (``which``) for a rule: tokens signed with the old one
        are refused from now on and the connections they opened are closed."""
        entity, old = self.find_rule(path, name)
        self._dynamic(entity, old, "change")
        new_key = key or sas.generate_key()
        if which == "primary":
            rule = sas.Rule(old.name, new_key, old.rights, old.secondary_key)
        else:
            rule = sas.Rule(old.name, old.key, old.rights, new_key)
        self._replace(entity, old, rule)
        return rule, self.write(self.store.put_rule, rule, entity.path if entity else "", self._origin(entity, old))

    def delete_rule(self, path, name):
        entity, old = self.find_rule(path, name)
        self._dynamic(entity, old, "remove")
        if entity is None and sas.MANAGE in old.rights and not any(
                sas.MANAGE in r.rights for r in self.rules if r is not old):
            raise Conflict("rule %r is the namespace's last rule with the Manage right; create another "
                           "one first, or nothing could manage the relay" % old.name)
        self._replace(entity, old, None)
        return old, self.write(self.store.delete_rule, old.name, entity.path if entity else "")
