"""Connection bounds of the relay's HTTP port, attacked as a hostile client would, against a
``twistd -n relayd`` subprocess over loopback (issue 8, item 12): idle and dribbling keep-alive
connections time out, every connection counts against ``limits.max_connections`` for its whole
life, and running out of file descriptors does not take the door down."""

import resource
import select
import socket
import time

import psutil
import pytest

from tests.support.net import read_response
from tests.support.relay import RelayProcess, SharedRelay, write_config

LIMITS = """
[[hybrid_connections]]
path = "soapy"
kind = "soap"
requires_client_authorization = false

[limits]
max_connections = {max_connections}
http_keepalive_timeout = {keepalive}
open_handshake_timeout = 1.5
http_body_timeout = 1.5
http_body_min_rate = 1024
"""

REQUEST = b"GET /open/x HTTP/1.1\r\nHost: relay\r\n\r\n"


def config(tmp_path, max_connections=100, keepalive=1.0):
    return write_config(tmp_path, extra=LIMITS.format(max_connections=max_connections, keepalive=keepalive))


class LimitedRelay(RelayProcess):
    """A relay subprocess started with a soft open-files limit of ``nofile``."""

    def __init__(self, workdir, config_path, nofile):
        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        super().__init__(workdir, config_path, preexec_fn=limit)


def connect(relay, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=timeout)
    return s


def closed_by_peer(sock):
    """True when the relay has closed ``sock`` (EOF or reset); does not block."""
    r, _, _ = select.select([sock], [], [], 0)
    if not r:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def wait_all_closed(socks, timeout):
    deadline = time.monotonic() + timeout
    open_ = list(socks)
    while open_ and time.monotonic() < deadline:
        open_ = [s for s in open_ if not closed_by_peer(s)]
        time.sleep(0.05)
    return open_


