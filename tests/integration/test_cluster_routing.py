"""Sender-node rendezvous and events across nodes (issue 13 items 4, 5): a real redis-server and
three ``twistd -n relayd`` nodes on loopback; listeners on one node, senders and publishers on
another; the listener's node relays no data byte (its traffic counters)."""

import hashlib
import http.client
import os
import signal
import socket
import time
from urllib.parse import urlsplit

import pytest

from relayd.wire import nmf
from tests.integration.test_events_nettcp import Recorder, envelope
from tests.integration.test_events_nettcp import publish as publish_nettcp
from tests.interop.test_hyco_https import HttpsListener
from tests.interop.test_hyco_ws import NODE_DIR, NodeListener, run_node
from tests.support.cluster_nodes import start_node, wait_joined
from tests.support.manage import call
from tests.support.rawws import RawWS, hc_url, listen, token
from tests.support.redis_server import RedisServer
from tests.support.relay import Bridge, relay_status, require_tool
from tests.support.waits import wait_until

ACCEPT_TIMEOUT = 3
TCP_ENTITY = """
[[hybrid_connections]]
path = "tcp"
requires_client_authorization = false
"""
TCP_DOOR = """
[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "port"
entity = "tcp"
allow_anonymous = true

[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "nettcp"
"""


@pytest.fixture
def cluster(tmp_path):
    redis = RedisServer(tmp_path / "redis")
    nodes = []
    try:
        for i in (1, 2, 3):
            nodes.append(start_node(tmp_path, redis, "node%d" % i, "n%d" % i,
                                    relay_extra="accept_timeout = %d" % ACCEPT_TIMEOUT,
                                    extra=TCP_ENTITY + (TCP_DOOR if i == 2 else "")))  # a port door on node 2
        wait_joined(nodes)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        redis.stop()


def make(nodes, path, **fields):
    """The entity, made through the first of ``nodes`` unless the config declares it (echo),
    once every node has it: another node learns of it from a bus notice and reads it back from
    Redis, a few milliseconds later (docs/deployment.rst), and a client that came sooner would
    get a 404 there."""
    node = nodes[0]
    if call(node, "GET", "entities/" + path)[0] != 200 or fields:
        status, body = call(node, "PUT", "entities/" + path, fields)
        assert status == 201, body
    for other in nodes[1:]:
        assert wait_until(lambda: call(other, "GET", "entities/" + path)[0] == 200, 10), (other, path)


def wait_known(node, path, n=1):
    """``node`` counts ``n`` listeners of ``path`` (its own and the other nodes')."""
    assert wait_until(lambda: call(node, "GET", "entities/" + path)[1]["listeners"] == n, 10), \
        call(node, "GET", "entities/" + path)


def traffic(node):
    t = relay_status(node)["traffic"]
    return t["bytes_up"] + t["bytes_down"]


def node_env():
    require_tool("node", "the cluster interop tests need Node.js")
    for package in ("hyco-ws", "hyco-https"):
        require_tool(os.path.join(NODE_DIR, "node_modules", package),
                     "run: cd tests/interop/node && npm ci --no-audit --no-fund")
    return dict(os.environ)


def request(node, method, target, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=20)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def test_hyco_ws_listener_on_node1_echoes_a_sender_on_node3_and_node1_relays_no_byte(cluster):
    env = node_env()
    one, _two, three = cluster
    make(cluster, "echo")
    listener = NodeListener(one.url, "echo", env)
    try:
        listener.wait_listening()
        wait_known(three, "echo")
        before = traffic(one)
        out = run_node("sender.js", three.url, "echo", env, "--count=3", "--size=200000")
        assert out.returncode == 0 and out.stdout.strip() == "OK", (out.stdout, out.stderr, three.log_text()[-3000:])
        assert traffic(three) >= 2 * 3 * 200000  # the echo went both ways through node 3
        assert traffic(one) == before  # and not one byte of it through node 1
        assert relay_status(three)["routing"]["offered"] >= 1  # node 3 offered it to node 1 ...
        assert relay_status(one)["routing"]["taken"] >= 1  # ... which placed it on its listener
    finally:
        listener.stop()


