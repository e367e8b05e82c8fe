"""The data path: two legs spliced with producer/consumer backpressure.

A leg (:class:`relayd.interfaces.ILeg`) delivers what it reads to its peer frame by frame,
as it arrives; nothing is buffered whole.  Flow control is TCP's own: each leg's transport
is registered as a *streaming producer* on the peer's transport, so when the peer's write
buffer goes over its high-water mark Twisted pauses reading on this leg, and resumes when
the peer has drained.  The same producer also stops reading on the full transport itself:
what a leg writes on its own (pongs to a client that pings and never reads) must not grow
its buffer either.  A transport's reading may be held for several reasons at once
(:func:`hold_reading`); it reads again when none is left.  A reader that stops reading
therefore stalls its writer, and the relay holds at most about one read and one write
buffer per direction per pair (see ``docs/protocol.rst``, "Memory bound").
"""

from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

# Close codes that end a relayed TCP stream cleanly (the far end's TCP connection gets a FIN);
# any other code means the stream broke before its end, and the far end gets a reset (RST).
CLEAN_CLOSE_CODES = (1000, 1005, None)

# Why a transport's reading is held (several reasons may hold it at once; it reads again only
# when none is left).
HELD_BY_OWN_OUTPUT = "own-output"  # its own write buffer is over its limit (pongs, queued messages)
HELD_BY_PEER_OUTPUT = "peer-output"  # the peer it feeds cannot take more
HELD_BY_HANDSHAKE = "handshake"  # data before the opening handshake has completed
HELD_UNTIL_SPLICED = "unspliced"  # a data leg past its handshake, waiting for its partner


def hold_reading(transport, reason):
    """Stop reading on ``transport`` until :func:`release_reading` with every reason held."""
    holds = getattr(transport, "relayd_read_holds", None)
    if holds is None:
        holds = transport.relayd_read_holds = set()
    if reason in holds:
        return
    if not holds:
        transport.pauseProducing()
    holds.add(reason)


def release_reading(transport, reason):
    holds = getattr(transport, "relayd_read_holds", None)
    if not holds or reason not in holds:
        return
    holds.discard(reason)
    if not holds and not getattr(transport, "disconnected", False):
        transport.resumeProducing()


@implementer(IPushProducer)
class PauseReading:
    """The streaming producer registered on a transport: when that transport's write buffer
    goes over its limit, Twisted pauses this, which stops reading on ``peer`` (the transport
    that feeds it) *and* on the transport itself -- a client that keeps sending (pings: their
    pongs) but never reads must not grow the buffer without bound.

    ``stopProducing`` (a transport calls it on its producer when it disconnects) only lets go
    of the readings this producer held: closing the other leg is the splice's job (with a
    proper close code), not an abrupt drop.
    """

    __slots__ = ("peer", "own", "paused", "__weakref__")  # two per relayed connection

    def __init__(self, peer, own=None):
        self.peer = peer
        self.own = own
        self.paused = False

    def pauseProducing(self):
        if not self.paused:
            self.paused = True
            if self.peer is not None:
                hold_reading(self.peer, HELD_BY_PEER_OUTPUT)
            if self.own is not None:
                hold_reading(self.own, HELD_BY_OWN_OUTPUT)

    def resumeProducing(self):
        if self.paused:
            self.paused = False
            if self.peer is not None:
                release_reading(self.peer, HELD_BY_PEER_OUTPUT)
            if self.own is not None:
                release_reading(self.own, HELD_BY_OWN_OUTPUT)

    def stopProducing(self):
        # the transport this was registered on is gone: let go of the readings it held
        self.resumeProducing()
        self.peer = self.own = None


def pause_when_full(transport, producer=None):
    """For a protocol with no peer (a control channel): stop reading ``transport`` while its own
    write buffer is over its limit.  ``producer`` may be a :class:`PauseReading` subclass
    instance that also reacts to the pause (see the control channel)."""
    producer = producer or PauseReading(None, transport)
    transport.registerProducer(producer, True)
    return producer


