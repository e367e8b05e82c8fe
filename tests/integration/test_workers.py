"""All cores of one host (issue 13 item 7): ``relayd serve --workers N`` runs N ``twistd -n relayd``
nodes of one Redis cluster that share the public port (SO_REUSEPORT) and each have their own
node port (node_url's port + i) for rendezvous legs, under a supervisor that restarts a crashed
worker and stops them all on SIGTERM.  A real redis-server, real processes, raw sockets."""

import os
import select
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import psutil
import pytest

from tests.support.manage import call
from tests.support.rawws import RawWS, hc_url, token
from tests.support.relay import relay_status, stop_process, write_config
from tests.support.waits import wait_until
from tests.integration.test_cluster_core import redis  # noqa: F401 (the fixture: a redis-server)

WORKERS = 2


class Port:
    """What the test helpers need of a relay: a loopback port."""

    def __init__(self, port):
        self.port = port
        self.url = "ws://127.0.0.1:%d" % port
        self.http_url = "http://127.0.0.1:%d" % port


def free_ports(count):
    """A base port with ``count`` free ports from it on, and another free port."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        held = []
        try:
            for port in range(base, base + count + 1):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base, base + count
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no %d consecutive free ports" % (count + 1))


class Workers:
    """``relayd serve --workers N`` as a child process, its output in a log file."""

    def __init__(self, workdir, config, workers=WORKERS):
        self.log_path = os.path.join(str(workdir), "serve.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "relayd.cli", "serve", "--workers", str(workers),
                                      "--config", config], cwd=str(workdir), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def worker_pids(self):
        try:
            return sorted(child.pid for child in psutil.Process(self.proc.pid).children()
                          if child.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return []

    def stop(self):
        pids = self.worker_pids()
        stop_process(self.proc, timeout=20)
        for pid in pids:  # never leave a worker behind, whatever the test did
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()


def status_of(port):
    try:
        return relay_status(Port(port), timeout=3)
    except OSError:
        return None


def serving(port, nodes=WORKERS):
    status = status_of(port)
    return status is not None and status["cluster"]["redis"] == "up" and status["cluster"]["nodes"] == nodes


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def cluster(tmp_path, redis):
    base, public = free_ports(WORKERS)
    extra = '\n[cluster]\nredis = "%s"\nnode_url = "ws://127.0.0.1:%d"\nheartbeat = 0.25\nexpiry = 1.5\n' % (
        redis.url, base)
    config = write_config(tmp_path, extra=extra, listen='["tcp:%d:interface=127.0.0.1"]' % public)
    workers = Workers(tmp_path, config)
    try:
        for i in range(WORKERS):
            assert wait_until(lambda: serving(base + i), 30), workers.log_text()[-3000:]
        yield workers, public, [base + i for i in range(WORKERS)]
    finally:
        workers.stop()


def listen(port, other, path="echo"):
    """A listener on ``port``, once the worker on ``other`` counts it too (the registry has it)."""
    node = Port(port)
    ctl = RawWS(port).start(hc_url(node, path, "listen"), {"ServiceBusAuthorization": token(node, path)})
    assert ctl.finish() == 101, ctl.status
    assert wait_until(lambda: call(Port(other), "GET", "entities/" + path)[1]["listeners"] == 1, 10)
    return ctl


def offer(ctl, sender_port, path="echo"):
    """A sender on ``sender_port`` for the listener ``ctl``: the accept address and the sender once
    the listener was offered it, or (None, the HTTP status the sender got)."""
    sender = RawWS(sender_port).start(hc_url(Port(sender_port), path, "connect"),
                                      {"ServiceBusAuthorization": token(Port(sender_port), path)})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ready, _, _ = select.select([ctl.sock, sender.sock], [], [], 0.2)
        if ctl.sock in ready or ctl.buf:
            return ctl.recv_json(5)["accept"]["address"], sender
        if sender.sock in ready:
            return None, sender.finish(5)
    raise AssertionError("neither an offer nor an answer within 10 s")


def echo_through(address, sender):
    """The listener's leg at ``address``; bytes both ways between it and the sender."""
    parts = urlsplit(address)
    leg = RawWS(parts.port).start(address)
    assert leg.finish() == 101, leg.status
    assert sender.finish() == 101, sender.status
    sender.send_message(b"up from the sender")
    assert leg.recv_message() == (2, b"up from the sender")
    leg.send_message(b"down from the listener")
    assert sender.recv_message() == (2, b"down from the listener")
    return leg


