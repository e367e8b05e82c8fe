"""Publishing events over net.tcp, over real sockets: a raw [MC-NMF] client (the bytes of
the captures of [MC-NMF] traffic quoted in tests/unit/test_nmf.py) publishes to a multicast entity through a real relay's net.tcp
door; two ``relayd bridge -R ENTITY:net.tcp://...`` subscribers forward to local TCP services
that record every byte: each gets the preamble (Via rewritten to its own URI) and every
envelope in order, then End."""

import socket
import threading
import time
from urllib.parse import quote

import pytest

from relayd.wire import nmf, sas
from tests.support.net import serve_tcp
from tests.support.relay import SEND_KEY, Bridge, RelayProcess, relay_status, write_config

CONFIG = """
[[hybrid_connections]]
path = "news"
kind = "multicast"
max_message = 4096

[[hybrid_connections]]
path = "jobs"
kind = "oneway"
requires_client_authorization = false

[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "nettcp"
"""
EVENTS = 300


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    directory = tmp_path_factory.mktemp("nettcp-events")
    proc = RelayProcess(directory, write_config(directory, extra=CONFIG))
    proc.nettcp_port = proc.door_port("nettcp door (routed by Via)")
    yield proc
    proc.stop()


class Recorder:
    """A local TCP service: answers PreambleAck at once, records every byte of each connection,
    and closes when its peer has shut down the write half."""

    def __init__(self):
        self.connections = []
        self.done = threading.Event()
        self.srv = serve_tcp(self._serve)
        self.port = self.srv.getsockname()[1]

    def _serve(self, conn):
        got = bytearray()
        self.connections.append(got)
        with conn:
            conn.sendall(b"\x0b")
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                got += data
        self.done.set()

    def stop(self):
        self.srv.close()


def envelope(i):
    payload = b"<event %d/>" % i + b"." * (i % 700)
    return b"\x06" + nmf.encode_varint(len(payload)) + payload


def read_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def publish(port, via, records, sleep_between=0):
    """A raw net.tcp publisher (NMF-CAPTURES.md, Duplex): returns what the relay sent back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"\x00\x01\x00\x01\x02" + nmf.encode_via(via) + b"\x03\x08\x0c")
        answer = read_exactly(c, 1)
        if answer != b"\x0b":
            return answer + c.recv(4096)
        for record in records:
            c.sendall(record)
        c.sendall(b"\x07")
        rest = b""
        while True:
            chunk = c.recv(4096)
            if not chunk:
                return answer + rest
            rest += chunk


def wait_until(check, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_two_bridge_subscribers_get_every_envelope_in_order(tmp_path, relay):
    recorders = [Recorder(), Recorder()]
    bridges = [Bridge(tmp_path, relay, "-R", "news:net.tcp://127.0.0.1:%d/svc%d" % (r.port, i))
               for i, r in enumerate(recorders)]
    try:
        for b in bridges:
            b.wait("online")
        before = relay_status(relay)["events"]["multicast"]
        token = sas.make_token("http://127.0.0.1/news", "sender", SEND_KEY, int(time.time()) + 60)
        via = "net.tcp://127.0.0.1:%d/news?sb-hc-token=%s" % (relay.nettcp_port, quote(token, safe=""))
        records = [envelope(i) for i in range(EVENTS)]
        assert publish(relay.nettcp_port, via, records) == b"\x0b\x07"
        for r in recorders:
            assert r.done.wait(20), relay.log_text()[-2000:]
        for i, r in enumerate(recorders):
            assert len(r.connections) == 1
            got = bytes(r.connections[0])
            preamble = (b"\x00\x01\x00\x01\x02" + nmf.encode_via("net.tcp://127.0.0.1:%d/svc%d" % (r.port, i))
                        + b"\x03\x08\x0c")
            assert got == preamble + b"".join(records) + b"\x07"
            assert b"sb-hc-token" not in got
        after = relay_status(relay)["events"]["multicast"]
        assert after["published"] - before["published"] == EVENTS
        assert after["deliveries"] - before["deliveries"] == 2 * EVENTS
    finally:
        for b in bridges:
            b.stop()
        for r in recorders:
            r.stop()


def test_refusals_are_framing_faults(relay):
    base = "net.tcp://127.0.0.1:%d/" % relay.nettcp_port
    # oneway with no listener: EndpointUnavailable instead of the PreambleAck
    assert publish(relay.nettcp_port, base + "jobs", []) == nmf.fault(nmf.ENDPOINT_UNAVAILABLE)
    # no token on an entity that needs one
    assert publish(relay.nettcp_port, base + "news", []) == nmf.fault(nmf.ENDPOINT_ACCESS_DENIED)
    # an envelope over max_message (4096): refused from its size, the connection closed
    token = sas.make_token("http://127.0.0.1/news", "sender", SEND_KEY, int(time.time()) + 60)
    via = base + "news?sb-hc-token=" + quote(token, safe="")
    big = b"\x06" + nmf.encode_varint(4097)
    assert publish(relay.nettcp_port, via, [big]) == b"\x0b" + nmf.fault(nmf.MAX_MESSAGE_SIZE_EXCEEDED)
    # multicast with no subscriber: accepted, dropped
    dropped = relay_status(relay)["events"]["multicast"]["dropped"]
    assert publish(relay.nettcp_port, via, [envelope(1), envelope(2)]) == b"\x0b\x07"
    assert relay_status(relay)["events"]["multicast"]["dropped"] == dropped + 2
