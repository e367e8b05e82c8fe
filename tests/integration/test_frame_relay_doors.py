"""The frame relay between a WebSocket leg and a port-mapped TCP door (relayd.splice with the
door's ILeg and both on the zero-copy path), byte for byte, through a ``twistd -n relayd``
process: TCP reads reach the listener's leg as binary messages; the leg's frames (fragmented,
at length-encoding boundaries, split across reads) reach the TCP client as their payload bytes
in order; the empty binary message half-closes."""

import os
import socket
import threading

import pytest

from tests.support.rawws import hc_url, listen, RawWS
from tests.support.relay import RelayProcess, write_config
from tests.support.wsframes import FrameSocket, client_frame

PORT_DOOR = """
[[hybrid_connections]]
path = "tcp"
requires_client_authorization = false

[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "port"
entity = "tcp"
allow_anonymous = true
"""


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frame-relay-doors")
    proc = RelayProcess(tmp, write_config(tmp, extra=PORT_DOOR))
    proc.door = proc.door_port("port door (tcp)")
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
