"""Event entities in the embedded store (issue 11): ``kind`` and ``max_message`` are kept,
and a store made before event entities (no ``max_message`` column) is brought up to date."""

import os
import sqlite3

from relayd.namespace import Entity, SqliteStore


def test_event_entity_round_trips(tmp_path):
    store = SqliteStore(str(tmp_path))
    store.put_entity(Entity("feed", "multicast", max_listeners=5, max_message=100))
    store.close()
    store = SqliteStore(str(tmp_path))
    (entity,) = store.entities()
    store.close()
    assert (entity.path, entity.kind, entity.max_listeners, entity.max_message) == ("feed", "multicast", 5, 100)


def test_a_store_without_max_message_is_upgraded(tmp_path):
    db = sqlite3.connect(os.path.join(str(tmp_path), "relayd.sqlite"))
    with db:
        db.execute("CREATE TABLE entities (path TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                   "requires_client_authorization INTEGER NOT NULL, max_listeners INTEGER NOT NULL, "
                   "response_timeout REAL NOT NULL DEFAULT 60)")
        db.execute("INSERT INTO entities VALUES ('old', 'hybrid_connection', 1, 25, 60)")
    db.close()
    store = SqliteStore(str(tmp_path))
    store.put_entity(Entity("jobs", "oneway", max_message=2048))
    entities = {e.path: e for e in store.entities()}
    store.close()
    assert entities["old"].max_message == 65536
    assert (entities["jobs"].kind, entities["jobs"].max_message) == ("oneway", 2048)
