"""The cluster's Redis link, bus and registry (relayd/cluster/): backoff and message bounds with
no network; the link (txredisapi's protocols on our own factory: AUTH and SELECT, pinned here),
the registry's Lua cap and its expiry against a real redis-server on the test's reactor."""

import random

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from relayd.cluster import bus as bus_module
from relayd.cluster.bus import Bus, decode, encode
from relayd.cluster.redis_link import RedisLink, backoff_delays
from relayd.cluster.registry import Registry
from relayd.cluster.settings import parse_redis_url
from tests.support.redis_server import RedisServer


def test_backoff_doubles_to_its_bound_with_jitter():
    delays = backoff_delays(random.Random(7), first=0.1, most=2.0)
    got = [next(delays) for _ in range(8)]
    bases = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert all(0.75 * b <= d <= 1.25 * b for d, b in zip(got, bases))


def test_messages_are_bounded_and_bad_ones_dropped_and_counted():
    with pytest.raises(ValueError, match="MAX_MESSAGE"):
        encode("big", "n1", {"x": "a" * bus_module.MAX_MESSAGE})
    assert decode(encode("offer", "n1", {"a": 1})) == (("offer", "n1", {"a": 1}), None)
    assert decode("{not json")[1] == "malformed"
    assert decode('{"k": "x", "f": "n", "p": []}')[1] == "malformed"
    assert decode("x" * (bus_module.MAX_MESSAGE + 1))[1] == "oversized"


class _Link:
    """Only what Bus.__init__ asks of a link: where its messages go and which channels."""

    def __init__(self):
        self.channels, self.on_message = set(), None

    def subscribe(self, channel):
        self.channels.add(channel)


def test_the_bus_hands_each_kind_to_its_handler_and_counts_the_rest():
    link, seen = _Link(), []
    bus = Bus(link, "n1")
    assert link.channels == {"relayd:node:n1", "relayd:nodes"}
    bus.on("offer", lambda payload, node: seen.append((payload, node)))
    link.on_message("relayd:nodes", encode("offer", "n2", {"k": "v"}))
    link.on_message("relayd:nodes", encode("nobody-listens", "n2", {}))
    link.on_message("relayd:nodes", b"\xff")
    assert seen == [({"k": "v"}, "n2")]
    assert bus.dropped == {"unknown kind": 1, "malformed": 1}


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis", password="pw-for-tests")
    yield server
    server.stop()


def _up(link, timeout=5.0):
    d = defer.Deferred()
    if link.up:
        return defer.succeed(None)
    link.on_up.append(lambda: d.called or d.callback(None))
    return d.addTimeout(timeout, reactor)


@pytest_twisted.inlineCallbacks
def test_the_link_authenticates_selects_its_db_and_reports_down(redis):
    link = RedisLink(reactor, parse_redis_url("redis://:pw-for-tests@127.0.0.1:%d/3" % redis.port))
    link.start()
    try:
        yield _up(link)
        yield link.command("SET", "k", "in-db-3")
        assert redis.command("SELECT", "3") == "OK"  # (on its own connection: the reply only)
        assert (yield link.command("GET", "k")) == "in-db-3"
        downs = []
        link.on_down.append(lambda: downs.append(link.state))
        redis.stop()
        deadline = reactor.seconds() + 5
        while not downs and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.02, lambda: None)
        assert downs == ["down"]
        with pytest.raises(Exception, match="Redis is down"):
            yield link.command("GET", "k")
    finally:
        link.stop()


