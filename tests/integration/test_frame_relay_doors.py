"""The frame relay between a WebSocket leg and a port-mapped TCP door (relayd.splice with the
door's ILeg and both on the zero-copy path), byte for byte, through a ``twistd -n relayd``
process: TCP reads reach the listener's leg as binary messages; the leg's frames (fragmented,
at length-encoding boundaries, split across reads) reach the TCP client as their payload bytes
in order; the empty binary message half-closes.  And a TLS leg (Twisted's ordinary path)
spliced with a plain one (the zero-copy path), frames 1:1 both ways."""

import os
import re
import socket
import ssl
import threading
import time

import pytest

from tests.support.rawws import RawWS, hc_url, listen, token
from tests.support.relay import RelayProcess, port_door_relay, write_config
from tests.support.wsframes import FrameSocket, client_frame, server_frame



@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frame-relay-doors")
    proc = port_door_relay(tmp)
    yield proc
    proc.stop()


def test_port_door_and_websocket_leg_byte_for_byte(relay):
    ctl = listen(relay, "tcp")
    client = socket.create_connection(("127.0.0.1", relay.door), timeout=20)
    raw = RawWS(relay.port).start(ctl.recv_json()["accept"]["address"])
    assert raw.finish() == 101
    leg = FrameSocket(raw)
    try:
        # TCP -> leg: 3 MiB in one sendall arrives as binary messages, in order
        upstream = os.urandom(3 << 20)
        sender = threading.Thread(target=client.sendall, args=(upstream,), daemon=True)
        sender.start()
        got = bytearray()
        while len(got) < len(upstream):
            fin, opcode, payload = leg.recv_frame()
            assert (fin, opcode) == (True, 2)
            got += payload
        sender.join(20)
        assert got == upstream
        # leg -> TCP: fragments at every length encoding, sent in odd-sized pieces
        pieces = [os.urandom(n) for n in (0, 1, 125, 126, 65535, 65536, (1 << 20) + 7)]
        wire = client_frame(2, pieces[0], fin=False)
        wire += b"".join(client_frame(0, p, fin=False) for p in pieces[1:])
        wire += client_frame(0, b"x", fin=True)
        wire += client_frame(2, b"")  # the half-close marker: the client reads EOF after it all
        leg.send_in_thread(*[wire[i:i + 99_991] for i in range(0, len(wire), 99_991)])
        received = bytearray()
        client.settimeout(20)
        while True:
            data = client.recv(1 << 20)
            if not data:
                break
            received += data
        assert received == b"".join(pieces) + b"x"
    finally:
        for s in (ctl, leg):
            s.close()
        client.close()


@pytest.fixture(scope="module")
def mixed_relay(tmp_path_factory):
    """A relay listening on plain TCP and on TLS."""
    from tests.support.tls import make_ca_and_server

    tmp = tmp_path_factory.mktemp("frame-relay-tls")
    certs = make_ca_and_server(tmp)
    listen = '["tcp:0:interface=127.0.0.1", "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s"]' % (
        certs["server-key.pem"], certs["server-cert.pem"])
    proc = RelayProcess(tmp, write_config(tmp, listen=listen))
    ports = [int(p) for p in re.findall(r"relayd listening on [0-9.]+:(\d+)", proc.log_text())]
    deadline = time.monotonic() + 20
    while len(set(ports)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        ports = [int(p) for p in re.findall(r"relayd listening on [0-9.]+:(\d+)", proc.log_text())]
    proc.plain_port, proc.tls_port = sorted(set(ports), key=ports.index)[:2]
    proc.ca = certs["ca.pem"]
    yield proc
    proc.stop()


class TlsWS(RawWS):
    """RawWS over TLS."""

    def __init__(self, port, ca):
        context = ssl.create_default_context(cafile=ca)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        self.buf = b""
        self.status = None


def test_a_tls_leg_and_a_plain_leg_byte_for_byte(mixed_relay):
    """The sender on TLS (Twisted's ordinary path: copies of what it reads), the listener's leg
    on plain TCP (fastio: views of the shared read buffer), frames both ways 1:1."""
    relay = mixed_relay
    relay.port = relay.plain_port
    ctl = listen(relay, "echo")
    raw_sender = TlsWS(relay.tls_port, relay.ca).start(
        hc_url(relay, "echo", "connect"), {"ServiceBusAuthorization": token(relay, "echo")})
    raw_leg = RawWS(relay.plain_port).start(ctl.recv_json()["accept"]["address"])
    assert raw_leg.finish() == 101 and raw_sender.finish() == 101
    sender, leg = FrameSocket(raw_sender), FrameSocket(raw_leg)
    try:
        for src, dst in ((sender, leg), (leg, sender)):
            frames = [(op, os.urandom(n), fin) for op, n, fin in ((2, 0, False), (0, 126, False), (0, 65536, False),
                                                                  (0, (1 << 20) + 1, True))]
            frames.append((1, "ünï".encode(), True))
            expected = b"".join(server_frame(op, p, fin) for op, p, fin in frames)
            wire = b"".join(client_frame(op, p, fin) for op, p, fin in frames)
            thread = src.send_in_thread(*[wire[i:i + 65_521] for i in range(0, len(wire), 65_521)])
            assert dst.read_exactly(len(expected)) == expected
            thread.join(20)
    finally:
        for s in (ctl, sender, leg):
            s.close()
