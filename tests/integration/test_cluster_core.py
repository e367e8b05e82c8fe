"""Several relayd nodes as one namespace on Redis (issue 13 items 1, 2, 3, 8): a real redis-server
and two ``twistd -n relayd`` nodes sharing it, driven over their sockets and read back in Redis."""

import os
import signal
import time

import pytest

from relayd.wire import sas
from tests.support.cluster_nodes import EXPIRY, HEARTBEAT, cluster_status, start_node
from tests.support.manage import call
from tests.support.rawws import Closed, RawWS, hc_url, pair
from tests.support.redis_server import RedisServer
from tests.support.relay import ROOT_KEY
from tests.support.waits import wait_until
from tests.integration.test_metrics import scrape, value

def token_for(relay, path, rule="root", key=ROOT_KEY):
    return sas.make_token("%s/%s" % (relay.http_url, path), rule, key, int(time.time()) + 3600)


def try_listen(relay, path, rule="root", key=ROOT_KEY):
    ctl = RawWS(relay.port).start(hc_url(relay, path, "listen"),
                                  {"ServiceBusAuthorization": token_for(relay, path, rule, key)})
    return ctl, ctl.finish()


def registry_entries(redis, path):
    flat = redis.command("HGETALL", "relayd:listeners:" + path.lower()) or []
    return dict(zip(flat[::2], flat[1::2]))


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def nodes(tmp_path, redis):
    started = []
    try:
        for i in (1, 2):
            started.append(start_node(tmp_path, redis, "node%d" % i, "n%d" % i))
        for node in started:
            assert wait_until(lambda: cluster_status(node)["redis"] == "up" and cluster_status(node)["nodes"] == 2, 15)
        yield started
    finally:
        for node in started:
            node.stop()


def test_entity_and_rule_changes_reach_every_node_at_once(nodes):
    one, two = nodes
    assert call(one, "PUT", "entities/made-on-one", {"max_listeners": 3})[0] == 201
    assert wait_until(lambda: call(two, "GET", "entities/made-on-one")[0] == 200, 5)
    assert call(two, "GET", "entities/made-on-one")[1]["max_listeners"] == 3
    # a rule made on node 2 signs tokens node 1 accepts
    status, rule = call(two, "PUT", "entities/made-on-one/$rules/ops", {"rights": ["Listen"]})
    assert status == 201, rule

    def accepted():
        ctl, status = try_listen(one, "made-on-one", "ops", rule["primary_key"])
        ctl.close()
        return status == 101

    assert wait_until(accepted, 5)


def test_the_listener_cap_holds_across_nodes(nodes, redis):
    one, two = nodes
    first, status1 = try_listen(one, "few")
    second, status2 = try_listen(one, "few")
    assert (status1, status2) == (101, 101)
    assert len(registry_entries(redis, "few")) == 2
    third, status3 = try_listen(two, "few")
    assert status3 == 403
    first.close()
    assert wait_until(lambda: len(registry_entries(redis, "few")) == 1, 5)
    fourth, status4 = try_listen(two, "few")  # room again, cluster-wide
    assert status4 == 101
    assert sorted(registry_entries(redis, "few").values()) == ["n1", "n2"]
    for ws in (second, third, fourth):
        ws.close()


def test_an_entity_deleted_through_one_node_closes_its_listener_on_the_other_with_1001(nodes):
    one, two = nodes
    assert call(one, "PUT", "entities/doomed", {})[0] == 201
    assert wait_until(lambda: call(two, "GET", "entities/doomed")[0] == 200, 5)
    ctl, status = try_listen(one, "doomed")
    assert status == 101
    assert call(two, "DELETE", "entities/doomed")[0] == 200
    with pytest.raises(Closed) as closed:
        while True:
            ctl.recv_message(5)
    assert closed.value.code == 1001
    assert call(one, "GET", "entities/doomed")[0] == 404


def test_a_killed_nodes_registry_entries_are_gone_within_the_expiry(tmp_path, redis, nodes):
    one, two = nodes
    ctl, status = try_listen(two, "echo")
    assert status == 101
    assert list(registry_entries(redis, "echo").values()) == ["n2"]
    os.kill(two.proc.pid, signal.SIGKILL)
    two.proc.wait()
    killed = time.monotonic()
    assert wait_until(lambda: not registry_entries(redis, "echo"), EXPIRY + 5 * HEARTBEAT + 2)
    assert time.monotonic() - killed <= EXPIRY + 5 * HEARTBEAT + 1
    assert redis.command("EXISTS", "relayd:node:n2") == 0
    assert wait_until(lambda: cluster_status(one)["nodes"] == 1, 5)
    ctl.close()