def dribble_until_closed(sock, data, interval, timeout):
    """Send ``data`` one byte every ``interval`` s; return (seconds until the relay closed, what it
    sent), or (None, ...) if it was still open after ``timeout``."""
    start = time.monotonic()
    received = b""
    i = 0
    sock.setblocking(False)
    while time.monotonic() - start < timeout:
        if i < len(data):
            try:
                sock.send(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start, received
            i += 1
        r, _, _ = select.select([sock], [], [], interval)
        if r:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return time.monotonic() - start, received
            if not chunk:
                return time.monotonic() - start, received
            received += chunk
    return None, received


def fds(relay):
    return psutil.Process(relay.proc.pid).num_fds()


@pytest.fixture(scope="module")
def _limited_process(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http-limits")
    relay = SharedRelay(tmp, extra=LIMITS.format(max_connections=100, keepalive=1.0))
    yield relay
    relay.stop()


@pytest.fixture
def limited(_limited_process):
    """The module's relay with short HTTP deadlines, lent to one test at a time (each closes
    its connections; see tests.support.relay.SharedRelay)."""
    yield from _limited_process.borrowed()


def test_idle_keepalive_connections_time_out(limited):
    socks = [connect(limited) for _ in range(60)]
    try:
        for s in socks:
            s.sendall(REQUEST)
        for s in socks:
            status = read_response(s)
            assert status is not None and status[0] == 502  # no listener; the connection stays open
        start = time.monotonic()
        still_open = wait_all_closed(socks, 6.0)
        assert not still_open, "%d of 60 idle keep-alive connections still open after %.1f s" % (
            len(still_open), time.monotonic() - start)
    finally:
        for s in socks:
            s.close()


def test_dribbled_second_request_head_times_out(limited):
    s = connect(limited)
    try:
        s.sendall(REQUEST)
        assert read_response(s)[0] == 502
        took, received = dribble_until_closed(s, REQUEST[:-4] + b"X-Slow: " + b"a" * 200, 0.2, 8.0)
        assert took is not None, "a 5 byte/s request head is still being read after 8 s"
        assert took < 4.0
        assert received.startswith(b"HTTP/1.1 408 ")
    finally:
        s.close()


def test_dribbled_request_body_times_out(limited):
    s = connect(limited)
    try:
        head = (b"POST /soapy HTTP/1.1\r\nHost: relay\r\nContent-Type: text/xml\r\n"
                b"Content-Length: 5000\r\n\r\n")
        s.sendall(head)
        took, received = dribble_until_closed(s, b"<" * 5000, 0.2, 8.0)
        assert took is not None, "a 5 byte/s request body is still being read after 8 s"
        assert took < 4.0
        assert received.startswith(b"HTTP/1.1 408 ")
    finally:
        s.close()


def test_keepalive_connections_count_against_max_connections(tmp_path):
    relay = RelayProcess(tmp_path, config(tmp_path, max_connections=100, keepalive=60))
    socks = []
    try:
        baseline = fds(relay)
        rss_before = psutil.Process(relay.proc.pid).memory_info().rss
        served = refused = 0
        for _ in range(300):
            s = connect(relay)
            socks.append(s)
            s.sendall(REQUEST)
            answer = read_response(s)
            if answer is not None and answer[0] == 502:
                served += 1
            else:
                # past the limit: a 503 and the connection closed at once (or a reset)
                assert answer is None or answer[0] == 503
                assert answer is None or b"connection limit" in answer[2]
        refused = 300 - served
        assert served <= 100, "%d keep-alive connections served against max_connections = 100" % served
        assert refused >= 200
        held = fds(relay) - baseline
        print("300 keep-alive clients against max_connections = 100: %d served, %d refused, relay holds "
              "%d more descriptors" % (served, refused, held))
        assert held <= 100 + 5, "the relay holds %d more descriptors than at start" % held
        grown = (psutil.Process(relay.proc.pid).memory_info().rss - rss_before) / (1 << 20)
        print("relay RSS grew by %.1f MiB" % grown)
        assert grown < 16, "relay RSS grew by %.1f MiB for 100 idle keep-alive connections" % grown
        # the other doors behind the port are counted by the same limit
        for raw in (b"GET /$relayd/status HTTP/1.1\r\nHost: relay\r\n\r\n",
                    b"GET /$hc/open?sb-hc-action=connect HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"):
            s = connect(relay)
            socks.append(s)
            s.sendall(raw)
            answer = read_response(s)
            assert answer is None or answer[0] == 503, answer
        # closing the served ones frees their places
        for s in socks:
            s.close()
        socks = []
        deadline = time.monotonic() + 10
        while fds(relay) > baseline + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        s = connect(relay)
        socks.append(s)
        s.sendall(REQUEST)
        assert read_response(s)[0] == 502
    finally:
        for s in socks:
            s.close()
        relay.stop()


def test_running_out_of_descriptors_does_not_take_the_door_down(tmp_path):
    # default max_connections, a process limit of 256 open files, 400 keep-alive clients
    relay = LimitedRelay(tmp_path, write_config(tmp_path), nofile=256)
    socks = []
    codes = []
    try:
        for _ in range(400):
            s = connect(relay)
            socks.append(s)
            s.sendall(REQUEST)
            answer = read_response(s, timeout=5)
            assert answer is not None, "connection %d got no answer (reset or hung)" % len(socks)
            assert answer[0] in (502, 503)
            codes.append(answer[0])
        print("open-files limit 256, 400 keep-alive clients: %d served, %d answered 503, relay fds %d"
              % (codes.count(502), codes.count(503), fds(relay)))
        assert fds(relay) < 256
        # a newcomer is told, not reset
        s = connect(relay)
        socks.append(s)
        s.sendall(REQUEST)
        answer = read_response(s)
        assert answer is not None and answer[0] == 503
        for s in socks:
            s.close()
        socks = []
        deadline = time.monotonic() + 10
        answer = None
        while time.monotonic() < deadline:
            s = connect(relay)
            s.sendall(REQUEST)
            answer = read_response(s)
            s.close()
            if answer is not None and answer[0] == 502:
                break
            time.sleep(0.1)
        assert answer is not None and answer[0] == 502, "the door did not recover after the clients left"
        assert "max_connections" in relay.log_text()  # the clamp is explained in the log
    finally:
        for s in socks:
            s.close()
        relay.stop()


def test_connection_ceiling_keeps_headroom_below_the_open_files_limit():
    from relayd.transports.front import connection_ceiling

    assert connection_ceiling(10000, 1024) == (896, True)
    assert connection_ceiling(0, 256) == (192, True)  # "unlimited" is still bounded by descriptors
    assert connection_ceiling(100, 1024) == (100, False)
    assert connection_ceiling(100, None) == (100, False)