def test_http_requests_through_node2_are_answered_by_hyco_https_on_node1(cluster):
    env = node_env()
    one, two, _three = cluster
    make(cluster, "web", requires_client_authorization=False)
    listener = HttpsListener(one.url, "web", env)
    try:
        listener.wait_listening()
        wait_known(two, "web")
        before = traffic(one)
        status, body, _ = request(two, "GET", "/web/hello?x=cluster")  # small: inline, across the bus
        assert (status, body) == (200, b"hello cluster")
        small = os.urandom(1000)  # small with a body: request + body forwarded, response body back
        status, body, headers = request(two, "POST", "/web/echo", small, {"Content-Type": "application/octet-stream"})
        assert (status, body) == (200, small)
        large = os.urandom(300000)  # over the inline limit: a rendezvous at node 2
        status, body, headers = request(two, "POST", "/web/echo", large, {"Content-Type": "application/octet-stream"})
        assert status == 200 and body == large
        assert headers["x-body-sha256"] == hashlib.sha256(large).hexdigest()
        status, body, _ = request(two, "GET", "/web/big?n=200000")  # a large response over the leg to node 2
        assert status == 200 and body == bytes(i % 251 for i in range(200000))
        assert traffic(one) == before
    finally:
        listener.stop()


def test_a_port_mapped_tcp_door_on_node2_reaches_a_bridge_on_node1(cluster, tmp_path):
    one, two, _three = cluster
    service = socket.socket()
    service.bind(("127.0.0.1", 0))
    service.listen(1)
    service.settimeout(10)
    bridge = Bridge(tmp_path, one, "-R", "tcp:127.0.0.1:%d" % service.getsockname()[1])
    try:
        bridge.wait(r"online")
        wait_known(two, "tcp")
        before = traffic(one)
        client = socket.create_connection(("127.0.0.1", two.door_port("port door (tcp)")), timeout=10)
        server, _ = service.accept()
        server.settimeout(10)
        data = os.urandom(100000)
        client.sendall(data)
        assert recv_exactly(server, len(data)) == data
        server.sendall(data[::-1])
        assert recv_exactly(client, len(data)) == data[::-1]
        client.close()
        server.close()
        assert traffic(one) == before  # the bytes went through node 2 only
    finally:
        bridge.stop()
        service.close()


def recv_exactly(sock, n):
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        assert chunk, "closed after %d of %d bytes" % (len(got), n)
        got += chunk
    return bytes(got)


def subscriber(node, path):
    return listen(node, path)


def read_events(ctl, n):
    bodies = []
    for _ in range(n):
        message = ctl.recv_json()["request"]
        assert message["method"] == "POST"
        opcode, body = ctl.recv_message()
        assert opcode == 2
        bodies.append(body)
    return bodies


def publish(node, path, body):
    status, reply, headers = request(node, "POST", "/" + path, body,
                                     {"ServiceBusAuthorization": token(node, path),
                                      "Content-Type": "application/octet-stream"})
    return status, headers.get("x-relayd-delivered"), reply


def test_a_multicast_event_published_on_node2_reaches_subscribers_on_nodes_1_and_3_in_order(cluster):
    one, two, three = cluster
    make(cluster, "bus", kind="multicast")
    subs = [subscriber(one, "bus"), subscriber(three, "bus")]
    wait_known(two, "bus", 2)
    events = [b"event %03d" % i for i in range(100)]
    for event in events:
        status, delivered, _ = publish(two, "bus", event)
        assert (status, delivered) == (202, "2")
    for ctl in subs:
        assert read_events(ctl, 100) == events
        ctl.close()


def test_a_net_tcp_event_session_on_node2_reaches_bridge_subscribers_on_nodes_1_and_3(cluster, tmp_path):
    one, two, three = cluster
    make(cluster, "news", kind="multicast", requires_client_authorization=False)
    recorders = [Recorder(), Recorder()]
    bridges = [Bridge(tmp_path, node, "-R", "news:net.tcp://127.0.0.1:%d/svc%d" % (r.port, i))
               for i, (node, r) in enumerate(zip((one, three), recorders))]
    try:
        for b in bridges:
            b.wait("online")
        wait_known(two, "news", 2)
        port = two.door_port("nettcp door (routed by Via)")
        records = [envelope(i) for i in range(100)]
        assert publish_nettcp(port, "net.tcp://127.0.0.1:%d/news" % port, records) == b"\x0b\x07"
        for i, r in enumerate(recorders):
            assert r.done.wait(20), two.log_text()[-2000:]
            preamble = (b"\x00\x01\x00\x01\x02" + nmf.encode_via("net.tcp://127.0.0.1:%d/svc%d" % (r.port, i))
                        + b"\x03\x08\x0c")
            assert [bytes(c) for c in r.connections] == [preamble + b"".join(records) + b"\x07"]
    finally:
        for b in bridges:
            b.stop()
        for r in recorders:
            r.stop()


