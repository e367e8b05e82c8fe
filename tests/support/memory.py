"""An in-memory TCP network for protocol tests: connected transport pairs with TCP's flow
control and half-close, pumped by hand, no sockets.

:mod:`twisted.test.iosim` delivers everything at once and has neither a write buffer limit nor
half-close; relayd's data path depends on both (see :mod:`relayd.pipe`).  Here each
:class:`MemoryTransport` behaves as Twisted's own ``FileDescriptor`` does where it matters:

* ``write`` queues bytes; once more than ``bufferSize`` bytes wait, the registered streaming
  producer is paused, and resumed once the queue drains (delivery to the peer);
* ``pauseProducing`` stops delivery *to* this transport's protocol (the kernel would keep the
  bytes in the socket buffers); a peer that is not delivered to never drains its writer;
* ``loseWriteConnection`` delivers a half-close (``readConnectionLost`` to an
  ``IHalfCloseableProtocol`` peer, otherwise a full close) once the queue has drained;
  ``loseConnection`` closes both sides once drained; ``abortConnection`` closes at once.

:meth:`Network.pump` moves bytes until nothing moves any more; :meth:`Network.stall` makes a
reader stop reading (its peer's bytes stay queued), as a client that never calls ``recv``.
"""

from twisted.internet import address, error
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure

DEFAULT_BUFFER = 64 * 1024  # Twisted's FileDescriptor.bufferSize


class MemoryTransport:
    """One end of an in-memory TCP connection (see the module docstring)."""

    disconnecting = False
    disconnected = False
    producer = None
    streaming = False

    def __init__(self, network, protocol, host, peer_address):
        self.network = network
        self.protocol = protocol
        self.host = host
        self.peer_address = peer_address
        self.peer = None  # the other MemoryTransport
        self.queue = []  # written, not yet delivered to the peer
        self.queued = 0
        self.bufferSize = DEFAULT_BUFFER
        self.reading = True  # False while paused (pauseProducing) or stalled
        self.stalled = False
        self.read_closed = False  # the peer half-closed towards us
        self.write_closed = False  # loseWriteConnection asked
        self.write_shut = False  # ... and done (the peer was told)
        self._producer_paused = False

    # -- ITransport -------------------------------------------------------------------------

    def write(self, data):
        if self.disconnecting or self.disconnected or self.write_closed or not data:
            return
        self.queue.append(bytes(data))
        self.queued += len(data)
        if self.queued > self.bufferSize and self.producer is not None and self.streaming \
                and not self._producer_paused:
            self._producer_paused = True
            self.producer.pauseProducing()

    def writeSequence(self, data):
        self.write(b"".join(data))

    def loseConnection(self):
        self.disconnecting = True

    def abortConnection(self):
        self.queue, self.queued = [], 0
        self.disconnecting = True
        self.network._close(self, error.ConnectionLost("aborted"))

    def loseWriteConnection(self):
        self.write_closed = True

    def getPeer(self):
        return self.peer_address

    def getHost(self):
        return self.host

    def setTcpNoDelay(self, enabled):
        pass

    def setTcpKeepAlive(self, enabled):
        pass

    def logPrefix(self):
        return "memory"

    # -- IConsumer / IPushProducer --------------------------------------------------------------

    def registerProducer(self, producer, streaming):
        if self.producer is not None:
            raise RuntimeError("a producer is registered already on %r" % (self,))
        self.producer, self.streaming = producer, streaming
        self._producer_paused = False
        if self.disconnected:
            producer.stopProducing()

    def unregisterProducer(self):
        self.producer = None
        self._producer_paused = False

    def pauseProducing(self):
        self.reading = False

    def resumeProducing(self):
        self.reading = True

    def stopProducing(self):
        self.loseConnection()

    # -- moving bytes (called by Network) -------------------------------------------------------

    def _deliver(self):
        """Deliver what this end wrote to the peer, if the peer reads; True if anything moved."""
        peer = self.peer
        moved = False
        while self.queue and peer.reading and not peer.stalled and not peer.disconnected:
            data = self.queue.pop(0)
            self.queued -= len(data)
            peer.protocol.dataReceived(data)
            moved = True
        if not self.queue and self._producer_paused and self.producer is not None:
            self._producer_paused = False
            self.producer.resumeProducing()
            moved = True
        if self.queue or self.disconnected:
            return moved
        if self.write_closed and not self.write_shut:
            self.write_shut = True
            peer.read_closed = True
            if IHalfCloseableProtocol.providedBy(peer.protocol):
                peer.protocol.readConnectionLost()
                if IHalfCloseableProtocol.providedBy(self.protocol):
                    self.protocol.writeConnectionLost()
            else:
                peer.loseConnection()
            moved = True
        if self.disconnecting or (self.write_shut and peer.write_shut):
            self.network._close(self, error.ConnectionDone("closed"))
            moved = True
        return moved

    def __repr__(self):
        return "<MemoryTransport %s -> %s of %s>" % (self.host, self.peer_address,
                                                      type(self.protocol).__name__)


class Network:
    """In-memory connections between protocols; :meth:`pump` moves bytes."""

    def __init__(self):
        self.transports = []
        self._ports = iter(range(40000, 60000))

    def connect(self, server_protocol, client_protocol, server_port=443):
        """Connect ``client_protocol`` to ``server_protocol``; both get ``makeConnection``.
        Returns the (server, client) transports."""
        client_addr = address.IPv4Address("TCP", "127.0.0.1", next(self._ports))
        server_addr = address.IPv4Address("TCP", "127.0.0.1", server_port)
        server = MemoryTransport(self, server_protocol, server_addr, client_addr)
        client = MemoryTransport(self, client_protocol, client_addr, server_addr)
        server.peer, client.peer = client, server
        self.transports += [server, client]
        server_protocol.makeConnection(server)
        client_protocol.makeConnection(client)
        return server, client

    def pump(self, rounds=10000):
        """Move bytes until nothing moves."""
        for _ in range(rounds):
            if not any([t._deliver() for t in list(self.transports) if not t.disconnected]):
                return
        raise AssertionError("the in-memory network never settles")

    def stall(self, transport, stalled=True):
        """Make ``transport``'s protocol stop (or start again) reading what its peer sends."""
        transport.stalled = stalled

    def _close(self, transport, reason):
        for t in (transport, transport.peer):
            if t.disconnected:
                continue
            t.disconnected = True
            if t in self.transports:
                self.transports.remove(t)
            producer, t.producer = t.producer, None
            if producer is not None:
                producer.stopProducing()
            t.protocol.connectionLost(Failure(reason))
