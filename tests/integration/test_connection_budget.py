"""``limits.max_connections`` is one budget for the whole relay (issue 8, item 12): sockets held
open on the TCP doors count against it as well as those on the HTTP port, a net.tcp client past
the limit gets the [MC-NMF] ``ServerTooBusy`` fault, an HTTP client a 503 with Retry-After, and
closing connections gives their places back.  Against a ``twistd -n relayd`` subprocess."""

import re
import socket

import psutil
import pytest

from relayd.wire import nmf
from tests.support.net import read_until_closed
from tests.support.relay import RelayProcess, write_config
from tests.support.waits import wait_until

CONFIG = """
[[hybrid_connections]]
path = "tcpent"

[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "port"
entity = "tcpent"
allow_anonymous = true

[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "nettcp"

[limits]
max_connections = 20
# The held net.tcp clients never send a preamble: keep the preamble deadline out of the way on
# a loaded machine (it would free their places before the test is done).
open_handshake_timeout = 120
"""


@pytest.fixture
def relay(tmp_path):
    proc = RelayProcess(tmp_path, write_config(tmp_path, extra=CONFIG))
    proc.tcp_port = proc.door_port("port door (tcpent)")
    proc.nettcp_port = proc.door_port("nettcp door (routed by Via)")
    yield proc
    proc.stop()


def accepted_on(relay, port):
    """How many connections the relay process holds on its local ``port``."""
    return sum(1 for c in psutil.Process(relay.proc.pid).net_connections("tcp")
               if c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def http_get(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /$relayd/status HTTP/1.1\r\nHost: relay\r\n\r\n")
        return read_until_closed(s)


def test_tcp_door_connections_count_against_the_relay_limit(relay):
    held = []
    try:
        # 20 net.tcp clients that never send their preamble fill the whole budget.
        for _ in range(20):
            held.append(socket.create_connection(("127.0.0.1", relay.nettcp_port), timeout=5))
        # Once the relay has accepted them all (its own sockets say so; a probe on the HTTP port
        # before that would take one of the places), the HTTP port is full too: 503 with
        # Retry-After, not a hang or a reset.
        assert wait_until(lambda: accepted_on(relay, relay.nettcp_port) == 20), relay.log_text()[-2000:]
        answer = http_get(relay.port)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b"\r\nRetry-After: 1\r\n" in answer
        # A net.tcp client past the limit is told ServerTooBusy in its own protocol.
        with socket.create_connection(("127.0.0.1", relay.nettcp_port), timeout=5) as extra:
            fault = read_until_closed(extra)
        assert fault == nmf.fault(nmf.SERVER_TOO_BUSY), (fault, relay.log_text()[-2000:])
        # A port-mapped client past the limit is closed at once (no listener was even asked).
        with socket.create_connection(("127.0.0.1", relay.tcp_port), timeout=5) as extra:
            assert read_until_closed(extra) == b""
        # Refusals are logged, rate-limited (one line per 10 s with a count): the first one here.
        assert re.search(r"refused 1 connection\(s\) on the HTTP port at its connection limit of 20",
                         relay.log_text())
    finally:
        for s in held:
            s.close()
    # Closing them gives the places back: the HTTP port answers again.
    assert wait_until(lambda: not http_get(relay.port).startswith(b"HTTP/1.1 503 ")), relay.log_text()[-2000:]
