"""Nodes of a relayd cluster for tests: ``twistd -n relayd`` processes sharing one redis-server
(:class:`tests.support.redis_server.RedisServer`), each with its own port as its ``node_url``."""

from tests.support.net import free_port
from tests.support.relay import RelayProcess, relay_status, write_config
from tests.support.waits import wait_until

HEARTBEAT = 0.25
EXPIRY = 1.5


def start_node(tmp_path, redis, name, node_id=None, relay_extra="", extra="", port=None):
    """One node in ``tmp_path/name``; ``relay_extra``: more ``[relay]`` keys; ``extra``: more config;
    ``port``: its port (default: a free one), e.g. one a client was given before the node starts."""
    work = tmp_path / name
    work.mkdir(exist_ok=True)
    port = port or free_port()
    cluster = '\n[cluster]\nredis = "%s"\nnode_url = "ws://127.0.0.1:%d"\nheartbeat = %s\nexpiry = %s\n' % (
        redis.url, port, HEARTBEAT, EXPIRY)
    if node_id:
        cluster += 'node_id = "%s"\n' % node_id
    config = write_config(work, extra=extra + cluster, relay_extra=relay_extra,
                          listen='["tcp:%d:interface=127.0.0.1"]' % port)
    return RelayProcess(work, config)


def cluster_status(relay):
    return relay_status(relay)["cluster"]


def wait_joined(nodes, timeout=15):
    """Every node sees Redis up and all the others."""
    for node in nodes:
        assert wait_until(lambda: cluster_status(node)["redis"] == "up" and cluster_status(node)["nodes"] == len(nodes),
                          timeout), cluster_status(node)