@pytest_twisted.inlineCallbacks
def test_the_cap_is_counted_cluster_wide_and_a_dead_nodes_entries_expire(redis):
    address = parse_redis_url("redis://:pw-for-tests@127.0.0.1:%d/0" % redis.port)
    links = [RedisLink(reactor, address) for _ in range(2)]
    registries = []
    for i, link in enumerate(links):
        link.start()
        registries.append(Registry(link, Bus(link, "n%d" % i), reactor, "n%d" % i, "ws://x:%d" % i,
                                   heartbeat=0.1, expiry=0.4))
    try:
        for link in links:
            yield _up(link)
        for registry in registries:
            registry.start()
        a, b = registries
        assert (yield a.register("Few", "l1", 2)) is True
        assert (yield b.register("few", "l2", 2)) is True
        assert (yield b.register("few", "l3", 2)) is False
        assert (yield a.listeners("few")) == [("n0", "l1"), ("n1", "l2")]
        b._loop.stop()  # node n1 stops beating, as a killed node would
        links[1].stop()
        deadline = reactor.seconds() + 3
        while (yield a.count("few")) != 1 and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert (yield a.listeners("few")) == [("n0", "l1")]
        assert (yield a.register("few", "l4", 2)) is True  # room again
    finally:
        for registry, link in zip(registries, links):
            if registry._loop is not None and registry._loop.running:
                registry._loop.stop()
            link.stop()


@pytest.mark.parametrize("password", ["pw-over-tls", None])
@pytest_twisted.inlineCallbacks
def test_rediss_checks_the_servers_certificate(tmp_path, monkeypatch, password):
    from tests.support.tls import make_ca_and_server

    paths = make_ca_and_server(tmp_path)
    server = RedisServer(tmp_path / "redis", password=password, tls=paths)
    link = RedisLink(reactor, parse_redis_url(server.url))
    try:
        link.start()  # the test CA is not trusted yet: every attempt fails its TLS handshake
        yield task.deferLater(reactor, 0.5, lambda: None)
        assert link.state == "down" and link.transitions == 0  # never up, not flapping
        # the server's certificate is checked against the platform's trust store; this CA joins
        # it, and the link's next attempt succeeds
        monkeypatch.setenv("SSL_CERT_FILE", paths["ca.pem"])
        yield _up(link)
        yield link.command("SET", "over", "tls")
        assert server.command("GET", "over") == "tls"
    finally:
        link.stop()
        server.stop()


@pytest_twisted.inlineCallbacks
def test_a_refused_password_is_retried_until_redis_takes_it(redis):
    link = RedisLink(reactor, parse_redis_url("redis://:not-yet@127.0.0.1:%d/0" % redis.port))
    try:
        link.start()
        yield task.deferLater(reactor, 0.5, lambda: None)
        assert link.state == "down" and link.transitions == 0  # never up, not flapping
        redis.command("CONFIG", "SET", "requirepass", "not-yet")
        yield _up(link, timeout=5)
        assert (yield link.command("PING")) == "PONG"
    finally:
        link.stop()


@pytest_twisted.inlineCallbacks
def test_a_redis_that_stops_answering_is_down_within_the_command_deadline(redis):
    import os
    import signal

    from relayd.cluster.redis_link import COMMAND_TIMEOUT, RedisDown

    link = RedisLink(reactor, parse_redis_url("redis://:pw-for-tests@127.0.0.1:%d/0" % redis.port))
    try:
        link.start()
        yield _up(link)
        os.kill(redis.proc.pid, signal.SIGSTOP)  # accepts connections (the kernel does), answers nothing
        asked = reactor.seconds()
        with pytest.raises(RedisDown):
            yield link.command("GET", "k")
        assert reactor.seconds() - asked < COMMAND_TIMEOUT + 1
        assert link.state == "down"
        os.kill(redis.proc.pid, signal.SIGCONT)
        yield _up(link, timeout=10)
        assert (yield link.command("PING")) == "PONG"
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
        link.stop()


@pytest_twisted.inlineCallbacks
def test_two_nodes_with_one_node_id_are_told(redis):
    address = parse_redis_url("redis://:pw-for-tests@127.0.0.1:%d/0" % redis.port)
    links = [RedisLink(reactor, address) for _ in range(2)]
    registries = []
    try:
        for i, link in enumerate(links):
            link.start()
            yield _up(link)
            registries.append(Registry(link, Bus(link, "same"), reactor, "same", "ws://node%d:1" % i,
                                       heartbeat=0.05, expiry=1))
            registries[-1].start()
        deadline = reactor.seconds() + 3
        while not all(r.twin for r in registries) and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert [r.twin for r in registries] == ["ws://node1:1", "ws://node0:1"]
    finally:
        for registry, link in zip(registries, links):
            if registry._loop is not None and registry._loop.running:
                registry._loop.stop()
            link.stop()
