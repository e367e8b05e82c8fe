"""Listening ports shared by several processes: ``tcp:9090:reuseport=1`` (also ``tcp6:`` and ``ssl:``).

Each process binds its own socket with ``SO_REUSEPORT`` (Linux 3.9+, the BSDs, macOS) and the
kernel spreads new connections among the sockets bound to the port (on Linux by a hash of the
connection's addresses and ports).  Only processes of the same effective user may share a port.
``relayd serve --workers N`` (:mod:`relayd.workers`) gives every worker the public listen
addresses with ``reuseport=1``.

Twisted's TCP port has no such option, so :class:`ReusePortEndpoint` makes the socket itself and
hands it to the reactor with the public ``IReactorSocket.adoptStreamPort`` (which duplicates the
descriptor); TLS is Twisted's public ``TLSMemoryBIOFactory`` around the relay's factory, as
``listenSSL`` does.
"""

import socket

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface import implementer

REUSEPORT = getattr(socket, "SO_REUSEPORT", None)


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """A server endpoint for a :class:`relayd.endpoint_strings.ListenSpec` (``tcp``, ``tcp6`` or
    ``ssl``) bound with ``SO_REUSEPORT``; ``tls``: the context factory of an ``ssl:`` spec."""

    def __init__(self, reactor, spec, backlog, tls=None):
        self.reactor, self.spec, self.backlog, self.tls = reactor, spec, backlog, tls

    def listen(self, factory):
        return defer.execute(self._listen, factory)

    def _listen(self, factory):
        spec = self.spec
        interface = spec.interface or ("::" if spec.kind == "tcp6" else "")
        family = socket.AF_INET6 if spec.kind == "tcp6" or ":" in interface else socket.AF_INET
        if REUSEPORT is None:
            raise CannotListenError(interface, spec.port, OSError("this system has no SO_REUSEPORT; "
                                                                  "remove reuseport=1 (and run one worker)"))
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, REUSEPORT, 1)
            sock.bind((interface, spec.port))
            sock.listen(self.backlog)
            sock.setblocking(False)
            if self.tls is not None:
                from twisted.protocols.tls import TLSMemoryBIOFactory

                factory = TLSMemoryBIOFactory(self.tls, False, factory)
            return self.reactor.adoptStreamPort(sock.fileno(), family, factory)
        except OSError as e:
            raise CannotListenError(interface, spec.port, e)
        finally:
            sock.close()  # the reactor holds its own duplicate
