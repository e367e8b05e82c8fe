"""``relayd bridge -R``: publish a local TCP service (or Unix socket) on an entity.

A :class:`RemoteForwarder` keeps a listener online on ENTITY; each relayed connection is
connected to the local service and spliced with it by a :class:`~.tunnel.Tunnel`.  With a
``net.tcp://`` target the tunnel rewrites the [MC-NMF] Via record of the incoming preamble to
that URI, so a WCF service behind it sees its own listen address.  A local service that cannot
be reached closes the relayed connection with 1011.
"""

from twisted.internet import endpoints
from zope.interface import implementer

from relayd.client.bridge.forwarder import IForwarder, address, log
from relayd.client.bridge.tunnel import LocalSideFactory, Tunnel
from relayd.client.listener import HybridListener

# Seconds to wait for the local service to accept a connection.
LOCAL_CONNECT_TIMEOUT = 30


@implementer(IForwarder)
class RemoteForwarder:
    """``-R``: listen on an entity, connect each relayed connection to a local TCP service."""

    def __init__(self, reactor, info, entity, host, port, via=None):
        self.reactor = reactor
        self.label = "-R %s->%s" % (entity, address(host, port))
        self.host, self.port, self.via = host, port, via
        self.listener = HybridListener(reactor, info, entity, self.on_accept, on_status=self.on_status)

    def on_status(self, status, detail):
        log.info("bridge {label}: {status} {detail}", label=self.label, status=status, detail=detail)

    def on_accept(self, request):
        d = request.accept()

        def opened(conn):
            tunnel = Tunnel(self.label, conn, self.via)
            self.local_endpoint().connect(LocalSideFactory(tunnel)).addErrback(tunnel.local_failed)

        d.addCallbacks(opened, lambda f: log.info("bridge {label}: accept failed: {err}", label=self.label,
                                                  err=f.getErrorMessage()))
        return None

    def local_endpoint(self):
        """The client endpoint of the local service: a Unix socket, IPv6 or IPv4."""
        if self.port is None:
            return endpoints.UNIXClientEndpoint(self.reactor, self.host, timeout=LOCAL_CONNECT_TIMEOUT)
        tcp = endpoints.TCP6ClientEndpoint if ":" in self.host else endpoints.TCP4ClientEndpoint
        return tcp(self.reactor, self.host, self.port, timeout=LOCAL_CONNECT_TIMEOUT)

    def start(self):
        return self.listener.start()

    def stop(self):
        return self.listener.stop()
