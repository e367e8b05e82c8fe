"""Entities and SAS rules of the relay's one namespace, and the embedded store behind them.

Entities declared in the config file are *static*; entities made at run time (management
API, ``create_on_listen``) are *dynamic* and kept in the embedded SQLite store under the
data directory, as is the generated namespace root rule when the config declares no rules.
"""

import os
import sqlite3
from dataclasses import dataclass, field

from twisted.logger import Logger

from relayd.wire import sas
from relayd.wire.names import validate_entity_path

HYBRID_CONNECTION = "hybrid_connection"
ROOT_RULE = "RootManageSharedAccessKey"


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

    def describe(self):
        return {
            "path": self.path,
            "kind": self.kind,
            "requires_client_authorization": self.requires_client_authorization,
            "max_listeners": self.max_listeners,
            "response_timeout": self.response_timeout,
            "max_message": self.max_message,
            "rules": [{"name": r.name, "rights": sorted(r.rights)} for r in self.rules],
            "static": self.static,
        }


class SqliteStore:
    """The embedded store: one SQLite file, ``relayd.sqlite`` in the data directory."""

    def __init__(self, data_dir):
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(data_dir, "relayd.sqlite")
        self._db = sqlite3.connect(self.path)
        os.chmod(self.path, 0o600)
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS rules (entity TEXT NOT NULL, name TEXT NOT NULL, "
                "key TEXT NOT NULL, secondary_key TEXT, rights TEXT NOT NULL, "
                "PRIMARY KEY (entity, name))"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS entities (path TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                "requires_client_authorization INTEGER NOT NULL, max_listeners INTEGER NOT NULL, "
                "response_timeout REAL NOT NULL DEFAULT 60, max_message INTEGER NOT NULL DEFAULT 65536)"
            )
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(entities)")}
            if "max_message" not in columns:  # a store made before event entities
                self._db.execute("ALTER TABLE entities ADD COLUMN max_message INTEGER NOT NULL DEFAULT 65536")

    def close(self):
        self._db.close()

    def rules(self, entity=""):
        rows = self._db.execute(
            "SELECT name, key, secondary_key, rights FROM rules WHERE entity = ? ORDER BY name",
            (entity.lower(),),
        )
        return [sas.Rule(n, k, frozenset(r.split(",")), s) for n, k, s, r in rows]

    def put_rule(self, rule, entity=""):
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO rules VALUES (?, ?, ?, ?, ?)",
                (entity.lower(), rule.name, rule.key, rule.secondary_key, ",".join(sorted(rule.rights))),
            )

    def delete_rules(self, entity):
        with self._db:
            self._db.execute("DELETE FROM rules WHERE entity = ?", (entity.lower(),))

    def entities(self):
        rows = self._db.execute(
            "SELECT path, kind, requires_client_authorization, max_listeners, response_timeout, max_message "
            "FROM entities ORDER BY path"
        )
        return [
            Entity(p, k, bool(a), m, rules=self.rules(p), response_timeout=t, max_message=mm)
            for p, k, a, m, t, mm in rows
        ]

    def put_entity(self, entity):
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO entities (path, kind, requires_client_authorization, max_listeners, "
                "response_timeout, max_message) VALUES (?, ?, ?, ?, ?, ?)",
                (entity.path, entity.kind, int(entity.requires_client_authorization), entity.max_listeners,
                 entity.response_timeout, entity.max_message),
            )
        for rule in entity.rules:
            self.put_rule(rule, entity.path)

    def delete_entity(self, path):
        with self._db:
            self._db.execute("DELETE FROM entities WHERE lower(path) = ?", (path.lower(),))
        self.delete_rules(path)


class NamespaceError(Exception):
    status = 400


class Namespace:
    log = Logger()

    def __init__(self, store, settings):
        self.store = store
        self.create_on_listen = settings.create_on_listen
        self._entities = {}
        self._removal_observers = []
        self.generated_root = False
        if settings.rules:
            self.rules = [spec.to_rule() for spec in settings.rules]
        else:
            self.rules = store.rules("")
            if not self.rules:
                root = sas.Rule(ROOT_RULE, sas.generate_key(), sas.normalize_rights(["Manage"]))
                store.put_rule(root, "")
                self.rules = [root]
                self.generated_root = True
        for entity in store.entities():
            problem = validate_entity_path(entity.path)
            if problem:
                # stored by an older relayd, before names were restricted: never routed to
                self.log.warn("ignoring stored entity {path!r}: its path {problem}; delete it and create "
                              "it again under a valid name", path=entity.path, problem=problem)
                continue
            self._entities[entity.path.lower()] = entity
        for spec in settings.entities:
            self._entities[spec.path.lower()] = Entity(
                spec.path, spec.kind, spec.requires_client_authorization, spec.max_listeners,
                [r.to_rule() for r in spec.rules], static=True, response_timeout=spec.response_timeout,
                max_message=spec.max_message,
            )

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

    def add(self, entity, persist=True):
        problem = validate_entity_path(entity.path)
        if problem:
            raise NamespaceError("entity path %r %s" % (entity.path, problem))
        existing = self.get(entity.path)
        if existing is not None and existing.static:
            raise NamespaceError("entity %r is declared in the config file; change it there" % entity.path)
        self._entities[entity.path.lower()] = entity
        if persist:
            self.store.put_entity(entity)
        return entity

    def remove(self, path):
        entity = self.get(path)
        if entity is None:
            raise NamespaceError("no entity %r" % path)
        if entity.static:
            raise NamespaceError("entity %r is declared in the config file; remove it there" % path)
        del self._entities[entity.path.lower()]
        self.store.delete_entity(entity.path)
        for observer in list(self._removal_observers):
            observer(entity)
        return entity