def test_a_websocket_publisher_on_node3_reaches_subscribers_on_nodes_1_and_2_in_order(cluster):
    one, two, three = cluster
    make(cluster, "wsbus", kind="multicast")
    subs = [subscriber(one, "wsbus"), subscriber(two, "wsbus")]
    wait_known(three, "wsbus", 2)
    pub = RawWS(three.port).start(hc_url(three, "wsbus", "connect"), {"ServiceBusAuthorization": token(three, "wsbus")})
    assert pub.finish() == 101
    events = [b"ws event %03d" % i for i in range(100)]
    for event in events:
        pub.send_message(event)
    for ctl in subs:
        assert read_events(ctl, 100) == events
        ctl.close()
    pub.close()


def test_oneway_reaches_the_one_listener_on_another_node(cluster):
    one, two, _three = cluster
    make(cluster, "one", kind="oneway")
    ctl = subscriber(one, "one")
    wait_known(two, "one")
    for i in range(5):
        assert publish(two, "one", b"to the only one %d" % i)[:2] == (202, "1")
    assert read_events(ctl, 5) == [b"to the only one %d" % i for i in range(5)]
    ctl.close()


def test_the_accept_address_points_at_the_senders_node_and_a_rejection_reaches_the_sender(cluster):
    one, _two, three = cluster
    make(cluster, "picky")
    ctl = listen(one, "picky")
    wait_known(three, "picky")
    sender = RawWS(three.port).start(hc_url(three, "picky", "connect"),
                                     {"ServiceBusAuthorization": token(three, "picky")})
    address = ctl.recv_json()["accept"]["address"]
    assert urlsplit(address).port == three.port  # the leg goes to node 3, where the sender is
    leg = RawWS(three.port).start(address + "&sb-hc-statusCode=403&sb-hc-statusDescription=not+today")
    assert leg.finish() == 410
    assert sender.finish() == 403
    for ws in (ctl, sender, leg):
        ws.close()


def connect_status(node, path, timeout):
    sender = RawWS(node.port, timeout=timeout).start(hc_url(node, path, "connect"),
                                                     {"ServiceBusAuthorization": token(node, path)})
    try:
        return sender.finish(timeout=timeout)
    finally:
        sender.close()


def test_a_lost_offer_ends_as_the_senders_timeout_and_a_killed_node_as_404_never_a_hang(cluster):
    one, two, three = cluster
    make(cluster, "lost")
    make(cluster, "gone")
    ctls = [listen(one, "lost"), listen(two, "gone")]
    wait_known(three, "lost")
    wait_known(three, "gone")
    # node 1 frozen: Redis still takes node 3's offer for it, node 1 never answers
    os.kill(one.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert connect_status(three, "lost", ACCEPT_TIMEOUT + 10) == 504
        assert ACCEPT_TIMEOUT - 0.5 < time.monotonic() - started < ACCEPT_TIMEOUT + 2
    finally:
        os.kill(one.proc.pid, signal.SIGCONT)
    os.kill(two.proc.pid, signal.SIGKILL)  # node 3 still has node 2's listener in its registry
    two.proc.wait(10)
    started = time.monotonic()
    assert connect_status(three, "gone", ACCEPT_TIMEOUT + 10) in (404, 504)
    assert time.monotonic() - started < ACCEPT_TIMEOUT + 2
    for ctl in ctls:
        ctl.close()


def test_a_sender_on_node2_reaches_a_listener_the_moment_it_connected_on_node1(cluster):
    """No wait for node 2 to hear of the listener: it reads Redis when its view has none (or
    only the previous round's, which left)."""
    one, two, _three = cluster
    make(cluster, "fresh")
    for i in range(20):
        ctl = listen(one, "fresh")  # 101: registered in Redis
        sender = RawWS(two.port).start(hc_url(two, "fresh", "connect"),
                                       {"ServiceBusAuthorization": token(two, "fresh")})
        try:
            address = ctl.recv_json(timeout=ACCEPT_TIMEOUT + 2)["accept"]["address"]
            assert urlsplit(address).port == two.port
            leg = RawWS(two.port).start(address)
            assert leg.finish() == 101, (i, leg.status)
            assert sender.finish() == 101, (i, sender.status)
            leg.close()
        finally:
            sender.close()
            ctl.close()
    assert relay_status(two)["routing"]["lookups"] >= 1
