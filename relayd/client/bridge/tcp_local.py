"""``relayd bridge -L``: reach an entity from a local TCP port (or Unix socket).

A :class:`LocalForwarder` listens locally; each accepted connection is held (reading paused)
until a relay sender connection to ENTITY is open, then spliced with it by a
:class:`~.tunnel.Tunnel`.  A refused sender connection closes the local one.  Its listen
backlog is ``--backlog`` (default ``relayd.endpoint_strings.DEFAULT_LISTEN_BACKLOG``, like the relay's
``limits.listen_backlog``); a Unix socket gets mode :data:`LOCAL_SOCKET_MODE` and a lock file
next to it, so a socket left by a dead agent is replaced.
"""

from twisted.internet import defer, endpoints, protocol
from zope.interface import implementer

from relayd.client.bridge.forwarder import IForwarder, address, log
from relayd.client.bridge.tunnel import LocalSide, Tunnel
from relayd.client.sender import connect
from relayd.endpoint_strings import DEFAULT_LISTEN_BACKLOG

LOCAL_SOCKET_MODE = 0o660  # -L Unix sockets: the owner and its group may connect
# Tells the listener that a -L sender connection carries a TCP stream (it sees connectHeaders;
# the relay's TCP doors send "port" or "nettcp" here).
TRANSPORT_HEADERS = {"X-Relayd-Transport": "tcp"}


class _LocalClient(LocalSide):
    """``-L``: one local client; becomes a relay sender connection.  Its reading stays paused
    until the sender connection is open and its tunnel made."""

    def __init__(self, forwarder):
        super().__init__(None)
        self.forwarder = forwarder

    def connectionMade(self):
        self.transport.pauseProducing()
        f = self.forwarder
        d = connect(f.reactor, f.info, f.entity, headers=TRANSPORT_HEADERS)
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, conn):
        if self.transport is None or not self.transport.connected:
            conn.close(1000)
            return
        self.tunnel = Tunnel(self.forwarder.label, conn)
        self.tunnel.local_made(self)
        self.transport.resumeProducing()

    def _failed(self, failure):
        log.info("bridge {label}: the relay refused the connection: {err}", label=self.forwarder.label,
                 err=failure.getErrorMessage())
        if self.transport is not None:
            self.transport.loseConnection()

    def readConnectionLost(self):
        if self.tunnel is None:
            self.transport.loseConnection()
        else:
            super().readConnectionLost()

    def connectionLost(self, reason):
        if self.tunnel is not None:
            super().connectionLost(reason)


@implementer(IForwarder)
class LocalForwarder(protocol.Factory):
    """``-L``: a local TCP port whose connections become relay sender connections."""

    noisy = False

    def __init__(self, reactor, info, bind, port, entity, backlog=None):
        self.reactor = reactor
        self.info = info
        self.bind, self.port, self.entity = bind, port, entity  # port None: bind is a Unix socket path
        self.backlog = backlog or DEFAULT_LISTEN_BACKLOG
        self.label = "-L %s->%s" % (address(bind, port), entity)
        self.listening = None

    def buildProtocol(self, addr):
        return _LocalClient(self)

    def start(self):
        if self.port is None:
            # wantPID: a lock file next to the socket, so a socket left by a dead agent is replaced
            endpoint = endpoints.UNIXServerEndpoint(self.reactor, self.bind, backlog=self.backlog,
                                                    mode=LOCAL_SOCKET_MODE, wantPID=True)
        elif ":" in self.bind:
            endpoint = endpoints.TCP6ServerEndpoint(self.reactor, self.port, backlog=self.backlog,
                                                    interface=self.bind)
        else:
            endpoint = endpoints.TCP4ServerEndpoint(self.reactor, self.port, backlog=self.backlog,
                                                    interface=self.bind)

        def listening(port):
            self.listening = port
            host = port.getHost()
            log.info("bridge {label}: listening on {address}", label=self.label,
                     address=address(self.bind, getattr(host, "port", None)))
            return self

        return endpoint.listen(self).addCallback(listening)

    def stop(self):
        if self.listening is not None:
            return defer.maybeDeferred(self.listening.stopListening)
        return defer.succeed(None)
