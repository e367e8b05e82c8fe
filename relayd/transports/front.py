"""The relay's HTTP port: one listening socket, two protocols behind it.

Reads the request head (bounded in size and time), then hands the connection, with the bytes
read so far, to the Hybrid Connections WebSocket door (``/$hc/...``) or to the twisted.web
site (HTTP relaying, management API).  The WebSocket door thus sees the request head exactly
as the client sent it, header casing included, and after the handover the door's protocol
reads the socket directly: nothing of this class stays on the data path.
"""

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper

HC_PREFIX = b"/$hc/"
MANAGE_PREFIX = b"/$relayd/"


class FrontDoor(Protocol):
    _log = Logger()

    def __init__(self, factory, addr):
        self.factory = factory
        self.addr = addr
        self.buf = b""
        self._timer = None
        self._done = False

    def connectionMade(self):
        self.factory.connections += 1
        limit = self.factory.max_connections
        if limit and self.factory.connections > limit:
            self._reply(503, "Service Unavailable", "the relay is at its connection limit")
            return
        self._timer = self.factory.clock.callLater(self.factory.head_timeout, self._too_slow)

    def connectionLost(self, reason):
        self.factory.connections -= 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _too_slow(self):
        self._timer = None
        self._reply(408, "Request Timeout", "the request head did not arrive in time")

    def _reply(self, code, phrase, message):
        self._done = True
        body = (message + "\n").encode("utf-8")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (code, phrase.encode("ascii"), len(body), body)
        )
        self.transport.loseConnection()

    def dataReceived(self, data):
        if self._done:
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > self.factory.max_head:
                self._reply(431, "Request Header Fields Too Large",
                            "the request head is larger than %d bytes" % self.factory.max_head)
            return
        if end > self.factory.max_head:
            self._reply(431, "Request Header Fields Too Large",
                        "the request head is larger than %d bytes" % self.factory.max_head)
            return
        line = self.buf[: self.buf.find(b"\r\n")]
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._reply(400, "Bad Request", "malformed HTTP request line")
            return
        target = parts[1]
        if target.startswith(b"http://") or target.startswith(b"https://"):
            target = b"/" + target.split(b"/", 3)[-1]
        if target.startswith(HC_PREFIX):
            factory = self.factory.websocket
        elif target.startswith(MANAGE_PREFIX) or self.factory.http is None:
            factory = self.factory.web
        else:
            factory = self.factory.http
        self._handover(factory.buildProtocol(self.addr))

    def _handover(self, protocol):
        self._done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        transport = self.transport
        if isinstance(transport, ProtocolWrapper):
            transport.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        # The handed-over protocol owns the connection count from here on.
        self.factory.connections -= 1
        self.connectionLost = lambda reason: None
        protocol.makeConnection(transport)
        buf, self.buf = self.buf, b""
        protocol.dataReceived(buf)


class FrontDoorFactory(Factory):
    def __init__(self, websocket_factory, web_factory, clock, max_head=32 * 1024,
                 head_timeout=10.0, max_connections=0, http_factory=None):
        self.websocket = websocket_factory
        self.web = web_factory
        self.http = http_factory
        self.clock = clock
        self.max_head = max_head
        self.head_timeout = head_timeout
        self.max_connections = max_connections
        self.connections = 0

    def buildProtocol(self, addr):
        return FrontDoor(self, addr)
