"""Opening a client WebSocket to the relay: :func:`open_websocket`, and
:class:`RelayConnectError` when the handshake fails (no HTTP answer, or the relay's or the
listener's refusal with its status and description).
"""

from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import defer

from relayd.client.websocket import RelayedConnection

USER_AGENT = "relayd-client/0.1"
DEFAULT_TIMEOUT = 40.0


class RelayConnectError(Exception):
    """A WebSocket to the relay could not be opened.

    ``status`` is the HTTP status of the failed handshake (None when no HTTP answer came:
    connection refused, timeout, TLS failure), ``description`` the relay's status
    description (for a rejected connection: the listener's description plus a tracking id).
    """

    def __init__(self, status, description):
        super().__init__("%s %s" % (status, description) if status is not None else description)
        self.status = status
        self.description = description


class HandshakeFactory(WebSocketClientFactory):
    """One WebSocket attempt: ``deferred`` fires with the open protocol or fails with
    :class:`RelayConnectError`.  Its protocol calls :meth:`opened` or :meth:`failed` when
    the handshake has ended."""

    noisy = False  # no "Starting factory" line per connection (issue 12)

    def __init__(self, url, deferred, **kw):
        super().__init__(url, **kw)
        self.deferred = deferred
        self.connector = None
        self.proto = None

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        # Autobahn's connectionMade applies the protocol's tcpNoDelay before it copies the
        # factory's options onto the protocol, so a client socket kept Nagle's algorithm: a
        # response head then its body (two small writes) waited for the relay's delayed ACK
        # (40 ms per relayed HTTP request).  Give the protocol the option before it connects.
        proto.tcpNoDelay = self.tcpNoDelay
        self.proto = proto
        return proto

    def opened(self, proto):
        if not self.deferred.called:
            self.deferred.callback(proto)
        else:  # cancelled meanwhile
            proto.abort()

    def failed(self, proto, code, reason):
        if self.deferred.called:
            return
        status, description = None, reason
        line = getattr(proto, "http_status_line", None)
        if line:
            parts = line.split(" ", 2)
            try:
                status = int(parts[1])
                description = parts[2].strip() if len(parts) > 2 else ""
            except (IndexError, ValueError):
                pass
        if (status is None or status == 101) and reason:
            description = reason  # no HTTP answer, or a 101 that Autobahn refused (e.g. subprotocol)
        self.deferred.errback(RelayConnectError(status, description or "the WebSocket handshake failed"))

    def clientConnectionFailed(self, connector, reason):
        if not self.deferred.called:
            self.deferred.errback(RelayConnectError(
                None, "cannot reach the relay at %s:%s: %s" % (self._where(connector), self.port,
                                                               reason.getErrorMessage())))

    def _where(self, connector):
        address = getattr(connector, "host", None)
        return self.host if address in (None, self.host) else "%s (%s)" % (self.host, address)


def open_websocket(reactor, url, protocol_class=RelayedConnection, *, headers=None, protocols=None,
                   timeout=DEFAULT_TIMEOUT, options=None, tls_options=None, trust_root=None, address=None):
    """Open a WebSocket to ``url``; fires with the open ``protocol_class`` instance or fails
    with :class:`RelayConnectError`.  Cancelling the Deferred drops the attempt.

    For ``wss://`` the server certificate is checked against ``trust_root`` (e.g. a
    :class:`twisted.internet.ssl.Certificate`), by default the platform's trust store
    (OpenSSL honours ``$SSL_CERT_FILE`` / ``$SSL_CERT_DIR``), unless ``tls_options`` gives
    the whole client TLS configuration.  ``address``: the IP address to connect to instead of
    the URL's host (a name resolved beforehand); the URL's host is still the Host header and
    the name the certificate is checked for."""
    d = defer.Deferred(lambda d: _cancel(factory))
    factory = HandshakeFactory(url, d, headers=dict(headers or {}), protocols=list(protocols or []),
                       useragent=USER_AGENT, reactor=reactor)
    factory.protocol = protocol_class
    opts = dict(openHandshakeTimeout=timeout, closeHandshakeTimeout=5, autoFragmentSize=0,
                failByDrop=False, maxMessagePayloadSize=0, maxFramePayloadSize=0)
    opts.update(options or {})
    factory.setProtocolOptions(**opts)
    if factory.isSecure:
        if tls_options is None:
            from twisted.internet.ssl import optionsForClientTLS

            tls_options = optionsForClientTLS(factory.host, trustRoot=trust_root)
        factory.connector = reactor.connectSSL(address or factory.host, factory.port, factory, tls_options,
                                               timeout=timeout)
    else:
        factory.connector = reactor.connectTCP(address or factory.host, factory.port, factory, timeout=timeout)
    return d


def _cancel(factory):
    proto = factory.proto
    if proto is not None and proto.transport is not None:
        proto.dropConnection(abort=True)
    elif factory.connector is not None:
        factory.connector.stopConnecting()
