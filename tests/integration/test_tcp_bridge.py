"""TCP relaying with real peers: redis-server behind ``relayd bridge -R``, reached with
redis-cli and redis-py through a port-mapped relay port and through ``relayd bridge -L``;
half-close, parallel connections, and net.tcp preamble faults."""

import os
import socket
import subprocess
import threading
import time

import pytest

from tests.support.net import free_port, recv_all, serve_tcp, wait_sent
from tests.support.relay import ROOT_KEY, Bridge, SharedRelay, require_tool, stop_process
from tests.support.waits import wait_listening

TCP_CONFIG = """
[[hybrid_connections]]
path = "redis"

[[hybrid_connections]]
path = "echo-tcp"

[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "port"
entity = "redis"
allow_anonymous = true

[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "nettcp"
"""


@pytest.fixture(scope="module")
def _tcp_relay_process(tmp_path_factory):
    relay = SharedRelay(tmp_path_factory.mktemp("tcp-relay"), extra=TCP_CONFIG)
    relay.redis_port = relay.door_port("port door (redis)")
    relay.nettcp_port = relay.door_port("nettcp door (routed by Via)")
    yield relay
    relay.stop()


@pytest.fixture
def tcp_relay(_tcp_relay_process):
    """The module's relay with the TCP doors, lent to one test at a time: each test leaves it
    with no listener and no pending rendezvous (see tests.support.relay.SharedRelay)."""
    yield from _tcp_relay_process.borrowed()


@pytest.fixture
def redis_server(tmp_path):
    require_tool("redis-server", "the TCP relay tests use a real Redis (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_listening(port)
    yield port
    stop_process(proc)


def test_redis_through_port_mapped_relay_and_bridge_local(tmp_path, tcp_relay, redis_server):
    import redis

    remote = Bridge(tmp_path, tcp_relay, "-R", "redis:127.0.0.1:%d" % redis_server)
    local = Bridge(tmp_path, tcp_relay, "-L", "127.0.0.1:0:redis")
    try:
        remote.wait(r"online")
        local_port = local.listening_port()
        require_tool("redis-cli", "redis-cli (apt-get install redis-tools)")
        for port in (tcp_relay.redis_port, local_port):
            out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "PING"], capture_output=True,
                                 text=True, timeout=20)
            assert out.stdout.strip() == "PONG", (out.stdout, out.stderr, remote.text()[-2000:])
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=20)
            value = os.urandom(3_000_000)
            client.set("k%d" % port, value)
            assert client.get("k%d" % port) == value
            pipe = client.pipeline()
            for i in range(500):
                pipe.incr("counter%d" % port)
            assert pipe.execute()[-1] == 500
            client.close()
        remote.wait(r"\[\w+\]: open")
        remote.wait(r"\[\w+\]: closed by the (local|relay) side.*bytes in")  # the connection log
    finally:
        local.stop()
        remote.stop()


def _echo_until_eof_server():
    """A TCP service that reads until EOF, then sends back everything it read and closes."""

    def serve(conn):
        chunks = []
        while True:
            data = conn.recv(65536)
            if not data:
                break
            chunks.append(data)
        conn.sendall(b"".join(chunks))
        conn.close()

    return serve_tcp(serve)


def test_half_close_and_parallel_connections_through_bridges(tmp_path, tcp_relay):
    srv = _echo_until_eof_server()
    config = tmp_path / "bridge.toml"  # the -R side runs from a bridge config file
    config.write_text('connection_string = "Endpoint=ws://127.0.0.1:%d/;SharedAccessKeyName=root;'
                      'SharedAccessKey=%s"\nremote = ["echo-tcp:127.0.0.1:%d"]\n'
                      % (tcp_relay.port, ROOT_KEY, srv.getsockname()[1]))
    remote = Bridge(tmp_path, tcp_relay, "--config", str(config))
    local = Bridge(tmp_path, tcp_relay, "-L", "0:echo-tcp")
    try:
        remote.wait(r"online")
        local_port = local.listening_port()
        results = {}

        def one(i):
            payload = os.urandom(200_000 + i)
            with socket.create_connection(("127.0.0.1", local_port), timeout=30) as c:
                c.sendall(payload)
                c.shutdown(socket.SHUT_WR)  # half-close: the service only answers after EOF
                got = recv_all(c)
            results[i] = got == payload

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == {i: True for i in range(8)}, (results, remote.text()[-2000:])
    finally:
        local.stop()
        remote.stop()
        srv.close()


