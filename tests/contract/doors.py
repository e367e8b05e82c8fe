"""The relay's four front doors, each as a sender the contract suite can drive the same way.

Each door is built in one place here (a class per door): a door module that moves or is
renamed changes at most a line of this file.  A door's sender knows how to start, how its
door says "refused" (an HTTP status, a net.tcp fault, a closed socket), how to send bytes and
what it received.  ``DOORS`` lists them for ``pytest.mark.parametrize``.
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from relayd.wire import nmf
from tests.contract import harness

HTTP_PORT, TCP_PORT, NETTCP_PORT = 80, 81, 82
CLOSED = "closed"  # a TCP door's refusal: the connection closed, nothing sent


@implementer(IHalfCloseableProtocol)
class RawClient(Protocol):
    """A TCP client that records what it reads, the half-close and the close."""

    def __init__(self, greeting=b""):
        self.greeting = greeting
        self.data = []
        self.eof = False
        self.lost = None

    def connectionMade(self):
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data):
        self.data.append(data)

    def readConnectionLost(self):
        self.eof = True

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.lost = reason

    def received(self):
        return b"".join(self.data)


class Door:
    """What every door's sender offers the suite."""

    name = None
    offer_kind = "accept"  # the control message the listener gets: accept or request
    half_close = False  # the door relays a TCP half-close (the empty-message marker)
    # How the door tells its sender (see refusal()):
    NO_LISTENER = REJECTED = TIMED_OUT = None

    def __init__(self, relay):
        self.relay = relay

    def __repr__(self):
        return self.name


class WebSocketDoor(Door):
    """The Hybrid Connections WebSocket sender door (``sb-hc-action=connect``)."""

    name = "websocket"
    NO_LISTENER, REJECTED, TIMED_OUT = 404, 403, 504

    def start(self):
        self.client = harness.websocket(
            self.relay, "ws://%s/$hc/%s?sb-hc-action=connect" % (harness.HOST, harness.ENTITY))
        self.transport = self.client.transport

    def refusal(self):
        return self.client.status

    def paired(self):
        return self.client.opened

    def send(self, data):
        self.client.sendMessage(data, isBinary=True)

    def received(self):
        return self.client.received()

    def close_code(self):
        return self.client.close_code if self.client.closed else None


class TcpDoor(Door):
    """The port-mapped TCP door (``[[tcp_ports]] mode = "port"``): no preamble, raw bytes."""

    name = "tcp"
    port = TCP_PORT
    half_close = True
    NO_LISTENER = REJECTED = TIMED_OUT = CLOSED

    def greeting(self):
        return b""

    def start(self):
        self.client = RawClient(self.greeting())
        self.transport = self.relay.connect(self.port, self.client)

    def refusal(self):
        if self.client.lost is not None and not self.client.data:
            return CLOSED
        return None

    def paired(self):
        return self.client.lost is None

    def send(self, data):
        self.transport.write(data)

    def received(self):
        return self.client.received()

    def shutdown_write(self):
        self.transport.loseWriteConnection()

    def close_code(self):
        return CLOSED if self.client.lost is not None else None


class NetTcpDoor(TcpDoor):
    """The net.tcp door (``mode = "nettcp"``): routed by the [MC-NMF] preamble's Via; refuses
    with a framing fault."""

    name = "nettcp"
    port = NETTCP_PORT
    NO_LISTENER = REJECTED = TIMED_OUT = nmf.fault(nmf.ENDPOINT_UNAVAILABLE)

    def greeting(self):
        return nmf.encode_preamble("net.tcp://%s/%s" % (harness.HOST, harness.ENTITY))

    def refusal(self):
        data = self.client.received()
        if self.client.lost is not None and data.startswith(bytes([nmf.FAULT_RECORD])):
            return data
        return None


class HttpDoor(Door):
    """The HTTP relaying door (``/{entity}/...`` without an upgrade): request and response."""

    name = "http"
    offer_kind = "request"
    NO_LISTENER, REJECTED, TIMED_OUT = 502, 403, 504

    def start(self, body=b"", length=None):
        """Send the request head and ``body`` (or its first part, of a ``length``-byte body)."""
        length = len(body) if length is None else length
        head = "%s /%s/x HTTP/1.1\r\nHost: %s\r\n" % ("POST" if length else "GET", harness.ENTITY, harness.HOST)
        if length:
            head += "Content-Length: %d\r\n" % length
        self.client = RawClient((head + "\r\n").encode() + body)
        self.transport = self.relay.connect(HTTP_PORT, self.client)

    def status(self):
        data = self.client.received()
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None

    def refusal(self):
        status = self.status()
        return status if status is not None and status >= 400 else None

    def send(self, data):
        self.transport.write(data)

    def received(self):
        return self.client.received()


DOORS = [WebSocketDoor, HttpDoor, TcpDoor, NetTcpDoor]
STREAM_DOORS = [WebSocketDoor, TcpDoor, NetTcpDoor]  # the doors a listener accepts (offer: accept)
HALF_CLOSE_DOORS = [d for d in DOORS if d.half_close]
