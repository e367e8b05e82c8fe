"""[cluster] in the config file (relayd/cluster/settings.py via relayd.config.parse): errors name
the key and say what to fix; without [cluster] nothing changes."""

import pytest

from relayd import config

RULES = {"rules": [{"name": "root", "key": "a" * 32, "rights": ["Manage", "Listen", "Send"]}]}


def parse(cluster, rules=True):
    data = dict(RULES) if rules else {}
    data["cluster"] = cluster
    return config.parse(data, "t.toml")


def error(cluster, rules=True):
    with pytest.raises(config.ConfigError) as e:
        parse(cluster, rules)
    return str(e.value)


def test_without_cluster_nothing_changes():
    assert config.parse(dict(RULES), "t.toml").cluster is None


def test_defaults_and_node_id_from_the_node_url():
    c = parse({"redis": "redis://127.0.0.1:6400/2", "node_url": "ws://10.0.0.5:9001"}).cluster
    assert (c.redis.host, c.redis.port, c.redis.db, c.redis.password, c.redis.tls) == ("127.0.0.1", 6400, 2, None, False)
    assert c.node_id == "10.0.0.5-9001" and c.node_url == "ws://10.0.0.5:9001"
    assert (c.heartbeat, c.expiry) == (1.0, 3.0)


def test_rediss_with_a_password_which_never_shows_in_repr():
    c = parse({"redis": "rediss://:s%40cret@redis.example:6380", "node_url": "wss://a.example",
               "node_id": "a", "heartbeat": 0.5, "expiry": 2}).cluster
    assert (c.redis.tls, c.redis.password, c.redis.port, c.redis.db) == (True, "s@cret", 6380, 0)
    assert "cret" not in repr(c) and c.node_id == "a" and c.expiry == 2.0


@pytest.mark.parametrize("cluster, where, words", [
    ({"node_url": "ws://a:1"}, "cluster.redis", "is required"),
    ({"redis": "http://a:1", "node_url": "ws://a:1"}, "cluster.redis", "redis:// (plain) or rediss://"),
    ({"redis": "unix:///tmp/r.sock", "node_url": "ws://a:1"}, "cluster.redis", "redis:// (plain)"),
    ({"redis": "redis://a:1/x", "node_url": "ws://a:1"}, "cluster.redis", "not a number"),
    ({"redis": "redis://:1/0", "node_url": "ws://a:1"}, "cluster.redis", "no host"),
    ({"redis": "redis://a:1"}, "cluster.node_url", "is required when clustered"),
    ({"redis": "redis://a:1", "node_url": "ftp://a"}, "cluster.node_url", "absolute ws://"),
    ({"redis": "redis://a:1", "node_url": "ws://a:1/x"}, "cluster.node_url", "without a path"),
    ({"redis": "redis://a:1", "node_url": "ws://a:1", "node_id": "a b"}, "cluster.node_id", "letters, digits"),
    ({"redis": "redis://a:1", "node_url": "ws://a:1", "heartbeat": 0}, "cluster.heartbeat", "seconds from"),
    ({"redis": "redis://a:1", "node_url": "ws://a:1", "heartbeat": 2, "expiry": 3}, "cluster.expiry", "twice"),
    ({"redis": "redis://a:1", "node_url": "ws://a:1", "nodes": 3}, "cluster.nodes", "unknown key"),
])
def test_errors_name_the_key(cluster, where, words):
    message = error(cluster)
    assert message.startswith("t.toml: %s: " % where) and words in message


def test_a_cluster_needs_the_namespace_rules_in_the_file():
    assert "needs the namespace's [[rules]]" in error({"redis": "redis://a:1", "node_url": "ws://a:1"}, rules=False)


def test_the_password_never_reaches_an_error():
    assert "hunter2" not in error({"redis": "redis://:hunter2@a:1/zz", "node_url": "ws://a:1"})
