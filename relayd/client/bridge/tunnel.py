"""The shared pump of ``relayd bridge``: one relayed connection spliced with one local stream.

A :class:`Tunnel` joins a :class:`~relayd.client.websocket.RelayedConnection` (a rendezvous leg of
``-R`` or a sender connection of ``-L``) with a local TCP connection or Unix socket
(:class:`LocalSide`).  Bytes travel as binary WebSocket messages; each side is the other's
producer, so a slow reader stalls the writer.

Half-close: an empty binary message is the end-of-stream marker (as at the relay's TCP doors,
see ``relayd.transports.tcp``).  The local side's EOF sends it; receiving it shuts down
writing to the local side; when both directions have ended the local connection is closed.

Resets: a local side that ends without its EOF (reset, aborted) truncated its stream, so the
leg is closed with 1011 (:data:`LOCAL_RESET`) and the far end resets its own connection; a leg
that ends abnormally (not 1000/1001/1005) aborts the local connection, so the local peer never
takes a truncated stream for a complete one.

With a ``net.tcp://`` target (``-R``), the [MC-NMF] Via record of the incoming preamble is
rewritten to that URI and everything else passes unchanged.
"""

import uuid

from twisted.internet import error, protocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from relayd.client.bridge.forwarder import log
from relayd.pipe import CLEAN_CLOSE_CODES, PauseReading, close_after_flush, no_delay, shutdown_write

# The close reason when the local side reset the connection mid-stream.
LOCAL_RESET = "the local side reset the connection before the end of its stream"


@implementer(IHalfCloseableProtocol)
class LocalSide(protocol.Protocol):
    """The local TCP end of one bridged connection."""

    def __init__(self, tunnel):
        self.tunnel = tunnel

    def connectionMade(self):
        self.tunnel.local_made(self)

    def dataReceived(self, data):
        self.tunnel.to_relay(data)

    def readConnectionLost(self):
        self.tunnel.local_eof()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.tunnel.local_lost(reason)


class Tunnel:
    """One bridged connection: a RelayedConnection <-> a local TCP connection."""

    def __init__(self, label, conn, via=None):
        self.id = uuid.uuid4().hex[:8]
        self.label = label
        self.conn = conn
        self.local = None
        self.via = via  # rewrite the net.tcp preamble's Via to this URI
        self.parser = None
        self.held = []
        self.bytes_in = 0  # relay -> local
        self.bytes_out = 0  # local -> relay
        self.done = False
        self.read_eof = False  # the local side sent EOF
        self.write_shut = False  # we shut down writing to the local side
        if via is not None:
            from relayd.wire import nmf

            # the relay already enforced its own Via limit
            self.parser = nmf.PreambleParser(max_via=65536, max_preamble=65536 + 1024)
        conn.on_message = self.from_relay
        conn.on_close = self.relay_closed
        conn.pauseProducing()  # until the local side is connected

    # relay -> local
    def from_relay(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        if self.local is None:
            self.held.append(data)
            return
        if not data:
            self.write_shut = True
            if self.read_eof:
                close_after_flush(self.local.transport)
            else:
                shutdown_write(self.local.transport)
            return
        if self.parser is not None:
            from relayd.wire import nmf

            try:
                preamble = self.parser.feed(data)
            except nmf.NmfFault as e:
                log.info("bridge {label} [{id}]: bad net.tcp preamble: {err}", label=self.label, id=self.id,
                         err=e.detail)
                self.conn.send(nmf.fault(e.name))
                self.conn.close(1000)
                return
            if preamble is None:
                return
            self.parser = None
            data = nmf.rewrite_via(preamble.raw, self.via) + preamble.rest
        self.bytes_in += len(data)
        self.local.transport.write(data)

    # local -> relay
    def to_relay(self, data):
        self.bytes_out += len(data)
        if self.conn.is_connected:
            self.conn.sendMessage(data, isBinary=True)

    def local_made(self, local):
        self.local = local
        no_delay(local.transport)
        local.transport.registerProducer(PauseReading(self.conn.transport), True)
        self.conn.transport.registerProducer(PauseReading(local.transport), True)
        held, self.held = self.held, []
        for data in held:
            self.from_relay(data)
        self.conn.resumeProducing()
        log.info("bridge {label} [{id}]: open", label=self.label, id=self.id)

    def local_eof(self):
        self.read_eof = True
        if self.conn.is_connected:
            self.conn.sendMessage(b"", isBinary=True)
        if self.write_shut and self.local is not None:
            close_after_flush(self.local.transport)

    def local_failed(self, failure):
        log.info("bridge {label} [{id}]: cannot reach the local service: {err}", label=self.label, id=self.id,
                 err=failure.getErrorMessage())
        self.done = True
        if self.conn.is_connected:
            self.conn.close(1011, "the bridge cannot reach its local service")

    def local_lost(self, reason):
        # A local side that ends without its EOF (reset, aborted) truncated its stream: say so
        # with 1011, so that the relay resets the far end's TCP connection instead of a FIN.
        clean = self.read_eof or reason is None or reason.check(error.ConnectionDone) is not None
        if not self.done:
            self.done = True
            log.info("bridge {label} [{id}]: closed by the local side{how} ({i} bytes in, {o} bytes out)",
                     label=self.label, id=self.id, how="" if clean else " without EOF (reset)",
                     i=self.bytes_in, o=self.bytes_out)
        if self.conn.is_connected:
            if clean:
                self.conn.close(1000)
            else:
                self.conn.close(1011, LOCAL_RESET)

    def relay_closed(self, code, reason):
        if not self.done:
            self.done = True
            log.info("bridge {label} [{id}]: closed by the relay side {code} {reason} ({i} bytes in, {o} bytes out)",
                     label=self.label, id=self.id, code=code, reason=reason or "", i=self.bytes_in,
                     o=self.bytes_out)
        if self.local is None:
            return
        if code in CLEAN_CLOSE_CODES or self.write_shut:
            close_after_flush(self.local.transport)
        else:
            # The far end's stream broke before its end: a reset, so the local peer never takes
            # a truncated stream for a complete one.
            if getattr(self.local.transport, "producer", None) is not None:
                self.local.transport.unregisterProducer()
            self.local.transport.abortConnection()


class LocalSideFactory(protocol.Factory):
    """Connects a tunnel's local side (``-R``: to the local service)."""

    def __init__(self, tunnel):
        self.tunnel = tunnel

    def buildProtocol(self, addr):
        return LocalSide(self.tunnel)
