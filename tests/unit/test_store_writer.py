"""The store's writes at run time run on its one writer thread, never on the reactor's, in
the order they were made, and the Deferred a change returns fires (on the reactor thread) only
once the write is on disk (issue 12: "the store's blocking calls stay off the reactor
thread")."""

import threading

import pytest_twisted
from twisted.internet import reactor

from relayd import config
from relayd.namespace import Entity, Namespace, SqliteStore
from relayd.store_writer import THREAD_NAME, StoreWriter


class RecordingStore(SqliteStore):
    """The real store; each write also notes the thread it ran on."""

    def __init__(self, data_dir):
        super().__init__(data_dir)
        self.threads = []

    def put_entity(self, entity):
        self.threads.append((threading.get_ident(), threading.current_thread().name, entity.path))
        super().put_entity(entity)

    def put_rule(self, rule, entity="", origin="generated"):
        self.threads.append((threading.get_ident(), threading.current_thread().name, rule.name))
        super().put_rule(rule, entity, origin)


@pytest_twisted.inlineCallbacks
def test_writes_run_on_the_writer_thread_and_are_durable_when_they_fire(tmp_path):
    store = RecordingStore(str(tmp_path))
    namespace = Namespace(store, config.parse({"rules": []}, "t"), reactor)
    store.threads.clear()  # the generated root rule: written at start, before the reactor runs
    writer = StoreWriter(store, reactor)
    namespace.write = writer.run
    writer.startService()
    reactor_thread = threading.get_ident()
    try:
        fired_on = []
        for i in range(5):
            _, written = namespace.put(Entity("e%d" % i))
            written.addCallback(lambda _: fired_on.append(threading.get_ident()))
        _, written = namespace.create_rule(None, "ops", frozenset({"Send"}))
        yield written
        check = SqliteStore(str(tmp_path))  # another connection: what is on disk
        try:
            assert [e.path for e in check.entities()] == ["e%d" % i for i in range(5)]
            assert [r.name for r in check.rules("", "api")] == ["ops"]
        finally:
            check.close()
    finally:
        writer.stopService()
    assert [what for _, _, what in store.threads] == ["e0", "e1", "e2", "e3", "e4", "ops"]
    assert {ident for ident, _, _ in store.threads} != {reactor_thread}
    assert len({ident for ident, _, _ in store.threads}) == 1
    assert all(THREAD_NAME in name for _, name, _ in store.threads)
    assert fired_on == [reactor_thread] * 5
