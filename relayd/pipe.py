"""The data path: two legs spliced with producer/consumer backpressure.

A leg (:class:`relayd.interfaces.ILeg`) delivers what it reads to its peer frame by frame,
as it arrives; nothing is buffered whole.  Flow control is TCP's own: each leg's transport
is registered as a *streaming producer* on the peer's transport, so when the peer's write
buffer goes over its high-water mark Twisted pauses reading on this leg, and resumes when
the peer has drained.  A reader that stops reading therefore stalls its writer, and the
relay holds at most about one read and one write buffer per direction per pair
(see ``docs/protocol.rst``, "Memory bound").
"""

from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer


@implementer(IPushProducer)
class PauseReading:
    """Lets the peer's transport pause/resume reading on ``transport``.

    ``stopProducing`` is deliberately a no-op: a transport calls it on its producer when it
    disconnects, and closing the other leg is the splice's job (with a proper close code),
    not an abrupt drop.
    """

    def __init__(self, transport):
        self.transport = transport
        self.paused = False

    def pauseProducing(self):
        if not self.paused:
            self.paused = True
            self.transport.pauseProducing()

    def resumeProducing(self):
        if self.paused:
            self.paused = False
            self.transport.resumeProducing()

    def stopProducing(self):
        pass


def splice(a, b):
    """Join legs ``a`` and ``b``: each forwards to the other, with backpressure both ways."""
    a.partner = b
    b.partner = a
    pa = PauseReading(a.transport)
    pb = PauseReading(b.transport)
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
    if peer is not None:
        reader = getattr(peer, "pause_reader", None)
        if reader is not None:
            reader.resumeProducing()
        peer.partner = None


def splice_transports(ta, tb):
    """Backpressure between two plain transports (e.g. an HTTP client and a WebSocket leg)."""
    ta.registerProducer(PauseReading(tb), True)
    tb.registerProducer(PauseReading(ta), True)


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
