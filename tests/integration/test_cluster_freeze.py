"""A node frozen longer than the expiry (issue 13 item 3): SIGSTOP makes its heartbeat key expire,
the other node sweeps its registry entries; after SIGCONT the node sees its key had expired and
registers its still-connected listeners again and announces them, so a sender on the other node
reaches them without the listener reconnecting."""

import os
import signal
import time
from urllib.parse import urlsplit

import pytest

from tests.support.cluster_nodes import EXPIRY, HEARTBEAT, cluster_status, start_node, wait_joined
from tests.support.rawws import RawWS, hc_url, listen, token
from tests.support.redis_server import RedisServer
from tests.support.waits import wait_until

BACK_WITHIN = 10 * HEARTBEAT + 2  # seconds after SIGCONT for the entries and the route to be back


@pytest.fixture
def cluster(tmp_path):
    redis = RedisServer(tmp_path / "redis")
    nodes = []
    try:
        for i in (1, 2):
            nodes.append(start_node(tmp_path, redis, "node%d" % i, "n%d" % i))
        wait_joined(nodes)
        yield redis, nodes
    finally:
        for node in nodes:
            node.stop()
        redis.stop()


def entries(redis, path):
    flat = redis.command("HGETALL", "relayd:listeners:" + path) or []
    return dict(zip(flat[::2], flat[1::2]))


def echo_through(sender_node, ctl, payload):
    """A sender on ``sender_node`` reaches the listener behind ``ctl``; its leg echoes ``payload``.
    None when the sender is refused (the listener unknown there)."""
    sender = RawWS(sender_node.port, timeout=5).start(hc_url(sender_node, "echo", "connect"),
                                                      {"ServiceBusAuthorization": token(sender_node, "echo")})
    try:
        try:
            address = ctl.recv_json(timeout=1)["accept"]["address"]
        except TimeoutError:
            return sender.finish(timeout=5)  # refused: the status
        leg = RawWS(urlsplit(address).port).start(address)
        try:
            assert leg.finish() == 101 and sender.finish() == 101
            sender.send_message(payload)
            got = leg.recv_message(5)
            leg.send_message(got[1])
            return sender.recv_message(5)[1]
        finally:
            leg.close()
    finally:
        sender.close()


def test_a_node_frozen_past_the_expiry_registers_its_listeners_again_when_it_resumes(cluster):
    redis, (one, two) = cluster
    ctl = listen(one, "echo")
    try:
        assert list(entries(redis, "echo").values()) == ["n1"]
        assert wait_until(lambda: echo_through(two, ctl, b"before") == b"before", 5)
        os.kill(one.proc.pid, signal.SIGSTOP)
        try:
            # node 2 sweeps node 1's entries once its key has expired
            assert wait_until(lambda: not entries(redis, "echo"), EXPIRY + 10 * HEARTBEAT + 2)
            assert redis.command("EXISTS", "relayd:node:n1") == 0
        finally:
            os.kill(one.proc.pid, signal.SIGCONT)
        resumed = time.monotonic()
        assert wait_until(lambda: list(entries(redis, "echo").values()) == ["n1"], BACK_WITHIN), \
            one.log_text()[-2000:]
        assert wait_until(lambda: echo_through(two, ctl, b"after") == b"after", BACK_WITHIN)
        assert time.monotonic() - resumed < BACK_WITHIN
        assert "cluster: this node's heartbeat had expired" in one.log_text()
        assert cluster_status(one)["rejoined"] == 1 and cluster_status(two)["rejoined"] == 0
    finally:
        ctl.close()