def test_redis_outage_keeps_same_node_traffic_and_recovers(nodes, redis):
    one, two = nodes
    ctl, sender, leg = pair(one, "echo")
    sender.close(), leg.close()
    assert list(registry_entries(redis, "echo").values()) == ["n1"]
    redis.stop()
    assert wait_until(lambda: cluster_status(one)["redis"] == "down", 10)
    down = cluster_status(one)
    assert down["since"] <= time.time() and down["node_id"] == "n1"
    # a listener and a sender that meet on node 1 still work
    fresh, status = try_listen(one, "open")
    assert status == 101
    ctl2, sender2, leg2 = pair(one, "open", ctl=fresh)
    sender2.send_message(b"through")
    assert leg2.recv_message(5) == (2, b"through")
    for ws in (sender2, leg2):
        ws.close()
    assert "cluster: Redis at 127.0.0.1:%d is down" % redis.port in one.log_text()
    assert value(scrape(one), "relayd_cluster_redis_up") == 0
    status, body = call(one, "PUT", "entities/made-while-down", {})  # cannot be stored: said so
    assert status == 503 and "Redis is down" in body["error"]["message"], body
    redis.start()  # the same port, empty: every node re-registers what it holds
    assert wait_until(lambda: cluster_status(one)["redis"] == "up", 15)
    assert wait_until(lambda: list(registry_entries(redis, "echo").values()) == ["n1"], 10)
    assert wait_until(lambda: list(registry_entries(redis, "open").values()) == ["n1"], 10)
    assert wait_until(lambda: cluster_status(one)["nodes"] == 2, 10)
    assert wait_until(lambda: call(one, "GET", "entities/made-while-down")[0] == 404, 5)  # Redis is the truth
    samples = scrape(one)
    assert (value(samples, "relayd_cluster_redis_up"), value(samples, "relayd_cluster_nodes")) == (1, 2)
    assert "cluster: Redis at 127.0.0.1:%d is up" % redis.port in one.log_text()
    ctl.close(), fresh.close()


def test_listener_counts_are_cluster_wide(nodes):
    one, two = nodes
    ctl, status = try_listen(one, "echo")
    assert status == 101
    assert wait_until(lambda: call(two, "GET", "entities/echo")[1]["listeners"] == 1, 5)
    assert call(one, "GET", "entities/echo")[1]["listeners"] == 1
    other, status = try_listen(two, "echo")
    assert status == 101
    assert wait_until(lambda: call(one, "GET", "entities/echo")[1]["listeners"] == 2, 5)
    ctl.close()
    assert wait_until(lambda: call(two, "GET", "entities/echo")[1]["listeners"] == 1, 5)
    other.close()
    assert wait_until(lambda: call(one, "GET", "entities/echo")[1]["listeners"] == 0, 5)


def test_a_key_regenerated_on_one_node_closes_what_it_opened_on_the_other(nodes):
    one, two = nodes
    status, rule = call(one, "PUT", "rules/rot", {"rights": ["Listen"]})
    assert status == 201, rule

    def listening():
        ctl, status = try_listen(two, "echo", "rot", rule["primary_key"])
        if status != 101:
            ctl.close()
            return None
        return ctl

    ctl = wait_until(listening, 5)
    assert ctl is not None, "the rule made on node 1 never worked on node 2"
    assert call(one, "POST", "rules/rot/regenerate", {"key_type": "primary"})[0] == 200
    with pytest.raises(Closed) as closed:
        while True:
            ctl.recv_message(5)
    assert closed.value.code == 1008  # revoked, as on one node
    refused, status = try_listen(two, "echo", "rot", rule["primary_key"])
    assert status == 401 or status == 403
    refused.close()


def test_a_node_started_later_loads_the_namespace_and_one_started_without_redis_serves(tmp_path, redis, nodes):
    one, _ = nodes
    assert call(one, "PUT", "entities/before-three", {"max_listeners": 4})[0] == 201
    three = start_node(tmp_path, redis, "node3", "n3")
    try:
        assert wait_until(lambda: call(three, "GET", "entities/before-three")[0] == 200, 10)
        assert call(three, "GET", "entities/before-three")[1]["max_listeners"] == 4
    finally:
        three.stop()
    redis.stop()
    four = start_node(tmp_path, redis, "node4", "n4")  # Redis down from its start
    try:
        assert wait_until(lambda: cluster_status(four)["redis"] == "down", 5)
        assert four.wait_log(r"cluster: cannot reach Redis at 127\.0\.0\.1:%d" % redis.port, 5)
        assert "cannot record the relay's endpoint" not in four.log_text()  # data_dir made without SQLite
        ctl, sender, leg = pair(four, "open")  # the config's entities, served on the node
        sender.send_message(b"alone")
        assert leg.recv_message(5) == (2, b"alone")
        redis.start()
        assert wait_until(lambda: cluster_status(four)["redis"] == "up", 15)
        assert wait_until(lambda: list(registry_entries(redis, "open").values()) == ["n4"], 10)
        for ws in (ctl, sender, leg):
            ws.close()
    finally:
        four.stop()


def test_a_listener_on_an_entity_made_a_moment_ago_on_another_node_is_accepted(nodes):
    """The pub/sub notice reaches node 2 a few ms after node 1 answers: a handshake in that
    window reads the entity through from Redis instead of getting 404."""
    one, two = nodes
    for i in range(20):
        path = "fresh-%d-%d" % (os.getpid(), i)
        assert call(one, "PUT", "entities/" + path, {})[0] == 201
        ctl, status = try_listen(two, path)  # at once, no wait
        ctl.close()
        assert status == 101, "round %d: %s on node 2" % (i, status)