def test_nettcp_door_faults(tcp_relay):
    from relayd.wire import nmf

    def exchange(via):
        with socket.create_connection(("127.0.0.1", tcp_relay.nettcp_port), timeout=10) as c:
            c.sendall(b"\x00\x01\x00\x01\x02" + nmf.encode_via(via) + b"\x03\x08\x0c")
            return recv_all(c)

    assert exchange("net.tcp://example/nowhere") == nmf.fault("EndpointNotFound")
    assert exchange("net.tcp://example/echo") == nmf.fault("EndpointAccessDenied")  # echo needs a token
    assert exchange("net.tcp://example/open") == nmf.fault("EndpointUnavailable")  # anonymous, no listener
    with socket.create_connection(("127.0.0.1", tcp_relay.nettcp_port), timeout=10) as c:
        c.sendall(b"\x00\x02\x00")
        assert c.recv(4096) == nmf.fault("UnsupportedVersion")
    assert exchange("net.tcp://example/" + "v" * 3000) == nmf.fault("ViaTooLong")
    # a Send token in the Via query passes the door's check (then: no listener on echo)
    from relayd.wire import sas
    from tests.support.relay import SEND_KEY
    from urllib.parse import quote

    token = sas.make_token("http://example/echo", "sender", SEND_KEY, int(time.time()) + 60)
    assert exchange("net.tcp://example/echo?sb-hc-token=" + quote(token, safe="")) == nmf.fault("EndpointUnavailable")
    wrong = sas.make_token("http://example/echo", "sender", "d3Jvbmcta2V5LWZvci10ZXN0cw==", int(time.time()) + 60)
    assert exchange("net.tcp://example/echo?sb-hc-token=" + quote(wrong, safe="")) == nmf.fault("EndpointAccessDenied")


def _tagging_server(tag):
    """A TCP service that answers every connection with its tag and closes."""

    def serve(conn):
        conn.sendall(tag)
        conn.close()

    return serve_tcp(serve)


def test_several_remote_agents_on_one_entity_are_balanced(tmp_path, tcp_relay):
    a, b = _tagging_server(b"A"), _tagging_server(b"B")
    agents = [Bridge(tmp_path, tcp_relay, "-R", "echo-tcp:127.0.0.1:%d" % s.getsockname()[1]) for s in (a, b)]
    local = Bridge(tmp_path, tcp_relay, "-L", "0:echo-tcp")
    try:
        for agent in agents:
            agent.wait("online")
        local_port = local.listening_port()
        seen = []
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", local_port), timeout=20) as c:
                seen.append(c.recv(10))
        assert seen.count(b"A") >= 5 and seen.count(b"B") >= 5, seen
    finally:
        local.stop()
        for agent in agents:
            agent.stop()
        a.close()
        b.close()


def test_a_stalled_connection_does_not_stall_another(tmp_path, tcp_relay):
    """One local client stops reading a big download; another connection on the same relay,
    bridge and entity still gets its whole answer."""
    big = os.urandom(64 << 20)
    big_started = threading.Event()

    def serve(conn):
        kind = conn.recv(1)
        if kind == b"B":
            big_started.set()
        try:
            conn.sendall(big if kind == b"B" else b"small answer")
        except OSError:
            pass
        conn.close()

    srv = serve_tcp(serve)
    remote = Bridge(tmp_path, tcp_relay, "-R", "echo-tcp:127.0.0.1:%d" % srv.getsockname()[1])
    local = Bridge(tmp_path, tcp_relay, "-L", "0:echo-tcp")
    try:
        remote.wait("online")
        local_port = local.listening_port()
        stalled = socket.create_connection(("127.0.0.1", local_port), timeout=20)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"B")  # asks for 64 MiB, then never reads
        assert big_started.wait(20), remote.text()[-2000:]  # the download is under way (and stalls)
        started = time.time()
        with socket.create_connection(("127.0.0.1", local_port), timeout=20) as c:
            c.sendall(b"S")
            got = recv_all(c)
        assert got == b"small answer"
        assert time.time() - started < 10
        stalled.close()
    finally:
        local.stop()
        remote.stop()
        srv.close()


def test_nettcp_token_stays_at_the_relay(tmp_path, tcp_relay):
    """The listener gets the preamble without the relay's sb-hc-token in the Via."""
    from urllib.parse import quote

    from relayd.wire import nmf, nmf_preamble, sas
    from tests.support.relay import SEND_KEY

    seen = []

    def capture(conn):
        data = b""
        while len(data) < 40:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        seen.append(data)
        conn.sendall(b"\x0b")  # PreambleAck
        conn.close()

    srv = serve_tcp(capture)
    remote = Bridge(tmp_path, tcp_relay, "-R", "echo-tcp:127.0.0.1:%d" % srv.getsockname()[1])
    try:
        remote.wait("online")
        token = sas.make_token("http://example/echo-tcp", "sender", SEND_KEY, int(time.time()) + 60)
        via = "net.tcp://example/echo-tcp?x=1&sb-hc-token=" + quote(token, safe="")
        with socket.create_connection(("127.0.0.1", tcp_relay.nettcp_port), timeout=10) as c:
            c.sendall(b"\x00\x01\x00\x01\x02" + nmf.encode_via(via) + b"\x03\x08\x0c")
            assert c.recv(16) == b"\x0b"
        parsed = nmf_preamble.PreambleParser().feed(seen[0])
        assert parsed.via == "net.tcp://example/echo-tcp?x=1"
        assert b"sb-hc-token" not in seen[0] and parsed.rest == b"\x0c"
    finally:
        remote.stop()
        srv.close()


