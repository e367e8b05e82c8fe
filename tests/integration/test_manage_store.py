"""The embedded store across restarts (issue 12 item 6): entities, rules, keys and timestamps
made through the management API survive a restart of ``twistd -n relayd``; a database written
by an older relayd (no schema version: before and after event entities) is upgraded at start;
one with a newer schema is refused with a message that says what to do, and left untouched."""

import os
import sqlite3
import subprocess

import pytest

from relayd import store
from tests.support.manage import call
from tests.support.rawws import RawWS, hc_url
from tests.support.relay import RelayProcess, twistd_path, write_config
from relayd.wire import sas

import time


def relay_in(work):
    return RelayProcess(work, os.path.join(str(work), "relayd.toml"))


def test_entities_rules_keys_and_timestamps_survive_a_restart(tmp_path):
    write_config(tmp_path)
    relay = relay_in(tmp_path)
    try:
        assert call(relay, "PUT", "entities/kept", {"discovery": "public", "display_name": "Kept",
                                                    "user_metadata": "m", "max_listeners": 3})[0] == 201
        assert call(relay, "PUT", "rules/ops", {"rights": ["Listen", "Send"]})[0] == 201
        assert call(relay, "PUT", "entities/kept/$rules/own", {"rights": ["Listen"]})[0] == 201
        assert call(relay, "PUT", "entities/scoped/$rules/extra", {"rights": ["Send"]})[0] == 201  # on a config entity
        status, ops = call(relay, "POST", "rules/ops/regenerate", {"key_type": "secondary"})
        assert status == 200
        before = {p: call(relay, "GET", p)[1] for p in ("entities/kept", "rules", "entities/kept/$rules",
                                                       "entities/scoped/$rules")}
    finally:
        relay.stop()
    relay = relay_in(tmp_path)
    try:
        after = {p: call(relay, "GET", p)[1] for p in before}
        kept = set(store.ENTITY_COLUMNS) | {"rules", "static"}  # (not what the relay's run-time state adds)
        assert {k: v for k, v in after.pop("entities/kept").items() if k in kept} == {
            k: v for k, v in before.pop("entities/kept").items() if k in kept}
        assert after == before
        entity = call(relay, "GET", "entities/kept")[1]
        assert entity["created_at"] > 0 and (entity["display_name"], entity["max_listeners"]) == ("Kept", 3)
        # the persisted keys sign tokens the restarted relay accepts
        token = sas.make_token("%s/kept" % relay.http_url, "ops", ops["secondary_key"], int(time.time()) + 60)
        ws = RawWS(relay.port).start(hc_url(relay, "kept", "listen"), {"ServiceBusAuthorization": token})
        assert ws.finish() == 101
        ws.close()
    finally:
        relay.stop()


V0_ENTITIES = ("CREATE TABLE entities (path TEXT PRIMARY KEY, kind TEXT NOT NULL, "
               "requires_client_authorization INTEGER NOT NULL, max_listeners INTEGER NOT NULL, "
               "response_timeout REAL NOT NULL DEFAULT 60)")
V1_ENTITIES = V0_ENTITIES[:-1] + ", max_message INTEGER NOT NULL DEFAULT 65536)"
RULES = ("CREATE TABLE rules (entity TEXT NOT NULL, name TEXT NOT NULL, key TEXT NOT NULL, secondary_key TEXT, "
         "rights TEXT NOT NULL, PRIMARY KEY (entity, name))")
OLD_ROOT = "b2xkLXJvb3Qta2V5LWZyb20tYW4tb2xkLXJlbGF5ZA=="


def old_database(work, entities_sql, rows):
    """A data directory as an older relayd left it (it never set a schema version)."""
    data = os.path.join(str(work), "data")
    os.makedirs(data)
    db = sqlite3.connect(os.path.join(data, store.FILE_NAME))
    with db:
        db.execute(RULES)
        db.execute(entities_sql)
        db.execute("INSERT INTO rules VALUES ('', 'RootManageSharedAccessKey', ?, NULL, 'Manage')", (OLD_ROOT,))
        for row in rows:
            db.execute("INSERT INTO entities VALUES (%s)" % ", ".join("?" * len(row)), row)
    db.close()
    return os.path.join(data, store.FILE_NAME)


@pytest.mark.parametrize("entities_sql, rows", [
    (V0_ENTITIES, [("old/hc", "hybrid_connection", 1, 7, 30.0)]),
    (V1_ENTITIES, [("old/hc", "hybrid_connection", 1, 7, 30.0, 65536), ("old/feed", "multicast", 1, 5, 60.0, 1000)]),
], ids=["v0", "v1"])
def test_an_older_database_is_upgraded_at_start(tmp_path, entities_sql, rows):
    path = old_database(tmp_path, entities_sql, rows)
    write_config(tmp_path)
    relay = relay_in(tmp_path)
    try:
        status, body = call(relay, "GET", "entities/old/hc")
        assert status == 200, body
        assert (body["max_listeners"], body["response_timeout"], body["max_message"]) == (7, 30.0, 65536)
        assert body["discovery"] == "private" and body["created_at"] > 0
        if len(rows) > 1:
            assert call(relay, "GET", "entities/old/feed")[1]["max_message"] == 1000
        assert call(relay, "PUT", "entities/old/hc", {"user_metadata": "upgraded"})[0] == 200
    finally:
        relay.stop()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        assert db.execute("SELECT user_metadata FROM entities WHERE path = 'old/hc'").fetchone() == ("upgraded",)
        assert db.execute("SELECT key, origin FROM rules WHERE entity = ''").fetchone() == (OLD_ROOT, "generated")
    finally:
        db.close()


def test_a_newer_schema_is_refused_with_a_message(tmp_path):
    path = old_database(tmp_path, V1_ENTITIES, [])
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = %d" % (store.SCHEMA_VERSION + 7))
    db.close()
    config = write_config(tmp_path)
    out = subprocess.run([twistd_path(), "-n", "--pidfile=", "relayd", "--config", config], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "schema version %d, newer than this relayd knows (%d)" % (store.SCHEMA_VERSION + 7,
                                                                   store.SCHEMA_VERSION) in text, text
    assert "Traceback" not in text, text
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION + 7
    db.close()
