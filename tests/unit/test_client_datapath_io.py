"""The bridge tunnel on a real local TCP socket (the test's reactor) with its relayed connection
in memory: the local socket is read in 256 KiB-class reads (not Twisted's 64 KiB), each read
going out as one masked frame, byte for byte, with the end-of-stream marker after the EOF.
And the control channel's message limit: a larger message from the relay is refused with 1009."""

import os
import socket
import struct
import threading

import pytest_twisted
from twisted.internet import protocol, reactor
from twisted.internet.testing import MemoryReactorClock

from relayd.client.bridge.tunnel import LocalSide, Tunnel
from relayd.client.handshake import open_websocket
from relayd.wire import wsframe
from tests.support.waits import wait_for
from tests.unit.test_client_datapath import parse_client_frames, server
from tests.unit.test_client_units import Wire

TWISTED_READ = 65536  # what Twisted's tcp.Connection reads at a time


@pytest_twisted.ensureDeferred
async def test_local_reads_are_256_kib_class_and_each_is_one_masked_frame():
    memory = MemoryReactorClock()
    opened = []
    open_websocket(memory, "ws://127.0.0.1:9090/$hc/echo").addCallback(opened.append)
    wire = Wire(memory, 0)
    wire.answer()
    conn = opened[0]
    tunnel = Tunnel("-L test->echo", conn)
    factory = protocol.Factory.forProtocol(lambda: LocalSide(tunnel))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    data = os.urandom(8 << 20)
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

    first_mib_sent = threading.Event()

    def send():
        client.sendall(data[:1 << 20])  # taken by the kernel while the tunnel does not read
        first_mib_sent.set()
        client.sendall(data[1 << 20:])
        client.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send, daemon=True)
    try:
        await wait_for(lambda: tunnel.state == "open")
        wire.transport.clear()
        tunnel.local.transport.pauseProducing()  # so that what is read next is waiting in full
        sender.start()
        await wait_for(first_mib_sent.is_set)
        tunnel.local.transport.resumeProducing()
        await wait_for(lambda: tunnel.bytes_out == len(data) and tunnel.state == "half-closed", timeout=30)
        frames = parse_client_frames(wire.transport.value())
        assert frames[-1][1:2] + frames[-1][3:] == (wsframe.BINARY, b"")  # the end-of-stream marker
        assert all(fin and op == wsframe.BINARY for fin, op, _m, _p in frames)
        assert b"".join(p for _f, _o, _m, p in frames) == data
        assert max(len(p) for _f, _o, _m, p in frames) > TWISTED_READ
        assert len({m for _f, _o, m, _p in frames}) == len(frames)  # a fresh mask per frame
    finally:
        sender.join(10)
        client.close()
        await port.stopListening()


def test_a_message_over_the_control_channel_limit_is_refused_with_1009():
    memory = MemoryReactorClock()
    opened = []
    open_websocket(memory, "ws://127.0.0.1:9090/$hc/echo",
                   options={"maxMessagePayloadSize": 1000}).addCallback(opened.append)
    wire = Wire(memory, 0)
    wire.answer()
    conn = opened[0]
    wire.transport.clear()
    got = []
    conn.on_message = got.append
    conn.dataReceived(server(wsframe.TEXT, b"x" * 1000))
    conn.dataReceived(server(wsframe.BINARY, b"y" * 600, fin=False) + server(wsframe.CONTINUATION, b"y" * 401))
    assert got == ["x" * 1000]
    sent = parse_client_frames(wire.transport.value())
    assert [(op, p[:2]) for _f, op, _m, p in sent] == [(wsframe.CLOSE, struct.pack(">H", 1009))]
