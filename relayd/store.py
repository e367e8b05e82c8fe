"""The embedded store: one SQLite file, ``relayd.sqlite`` in the data directory, with a
versioned schema.

The schema's version is SQLite's ``PRAGMA user_version``: 0 for a database made before
versions (or a new one), ``SCHEMA_VERSION`` once :data:`MIGRATIONS` have run.  Opening a store
runs, in order and each in its own transaction, every migration past the file's version, so an
older database is upgraded at start; a database with a newer version than this relayd knows is
refused (:class:`StoreError`, saying what to do) and left untouched.

This module is the persistence only (standard library, no Twisted): it stores rules as
:class:`relayd.wire.sas.Rule` and entities as rows (dicts of :class:`relayd.namespace.Entity`'s
fields); :mod:`relayd.namespace` keeps the namespace in memory, and at run time its writes go
through :class:`relayd.store_writer.StoreWriter`, off the reactor thread.

Rules carry an ``origin``: ``generated`` (the namespace root rule relayd makes on first start
when the config file declares no namespace rules; used only while it declares none) or ``api``
(made through the management API; always in force).
"""

import os
import sqlite3
import time

from relayd.wire import sas

FILE_NAME = "relayd.sqlite"
GENERATED, API = "generated", "api"

# The tables as relayd made them before the schema had a version (user_version 0).
_BASE = (
    "CREATE TABLE IF NOT EXISTS rules (entity TEXT NOT NULL, name TEXT NOT NULL, "
    "key TEXT NOT NULL, secondary_key TEXT, rights TEXT NOT NULL, PRIMARY KEY (entity, name))",
    "CREATE TABLE IF NOT EXISTS entities (path TEXT PRIMARY KEY, kind TEXT NOT NULL, "
    "requires_client_authorization INTEGER NOT NULL, max_listeners INTEGER NOT NULL, "
    "response_timeout REAL NOT NULL DEFAULT 60)",
)


def _columns(db, table):
    return {row[1] for row in db.execute("PRAGMA table_info(%s)" % table)}


def _v1_max_message(db):
    """Event entities (issue 11): the largest event of an entity."""
    if "max_message" not in _columns(db, "entities"):
        db.execute("ALTER TABLE entities ADD COLUMN max_message INTEGER NOT NULL DEFAULT 65536")


def _v2_entity_fields_and_rule_origin(db):
    """Discovery, display name, user metadata and timestamps of entities; the origin of rules
    (every rule stored before is the generated namespace root rule or an entity's own)."""
    have = _columns(db, "entities")
    for column, declaration in (("discovery", "TEXT NOT NULL DEFAULT 'private'"), ("display_name", "TEXT"),
                                ("user_metadata", "TEXT"), ("created_at", "REAL"), ("updated_at", "REAL")):
        if column not in have:
            db.execute("ALTER TABLE entities ADD COLUMN %s %s" % (column, declaration))
    now = time.time()
    db.execute("UPDATE entities SET created_at = ? WHERE created_at IS NULL", (now,))
    db.execute("UPDATE entities SET updated_at = created_at WHERE updated_at IS NULL")
    if "origin" not in _columns(db, "rules"):
        db.execute("ALTER TABLE rules ADD COLUMN origin TEXT NOT NULL DEFAULT '%s'" % GENERATED)


# In order: MIGRATIONS[n - 1] takes a database from version n - 1 to n.  Append, never edit.
MIGRATIONS = (_v1_max_message, _v2_entity_fields_and_rule_origin)
SCHEMA_VERSION = len(MIGRATIONS)

ENTITY_COLUMNS = ("path", "kind", "requires_client_authorization", "max_listeners", "response_timeout",
                  "max_message", "discovery", "display_name", "user_metadata", "created_at", "updated_at")


class StoreError(Exception):
    """The store cannot be used (e.g. its schema is newer than this relayd); the message says why."""


def schema_version(db):
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db, path):
    """Bring ``db`` (autocommit mode) to :data:`SCHEMA_VERSION`; StoreError if it is newer."""
    version = schema_version(db)
    if version > SCHEMA_VERSION:
        raise StoreError(
            "%s has schema version %d, newer than this relayd knows (%d): it was written by a newer "
            "relayd; run that version (or a newer one), or start with another data directory"
            % (path, version, SCHEMA_VERSION))
    for number in range(version + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            if number == 1:
                for statement in _BASE:
                    db.execute(statement)
            MIGRATIONS[number - 1](db)
            db.execute("PRAGMA user_version = %d" % number)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


class SqliteStore:
    """The store's blocking calls.  The relay opens and reads it before its reactor runs; at run
    time only its writer thread calls it (``check_same_thread`` is off for that hand-over)."""

    def __init__(self, data_dir):
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(data_dir, FILE_NAME)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            os.chmod(self.path, 0o600)
            migrate(self._db, self.path)
        except BaseException:
            self._db.close()
            raise

    def close(self):
        self._db.close()

    def _write(self, *statements):
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, values in statements:
                db.execute(sql, values)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- rules ------------------------------------------------------------------------------

    def rules(self, entity="", origin=None):
        """The rules of ``entity`` ("" = the namespace), of one ``origin`` or all."""
        rows = self._db.execute(
            "SELECT name, key, secondary_key, rights FROM rules WHERE entity = ? AND (? IS NULL OR origin = ?) "
            "ORDER BY name", (entity.lower(), origin, origin))
        return [sas.Rule(n, k, frozenset(r.split(",")), s) for n, k, s, r in rows]

    @staticmethod
    def _rule_row(rule, entity, origin):
        return ("INSERT OR REPLACE INTO rules (entity, name, key, secondary_key, rights, origin) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (entity.lower(), rule.name, rule.key, rule.secondary_key, ",".join(sorted(rule.rights)), origin))

    def put_rule(self, rule, entity="", origin=GENERATED):
        self._write(self._rule_row(rule, entity, origin))

    def delete_rule(self, name, entity=""):
        self._write(("DELETE FROM rules WHERE entity = ? AND name = ?", (entity.lower(), name)))

    def delete_rules(self, entity):
        self._write(("DELETE FROM rules WHERE entity = ?", (entity.lower(),)))

    # -- entities ---------------------------------------------------------------------------

    def entity_rows(self):
        """Every stored entity as a dict of its fields, ``rules`` included."""
        rows = self._db.execute("SELECT %s FROM entities ORDER BY path" % ", ".join(ENTITY_COLUMNS)).fetchall()
        out = []
        for row in rows:
            fields = dict(zip(ENTITY_COLUMNS, row))
            fields["requires_client_authorization"] = bool(fields["requires_client_authorization"])
            fields["rules"] = self.rules(fields["path"])
            out.append(fields)
        return out

    def put_entity(self, entity):
        """Store ``entity`` (anything with :data:`ENTITY_COLUMNS` as attributes) and its rules."""
        values = [getattr(entity, c) for c in ENTITY_COLUMNS]
        values[2] = int(values[2])
        self._write(
            ("INSERT OR REPLACE INTO entities (%s) VALUES (%s)" % (", ".join(ENTITY_COLUMNS),
                                                                 ", ".join("?" * len(ENTITY_COLUMNS))), values),
            *[self._rule_row(rule, entity.path, API) for rule in entity.rules],
        )

    def delete_entity(self, path):
        self._write(("DELETE FROM entities WHERE lower(path) = ?", (path.lower(),)),
                    ("DELETE FROM rules WHERE entity = ?", (path.lower(),)))