def test_workers_share_the_public_port_and_legs_go_to_the_senders_worker(cluster):
    workers, public, node_ports = cluster
    assert len(workers.worker_pids()) == WORKERS
    # first connections on the shared port reach every worker (the kernel spreads them)
    seen = {status_of(public)["cluster"]["node_id"] for _ in range(24)}
    assert seen == {status_of(port)["cluster"]["node_id"] for port in node_ports}
    assert len(seen) == WORKERS
    # a sender on the shared port meets the listener on worker 0: the rendezvous address names
    # the sender's worker's own node port, never the shared one (where the leg could land on
    # another worker); a sender that reached the other worker needs cross-node routing
    met = {port: 0 for port in node_ports}
    ctl = listen(node_ports[0], node_ports[1])
    for _ in range(12):
        address, sender = offer(ctl, public)
        if address is not None:
            assert urlsplit(address).port in node_ports, address
            for ws in (echo_through(address, sender), sender):
                ws.close()
            met[urlsplit(address).port] += 1
        else:  # the other worker, without cross-node routing (the next test): no listener there
            assert sender == 404, sender
    ctl.close()
    assert met[node_ports[0]], "no sender on the shared port reached the listener's worker in 12 tries"


def test_a_listener_and_a_sender_on_different_workers_meet(cluster):
    workers, public, node_ports = cluster
    ctl = listen(node_ports[0], node_ports[1])
    address, sender = offer(ctl, node_ports[1])
    assert address is not None, "the sender on worker 1 got %s" % sender
    assert urlsplit(address).port == node_ports[1], address  # the leg goes to the sender's worker
    for ws in (echo_through(address, sender), sender, ctl):
        ws.close()


def test_a_killed_worker_is_restarted_and_sigterm_stops_them_all(cluster):
    workers, public, node_ports = cluster
    before = workers.worker_pids()
    victim = before[-1]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: victim not in workers.worker_pids() and len(workers.worker_pids()) == WORKERS, 15), \
        workers.log_text()[-3000:]
    assert workers.proc.poll() is None
    for port in node_ports:  # the new worker serves its node port again, in the cluster
        assert wait_until(lambda: serving(port), 30), workers.log_text()[-3000:]
    after = workers.worker_pids()
    workers.proc.send_signal(signal.SIGTERM)
    assert workers.proc.wait(20) == 0, workers.log_text()[-3000:]
    for pid in set(before) | set(after):
        assert wait_until(lambda: gone(pid), 5), "worker %d still running" % pid
    assert "(pid %d) exited" % victim in workers.log_text()


def test_a_killed_supervisor_leaves_no_worker_behind(cluster):
    workers, public, node_ports = cluster
    pids = workers.worker_pids()
    assert len(pids) == WORKERS
    os.kill(workers.proc.pid, signal.SIGKILL)
    workers.proc.wait(5)
    for pid in pids:
        assert wait_until(lambda: gone(pid), 15), "worker %d outlived its supervisor" % pid


def test_workers_need_a_cluster(tmp_path):
    config = write_config(tmp_path, listen='["tcp:0:interface=127.0.0.1"]')
    done = subprocess.run([sys.executable, "-m", "relayd.cli", "serve", "--workers", "2", "--config", config],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "--workers" in done.stderr and "[cluster]" in done.stderr, done.stderr
    done = subprocess.run([sys.executable, "-m", "relayd.cli", "serve", "--workers", "none"],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--workers" in done.stderr, done.stderr


def test_two_relays_share_an_ssl_port_with_reuseport(tmp_path):
    """``reuseport=1`` on an ``ssl:`` address (relayd/reuseport.py: the socket bound with
    SO_REUSEPORT, TLS through Twisted's TLSMemoryBIOFactory): two plain relays bind one port (the
    second could not without it) and both answer over TLS with ALPN http/1.1 -- each has an entity
    of its own, so the answers say which relay took the connection."""
    import ssl

    from relayd.wire import sas
    from tests.support.relay import ROOT_KEY, RelayProcess
    from tests.support.tls import make_ca_and_server

    certs = make_ca_and_server(str(tmp_path))
    port = free_ports(1)[0]
    listen = '["ssl:%d:interface=127.0.0.1:privateKey=%s:certKey=%s:reuseport=1"]' % (
        port, certs["server-key.pem"], certs["server-cert.pem"])
    relays = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            config = write_config(tmp_path / name, listen=listen, extra='[[hybrid_connections]]\npath = "only-a"\n'
                                  if name == "a" else "")
            relays.append(RelayProcess(tmp_path / name, config))
        assert [relay.port for relay in relays] == [port, port]
        context = ssl.create_default_context(cafile=certs["ca.pem"])
        context.set_alpn_protocols(["h2", "http/1.1"])
        auth = sas.make_token("http://127.0.0.1:%d/" % port, "root", ROOT_KEY, int(time.time()) + 300)
        statuses = set()
        for _ in range(16):
            with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                     server_hostname="localhost") as tls:
                assert tls.selected_alpn_protocol() == "http/1.1"
                tls.sendall(b"GET /$relayd/entities/only-a HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: %s\r\n"
                            b"Connection: close\r\n\r\n" % (port, auth.encode()))
                reply = b""
                while b"\r\n" not in reply:
                    chunk = tls.recv(4096)
                    assert chunk, reply
                    reply += chunk
                statuses.add(reply.split(b" ", 2)[1])
        assert statuses == {b"200", b"404"}  # relay a has the entity, relay b not: both answered
    finally:
        for relay in relays:
            relay.stop()