# -- a bridge that dies mid-stream: the port-door client sees a reset, not a clean EOF ----------

STREAM_BLOCK = bytes(i % 251 for i in range(251 * 256))


def _streaming_server(total=None):
    """A TCP service that sends the 251-byte pattern: ``total`` bytes then a clean close, or
    without end (until its peer goes away)."""

    def serve(conn):
        sent = 0
        try:
            while total is None or sent < total:
                block = STREAM_BLOCK if total is None else STREAM_BLOCK[: total - sent]
                conn.sendall(block)
                sent += len(block)
        except OSError:
            pass
        finally:
            conn.close()

    return serve_tcp(serve)


def _read_until_end(sock, deadline_s=20):
    """(bytes read, "eof" or "reset") reading ``sock`` until its end."""
    sock.settimeout(deadline_s)
    got = bytearray()
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return bytes(got), "eof"
            got += data
    except ConnectionResetError:
        return bytes(got), "reset"


def _pattern_ok(data):
    whole = STREAM_BLOCK * (len(data) // len(STREAM_BLOCK) + 1)
    return data == whole[: len(data)]


def test_port_door_client_gets_a_reset_when_bridge_r_is_killed_mid_stream(tmp_path, tcp_relay):
    import signal

    srv = _streaming_server()
    remote = Bridge(tmp_path, tcp_relay, "-R", "redis:127.0.0.1:%d" % srv.getsockname()[1])
    try:
        remote.wait("online")
        with socket.create_connection(("127.0.0.1", tcp_relay.redis_port), timeout=20) as c:
            got = bytearray()
            while len(got) < 1 << 20:
                data = c.recv(1 << 20)
                assert data, "the stream ended before the bridge was killed"
                got += data
            remote.proc.send_signal(signal.SIGKILL)
            remote.proc.wait(10)
            rest, end = _read_until_end(c)
        assert _pattern_ok(bytes(got) + rest)
        assert end == "reset", "the client saw a clean end of stream after %d bytes, though the bridge " \
                               "died mid-stream" % (len(got) + len(rest))
        assert "resetting the TCP connection" in tcp_relay.log_text()
    finally:
        remote.stop()
        srv.close()


def test_port_door_stream_that_the_service_ends_cleanly_ends_with_eof(tmp_path, tcp_relay):
    total = 2 * (1 << 20) + 12345
    srv = _streaming_server(total)
    remote = Bridge(tmp_path, tcp_relay, "-R", "redis:127.0.0.1:%d" % srv.getsockname()[1])
    try:
        remote.wait("online")
        with socket.create_connection(("127.0.0.1", tcp_relay.redis_port), timeout=20) as c:
            data, end = _read_until_end(c)
        assert end == "eof" and len(data) == total and _pattern_ok(data)
    finally:
        remote.stop()
        srv.close()


def _resetting_server(total):
    """A TCP service that sends ``total`` bytes of the pattern, then resets the connection
    (SO_LINGER 0) instead of ending its stream."""
    import struct

    def serve(conn):
        try:
            conn.sendall(STREAM_BLOCK * (total // len(STREAM_BLOCK)) + STREAM_BLOCK[: total % len(STREAM_BLOCK)])
            wait_sent(conn)  # the bytes have arrived before the reset
        except OSError:
            pass
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    return serve_tcp(serve)


@pytest.mark.parametrize("front", ["port door", "bridge -L"])
def test_a_local_service_reset_reaches_the_far_client_as_a_reset(tmp_path, tcp_relay, front):
    """The service behind bridge -R resets its connection: the client at the other end (on the
    relay's port door, or behind bridge -L) gets a reset too, never a clean end of stream."""
    total = 300_000
    srv = _resetting_server(total)
    entity = "redis" if front == "port door" else "echo-tcp"
    remote = Bridge(tmp_path, tcp_relay, "-R", "%s:127.0.0.1:%d" % (entity, srv.getsockname()[1]))
    local = None
    try:
        remote.wait("online")
        if front == "port door":
            port = tcp_relay.redis_port
        else:
            local = Bridge(tmp_path, tcp_relay, "-L", "0:echo-tcp")
            port = local.listening_port()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
            data, end = _read_until_end(c)
        assert _pattern_ok(data) and len(data) <= total
        assert end == "reset", "the client saw a clean end of stream after %d bytes, though the " \
                               "service reset its connection" % len(data)
        assert "without EOF (reset)" in remote.text()
    finally:
        if local is not None:
            local.stop()
        remote.stop()
        srv.close()
