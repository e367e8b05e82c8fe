"""The shared pump of ``relayd bridge``: one relayed connection spliced with one local stream.

A :class:`Tunnel` joins a :class:`~relayd.client.websocket.RelayedConnection` (a rendezvous leg of
``-R`` or a sender connection of ``-L``) with a local TCP connection or Unix socket
(:class:`LocalSide`).  Bytes travel as binary WebSocket messages; each side is the other's
producer, so a slow reader stalls the writer.

The data path (issue 10 item 3): a plain TCP or Unix local socket is read through
:func:`relayd.fastio.attach` (``recv_into`` 256 KiB reads into a reusable buffer), and each
read goes out as one binary frame masked in that buffer
(:meth:`~relayd.client.websocket.RelayedConnection.send_in_place`); relayed payload is written
to the local socket piece by piece as it arrives (``on_view``), straight to the socket while
nothing is queued there, never assembled into messages.  What a socket refuses is queued by
Twisted, whose buffer limit pauses the other side's reading: memory stays bounded.

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

from relayd import fastio, states
from relayd.client.connection import READ_SIZE
from relayd.client.bridge.forwarder import log
from relayd.pipe import HalfClose, PauseReading, no_delay
from relayd.wire import nmf, nmf_preamble

# The close reason when the local side reset the connection mid-stream.
LOCAL_RESET = "the local side reset the connection before the end of its stream"
# The Via limit of the preamble a -R net.tcp target rewrites (the relay enforced its own already).
MAX_VIA = 65536
PREAMBLE_SLACK = 1024


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


# tunnel states
CONNECTING, OPEN, HALF_CLOSED, CLOSED = "connecting", "open", "half-closed", "closed"
TRANSITIONS = {
    CONNECTING: {OPEN, CLOSED},  # the local side connected (or could not, or the relay side ended)
    OPEN: {HALF_CLOSED, CLOSED},  # one direction ended (its EOF or marker), or a side closed
    HALF_CLOSED: {HALF_CLOSED, CLOSED},  # the other direction ended too, or a side closed
    CLOSED: {CLOSED},
}


class Tunnel:
    """One bridged connection: a RelayedConnection <-> a local TCP connection.

    States (:data:`TRANSITIONS`)::

        CONNECTING --local side connected--> OPEN --one direction ended--> HALF_CLOSED

    and any state goes to CLOSED when either side's connection ends (logged once, with the byte
    counts).  While CONNECTING the relayed connection is not read and what came is held; once
    CLOSED the tunnel does nothing more (a local side that connects after the relayed
    connection ended is closed at once).  Half-close is :class:`relayd.pipe.HalfClose`, shared
    with the relay's TCP doors.
    """

    state = CONNECTING

    def __init__(self, label, conn, via=None):
        self.id = uuid.uuid4().hex[:8]
        self.label = label
        self.conn = conn
        self.local = None
        self.half_close = None  # relayd.pipe.HalfClose of the local connection, once OPEN
        self.via = via  # rewrite the net.tcp preamble's Via to this URI
        self.parser = None
        self.held = []
        self.bytes_in = 0  # relay -> local
        self.bytes_out = 0  # local -> relay
        if via is not None:
            # the relay already enforced its own Via limit
            self.parser = nmf_preamble.PreambleParser(max_via=MAX_VIA, max_preamble=MAX_VIA + PREAMBLE_SLACK)
        self.local_io = None  # the fastio.DirectIO of the local socket, when it has one
        conn.on_view = self.from_relay
        conn.on_message_end = self.message_end
        conn.on_close = self.relay_closed
        conn.pauseProducing()  # until the local side is connected

    def _to(self, state):
        self.state = states.step(TRANSITIONS, "bridge tunnel", self.state, state)

    # relay -> local
    def from_relay(self, view):
        """A piece of relayed payload (valid only during the call)."""
        if self.state == CONNECTING:
            self.held.append(bytes(view))
            return
        if self.state == CLOSED:
            return
        if self.parser is not None:
            self._preamble(bytes(view))
            return
        self.bytes_in += len(view)
        if self.local_io is not None:
            self.local_io.write(view)
        else:
            self.local.transport.write(bytes(view))

    def message_end(self, is_binary, size):
        if size or not is_binary:
            return
        # an empty binary message: the far end's end-of-stream marker
        if self.state == CONNECTING:
            self.held.append(None)
            return
        if self.state == CLOSED:
            return
        self._to(HALF_CLOSED)
        self.half_close.marker_received()

    def _preamble(self, data):
        """-R with a net.tcp:// target: rewrite the preamble's Via, pass the rest."""
        try:
            preamble = self.parser.feed(data)
        except nmf.NmfFault as e:  # the leg closes; what still comes is fed here and dropped
            log.info("bridge {label} [{id}]: bad net.tcp preamble: {err}", label=self.label, id=self.id,
                     err=e.detail)
            if self.conn.is_connected:
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
        """A local read: ``bytes`` from Twisted, or fastio's read buffer, masked where it is."""
        self.bytes_out += len(data)
        if self.conn.is_connected:
            if isinstance(data, bytes):
                self.conn.send(data)
            else:
                self.conn.send_in_place(data)

    def local_made(self, local):
        if self.state == CLOSED:  # the relayed connection ended meanwhile
            local.transport.loseConnection()
            return
        self._to(OPEN)
        self.local = local
        self.half_close = HalfClose(local.transport)
        no_delay(local.transport)
        self.local_io = fastio.attach(local.transport, self.to_relay, READ_SIZE)
        local.transport.registerProducer(PauseReading(self.conn.transport), True)
        self.conn.transport.registerProducer(PauseReading(local.transport), True)
        held, self.held = self.held, []
        for data in held:
            if data is None:
                self.message_end(True, 0)
            else:
                self.from_relay(memoryview(data))
        self.conn.resumeProducing()
        log.info("bridge {label} [{id}]: open", label=self.label, id=self.id)

    def local_eof(self):
        if self.state == CLOSED:
            return
        self._to(HALF_CLOSED)
        if self.conn.is_connected:
            self.conn.send(b"")  # the end-of-stream marker
        self.half_close.read_ended()

    def local_failed(self, failure):
        log.info("bridge {label} [{id}]: cannot reach the local service: {err}", label=self.label, id=self.id,
                 err=failure.getErrorMessage())
        self._to(CLOSED)
        if self.conn.is_connected:
            self.conn.close(1011, "the bridge cannot reach its local service")

    def local_lost(self, reason):
        if self.state == CLOSED:
            return
        self._to(CLOSED)
        # A local side that ends without its EOF (reset, aborted) truncated its stream: say so
        # with 1011, so that the relay resets the far end's TCP connection instead of a FIN.
        clean = self.half_close.read_eof or reason is None or reason.check(error.ConnectionDone) is not None
        log.info("bridge {label} [{id}]: closed by the local side{how} ({i} bytes in, {o} bytes out)",
                 label=self.label, id=self.id, how="" if clean else " without EOF (reset)",
                 i=self.bytes_in, o=self.bytes_out)
        if self.conn.is_connected:
            if clean:
                self.conn.close(1000)
            else:
                self.conn.close(1011, LOCAL_RESET)

    def relay_closed(self, code, reason):
        if self.state == CLOSED:
            return
        was_connecting = self.state == CONNECTING
        self._to(CLOSED)
        log.info("bridge {label} [{id}]: closed by the relay side {code} {reason} ({i} bytes in, {o} bytes out)",
                 label=self.label, id=self.id, code=code, reason=reason or "", i=self.bytes_in,
                 o=self.bytes_out)
        if not was_connecting:
            # after the far end's marker or a clean close: a FIN; else the far end's stream broke
            # before its end: a reset, so the local peer never takes a truncated stream for a
            # complete one
            self.half_close.far_end_closed(code)


class LocalSideFactory(protocol.Factory):
    """Connects a tunnel's local side (``-R``: to the local service)."""

    noisy = False  # no "Starting factory" line per connection (issue 12)

    def __init__(self, tunnel):
        self.tunnel = tunnel

    def buildProtocol(self, addr):
        return LocalSide(self.tunnel)
