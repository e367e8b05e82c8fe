"""A node's kill -9 in a real cluster (issue 13, Done when): redis-server and three ``twistd -n
relayd`` nodes on loopback; an SDK listener (HybridListener) and a ``relayd bridge -R`` (to a local
TCP echo), each given the endpoints [node 1, node 2], are online on node 1 and reached by senders
through node 3.  Node 1 is killed with SIGKILL: each listener is back on node 2 within 5 s, senders
through node 3 reach them there (across nodes again), and node 1's registry entries, read from
Redis itself, are gone within the expiry plus one heartbeat."""

import time

import pytest_twisted
from twisted.internet import defer, reactor

from relayd.client import ConnectionInfo, HybridListener, RelayConnectError
from relayd.cluster.registry import LISTENERS, NODE_ENTITIES, NODE_KEY, NODES, entity_key
from tests.integration.test_client import Recorder
from tests.integration.test_cluster_routing import wait_known
from tests.integration.test_listener_failover import FAILOVER_BOUND, cs, echo, echo_tcp, echoes, kill9
from tests.support.cluster_nodes import EXPIRY, HEARTBEAT, start_node, wait_joined
from tests.support.net import free_port, serve_tcp
from tests.support.redis_server import RedisServer
from tests.support.relay import Bridge, relay_status
from tests.support.waits import sleep, wait_for

ENTITIES = """
[[hybrid_connections]]
path = "fo-sdk"
[[hybrid_connections]]
path = "fo-bridge"
"""
PATHS = ("fo-sdk", "fo-bridge")
POLL = 0.02  # seconds between two looks: the times measured are upper bounds by this much
# A dead node's entries go when its heartbeat key expires (at most EXPIRY after its last beat, which
# came before the kill) and a live node's next sweep runs (every HEARTBEAT): EXPIRY + HEARTBEAT, with
# the timers on time; one heartbeat more for a late timer on a shared machine (measured: 1.42-1.71 s).
GONE_BOUND = EXPIRY + 2 * HEARTBEAT
SENDER_DEADLINE = 10.0  # seconds for senders through node 3 to succeed again after the kill


def entries_of(redis, node_id):
    """Everything of ``node_id`` in the registry, read from Redis: its heartbeat key, its place in
    the nodes set, its entity set and its listener entries of PATHS (``entity: [field]``)."""
    found = {}
    if redis.command("EXISTS", NODE_KEY + node_id):
        found["heartbeat"] = True
    if redis.command("SISMEMBER", NODES, node_id):
        found["in nodes"] = True
    entities = redis.command("SMEMBERS", NODE_ENTITIES + node_id)
    if entities:
        found["entities"] = sorted(entities)
    for path in PATHS:
        flat = redis.command("HGETALL", LISTENERS + entity_key(path)) or []
        fields = [flat[i] for i in range(0, len(flat), 2) if flat[i + 1] == node_id]
        if fields:
            found[path] = fields
    return found


def registered_on(redis, path):
    """The node ids ``path``'s listeners are registered on, read from Redis."""
    flat = redis.command("HGETALL", LISTENERS + entity_key(path)) or []
    return sorted(flat[i + 1] for i in range(0, len(flat), 2))


async def first_seen(conditions, seen, since, timeout=FAILOVER_BOUND * 2):
    """Poll every ``conditions`` (name: predicate) together until all held or ``timeout`` passed;
    ``seen[name]``: seconds from ``since`` to when it was first seen true."""
    while len(seen.keys() & conditions.keys()) < len(conditions) and time.monotonic() < since + timeout:
        for name, holds in conditions.items():
            if name not in seen and holds():
                seen[name] = time.monotonic() - since
        await sleep(POLL)


async def echoes_soon(info, path, payload, deadline):
    """``echoes``, tried again while the relay answers 404 (node 3 not told yet), until ``deadline``."""
    while True:
        try:
            return await echoes(info, path, payload)
        except RelayConnectError as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
        await sleep(POLL)


