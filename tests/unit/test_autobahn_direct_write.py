"""What Autobahn sends on relayd's WebSocket server protocols (handshake responses, control
channel messages, pings) goes straight to the socket in the caller's turn when nothing is queued
(relayd.transports.autobahn_server.LeanServerProtocol.sendData, issue 10 "cheap rendezvous"):
Twisted's own write only queues, arms EPOLLOUT and sends on the next poll -- two epoll_ctl
calls and a reactor turn per write, for the sender's 101, the accept leg's 101 and the accept
message of every rendezvous.  Real loopback sockets in the test's reactor."""

import socket
import time

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import task

from relayd.transports.autobahn_server import LeanServerProtocol
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(30)


class Lean(LeanServerProtocol, WebSocketServerProtocol):
    def connectionMade(self):
        super().connectionMade()
        self.factory.made.append(self)


@pytest_twisted.async_yield_fixture
async def lean():
    from twisted.internet import reactor

    factory = WebSocketServerFactory(url=None)
    factory.protocol = Lean
    factory.made = []
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=10)
    client.setblocking(False)
    await wait_for(lambda: factory.made)
    yield factory.made[0], client
    client.close()
    factory.made[0].transport.abortConnection()
    await port.stopListening()


async def read_all(sock, n, timeout=10):
    """``n`` bytes from ``sock``, letting the reactor run between tries."""
    from twisted.internet import reactor

    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, "only %d of %d bytes arrived" % (len(got), n)
        await task.deferLater(reactor, 0.002, lambda: None)
        got += recv_now(sock, 1 << 20)
    return bytes(got)


def recv_now(sock, n=1 << 16):
    try:
        return sock.recv(n)
    except BlockingIOError:
        return b""


@pytest_twisted.ensureDeferred
async def test_a_write_reaches_the_socket_in_the_same_turn(lean):
    proto, client = lean
    proto.sendData(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    assert recv_now(client) == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"  # no reactor turn in between
    assert proto.transport.dataBuffer == b"" and not proto.transport._tempDataLen


@pytest_twisted.ensureDeferred
async def test_order_is_kept_behind_what_twisted_has_queued(lean):
    proto, client = lean
    proto.transport.write(b"first ")  # queued by Twisted, sent on the next poll
    proto.sendData(b"second")
    assert recv_now(client) == b""  # "second" waits behind "first"
    assert await read_all(client, len(b"first second")) == b"first second"


@pytest_twisted.ensureDeferred
async def test_what_the_socket_refuses_goes_through_twisted_in_order(lean):
    proto, client = lean
    proto.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = bytes(range(256)) * 16384  # 4 MiB: more than the kernel takes at once
    proto.sendData(big)
    proto.sendData(b"tail")
    assert await read_all(client, len(big) + 4) == big + b"tail"