def splice(a, b):
    """Join legs ``a`` and ``b``: each forwards to the other, with backpressure both ways."""
    a.partner = b
    b.partner = a
    for leg in (a, b):
        if getattr(leg.transport, "producer", None) is not None:
            leg.transport.unregisterProducer()
    pa = PauseReading(a.transport, b.transport)
    pb = PauseReading(b.transport, a.transport)
    a.transport.registerProducer(pb, True)
    b.transport.registerProducer(pa, True)
    a.pause_reader, b.pause_reader = pa, pb


def unsplice(leg):
    """Detach ``leg`` from its peer (called when the leg closes); resumes the peer's reading."""
    peer = getattr(leg, "partner", None)
    leg.partner = None
    for side in (leg, peer):
        if side is None:
            continue
        transport = getattr(side, "transport", None)
        if transport is not None and getattr(transport, "producer", None) is not None:
            try:
                transport.unregisterProducer()
            except Exception:
                pass
    for side in (leg, peer):
        reader = getattr(side, "pause_reader", None) if side is not None else None
        if reader is not None:
            reader.resumeProducing()
            reader.stopProducing()
            side.pause_reader = None
    if peer is not None:
        peer.partner = None


def splice_transports(ta, tb):
    """Backpressure between two plain transports (e.g. an HTTP client and a WebSocket leg)."""
    for t in (ta, tb):
        if getattr(t, "producer", None) is not None:
            t.unregisterProducer()
    ta.registerProducer(PauseReading(tb, ta), True)
    tb.registerProducer(PauseReading(ta, tb), True)


def close_after_flush(transport):
    """loseConnection() that really happens: drops a registered producer first (see
    :func:`shutdown_write`)."""
    if getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()
    transport.loseConnection()


def shutdown_write(transport):
    """Half-close ``transport`` once its buffer drains.  Nothing more will be written, so the
    producer that paced the writes is dropped first: with a paused streaming producer
    registered, Twisted resumes the producer when the buffer drains and never gets to the
    shutdown."""
    if getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()
    transport.loseWriteConnection()


def no_delay(transport):
    """Disable Nagle's algorithm where the transport allows it: relayed traffic is already
    coalesced by the reads that produce it, and small request/response exchanges must not wait
    for delayed ACKs."""
    setter = getattr(transport, "setTcpNoDelay", None)
    if setter is not None:
        try:
            setter(True)
        except Exception:
            pass


def reset(transport):
    """End ``transport`` with a reset (RST) rather than a FIN: what a relayed stream gets when its
    far end broke before the end, so a truncated stream never looks complete."""
    if getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()
    transport.abortConnection()


class HalfClose:
    """The two directions of one TCP connection whose stream is relayed as WebSocket messages, an
    empty binary message being the end-of-stream marker (the TCP doors, the bridge's tunnels).

    * :meth:`read_ended` -- the TCP peer sent its EOF (the caller sends the marker on);
    * :meth:`marker_received` -- the far end's marker arrived: our write half is shut down once
      what is queued is written;
    * :meth:`far_end_closed` -- the far end is gone: a FIN after its marker or a clean close code
      (:data:`CLEAN_CLOSE_CODES`), else a reset.

    The connection closes when both directions have ended.
    """

    def __init__(self, transport):
        self.transport = transport
        self.read_eof = False  # the TCP peer sent EOF
        self.write_shut = False  # the far end's marker came: nothing more is written

    @property
    def half_closed(self):
        return self.read_eof or self.write_shut

    def read_ended(self):
        """The TCP peer's EOF.  True when the connection was closed (the other direction had ended)."""
        self.read_eof = True
        if self.write_shut:
            close_after_flush(self.transport)
            return True
        return False

    def marker_received(self):
        """The far end's end-of-stream marker."""
        self.write_shut = True
        if self.read_eof:
            close_after_flush(self.transport)
        else:
            shutdown_write(self.transport)

    def far_end_closed(self, code):
        """The far end's leg ended with ``code``.  True when that ended the stream cleanly (FIN);
        False when the connection was reset."""
        if self.write_shut or code in CLEAN_CLOSE_CODES:
            close_after_flush(self.transport)
            return True
        reset(self.transport)
        return False