@pytest_twisted.ensureDeferred
async def test_listeners_of_a_killed_node_are_back_on_another_within_5_s_and_its_entries_expire(tmp_path):
    redis = RedisServer(tmp_path / "redis")
    service = serve_tcp(echo_tcp)
    nodes, bridge, listener, watch = {}, None, None, None
    try:
        for i in (1, 3):
            nodes[i] = start_node(tmp_path, redis, "node%d" % i, "n%d" % i, extra=ENTITIES)
        # Node 2 is not up yet: both listeners start on node 1, whichever endpoint they try first.
        two_port = free_port()
        both = cs(nodes[1].url, "ws://127.0.0.1:%d" % two_port)
        status = Recorder()
        listener = HybridListener(reactor, ConnectionInfo.parse(both), "fo-sdk", echo, on_status=status)
        bridge = Bridge(tmp_path, None, "-R", "fo-bridge:127.0.0.1:%d" % service.getsockname()[1],
                        connection_string=both)
        await listener.start()
        await wait_for(lambda: bridge.text().count(" online ") == 1, timeout=30)
        assert listener.endpoint.port == nodes[1].port
        nodes[2] = start_node(tmp_path, redis, "node2", "n2", extra=ENTITIES, port=two_port)
        wait_joined(list(nodes.values()))
        assert [registered_on(redis, p) for p in PATHS] == [["n1"], ["n1"]]
        before = entries_of(redis, "n1")
        assert before["heartbeat"] and before["entities"] == sorted(PATHS), before

        three = ConnectionInfo.parse(cs(nodes[3].url))
        for path in PATHS:
            wait_known(nodes[3], path)
        assert await echoes(three, "fo-sdk", "before") == "before"
        assert await echoes(three, "fo-bridge", b"before, by TCP") == b"before, by TCP"

        taken = relay_status(nodes[2])["routing"]["taken"]
        ttl = redis.command("PTTL", NODE_KEY + "n1") / 1000.0  # what node 1's last heartbeat left it
        killed = kill9(nodes[1])
        seen = {}
        watch = defer.ensureDeferred(first_seen({
            "SDK": lambda: len(status.of("online")) == 2 and listener.endpoint.port == two_port,
            "bridge": lambda: bridge.text().count(" online ") == 2,
            "registered on node 2": lambda: all("n2" in registered_on(redis, p) for p in PATHS),
            "node 1 entries gone": lambda: not entries_of(redis, "n1"),
        }, seen, killed))
        await wait_for(lambda: {"SDK", "bridge"} <= set(seen) or watch.called, timeout=FAILOVER_BOUND * 2)
        assert {"SDK", "bridge"} <= set(seen), (seen, status.events[-5:], bridge.text()[-2000:])
        # senders through node 3 reach both listeners on node 2, while node 1's entries may remain
        sdk = await echoes_soon(three, "fo-sdk", "after", killed + SENDER_DEADLINE)
        tcp = await echoes_soon(three, "fo-bridge", b"after, by TCP", killed + SENDER_DEADLINE)
        seen["senders again"] = time.monotonic() - killed
        await watch
        if "SDK" in seen:
            seen["SDK"] = status.of("online")[1][0] - killed  # its own clock: when it was online again
        print("node 1's heartbeat key had %.3f s to live at the kill" % ttl)
        print("after kill -9 of node 1: " + ", ".join("%s %.3f s" % (name, t) for t, name in
                                                       sorted((t, name) for name, t in seen.items())))
        assert {"SDK", "bridge", "registered on node 2", "node 1 entries gone"} <= set(seen), (
            seen, entries_of(redis, "n1"), status.events[-5:], bridge.text()[-2000:])
        assert seen["SDK"] < FAILOVER_BOUND and seen["bridge"] < FAILOVER_BOUND, seen
        assert "connecting ws://127.0.0.1:%d/$hc/fo-bridge" % two_port in bridge.text()
        assert [d.code for _, d in status.of("offline")] == [1006]  # dropped, not closed
        assert (sdk, tcp) == ("after", b"after, by TCP")
        assert relay_status(nodes[2])["routing"]["taken"] == taken + 2  # offered by node 3: across nodes
        assert seen["node 1 entries gone"] < GONE_BOUND, (seen, GONE_BOUND)
    finally:
        if watch is not None and not watch.called:
            watch.addErrback(lambda f: None)
            watch.cancel()
        if listener is not None:
            await listener.stop()
        if bridge is not None:
            bridge.stop()
        for node in nodes.values():
            node.stop()
        service.close()
        redis.stop()
