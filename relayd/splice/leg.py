"""A spliced WebSocket data leg: the small object that becomes a connection's protocol once its
opening handshake is done (see :mod:`relayd.splice`)."""

from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from relayd import fastio, pipe, traffic
from relayd.interfaces import IClosable, IRendezvousLeg
from relayd.splice.reader import CLOSED, CLOSING, OPEN, FrameReader
from relayd.wire import wsframe
from relayd.wire.wsframe import BINARY, CLOSE, CONTINUATION, PONG, TEXT, encode_header

# Seconds a leg waits, once it has sent (or queued) its close frame, for the other end's close
# frame and TCP close; then the connection is dropped.  (Autobahn's closeHandshakeTimeout
# before the splice was the same.)
CLOSE_HANDSHAKE_TIMEOUT = 5.0

# Bytes a leg keeps before it is spliced (its partner's handshake is completing); beyond this it
# stops reading until then.
PENDING_MAX = 64 * 1024

# A partner's read that forwards more pieces than this here is joined into one buffer for its
# single write (small frames); fewer go as they are, one iovec each (large frames: no copy).
BATCH_JOIN = 32

_NO_CODE = (None, 1005)  # a close without a status code (an empty close payload)

_log = Logger()  # module-level: an event logged through an instance's Logger would hold the leg


def sendable_close_code(code):
    """``code`` as a close frame may carry it: None (no code) stays None; a code that may not be
    sent (1006, 1015, reserved, out of range) becomes 1001 (going away)."""
    if code in _NO_CODE:
        return None
    return code if wsframe.is_valid_close_code(code) else wsframe.CLOSE_GOING_AWAY


def socket_transport(transport):
    """The socket transport under the relay's counting wrappers (for :func:`relayd.fastio.attach`),
    or None on TLS."""
    while isinstance(transport, ProtocolWrapper):
        if isinstance(transport, TLSMemoryBIOProtocol):
            return None
        transport = transport.transport
    return transport


@implementer(IClosable, IRendezvousLeg)
class WebSocketLeg(FrameReader):
    """One side of a relayed connection after its handshake, in place of Autobahn's protocol.

    It reads frames with :class:`~relayd.splice.reader.FrameReader` and forwards them to its
    ``partner``; it writes (``write(header, payload)``) what its partner forwards, the pongs to its
    client's pings and the close handshake.  A control frame it writes waits until its output
    is at a frame boundary: a frame being forwarded to it goes out whole first.
    """

    __slots__ = (
        "transport", "factory", "partner", "pause_reader", "entity_path", "selected_protocol",
        "_state", "_io", "_untrack", "_on_lost", "_timer", "_pending",
        "_out_left",   # payload bytes of the frame being forwarded to this leg not yet written
        "_queued",     # control frames waiting for a frame boundary: [pong or None, close or None]
        "_drop_after_close",  # close the TCP connection once the close frame is written
        "_msg_opcode", "_msg_started",  # the message an ILeg caller is sending (begin/end_message)
        "_batch",      # what the partner's current read forwards here, written at its end
        "tracking", "_conn", "_flow",  # rendezvous id; the relayd.traffic.Connection and Flow it counts into
    )

    def __init__(self, factory, transport, entity_path=None, selected_protocol=None):
        self._reader_init()
        self.factory = factory
        self.transport = transport
        self.entity_path = entity_path
        self.selected_protocol = selected_protocol
        self.partner = None
        self.pause_reader = None
        self._state = OPEN
        self._io = None
        self._untrack = None
        self._on_lost = None
        self._timer = None
        self._pending = None
        self._out_left = 0
        self._queued = None
        self._drop_after_close = False
        self._msg_opcode = None
        self._msg_started = False
        self._batch = None
        self.tracking = None
        self._conn = self._flow = None

    def count_into(self, conn, flow):
        """Count what this leg reads into ``flow`` of ``conn`` (relayd.traffic), closed when it ends."""
        self._conn, self._flow = conn, flow

    @property
    def _text_hold(self):
        return self.factory.limits.leg_buffer

    # -- start: until both legs are spliced, what arrives is kept ------------------------------

    def hold_input(self, leftover):
        """Keep ``leftover`` (what came after the handshake) and what arrives until
        :meth:`start_data_leg` (reading stops past :data:`PENDING_MAX` bytes)."""
        self._pending = bytearray(leftover)

    def start_data_leg(self):
        """IRendezvousLeg: a data leg from now on (write buffer ``limits.leg_buffer``, closed when
        its entity is deleted).  Reading starts once the door has spliced it."""
        transport = self.transport
        if hasattr(transport, "bufferSize"):
            transport.bufferSize = self.factory.limits.leg_buffer
        if self._untrack is None:
            self._untrack = self.factory.switchboard.track(self.entity_path, self)
        if self._io is None and self._state == OPEN:
            raw = socket_transport(transport)
            if raw is not None:
                self._io = fastio.attach(raw, self.feed)
        self._start()

    def _start(self):
        pending = self._pending
        if not pending:
            self._pending = None
            pipe.release_reading(self.transport, pipe.HELD_UNTIL_SPLICED)
        else:
            # relayed once the door has spliced both legs (it starts them first): the next
            # turn; nothing is read meanwhile (the zero-copy reader would pass it)
            pipe.hold_reading(self.transport, pipe.HELD_UNTIL_SPLICED)
            self.factory.clock.callLater(0, self._feed_pending)

    def _feed_pending(self):
        pending, self._pending = self._pending, None
        if pending is None or self._state == CLOSED:
            return
        self.feed(memoryview(pending))
        pipe.release_reading(self.transport, pipe.HELD_UNTIL_SPLICED)

    def can_splice(self):
        """Open and not spliced yet."""
        return self._state == OPEN and self.partner is None and self.transport is not None

    def notify_on_lost(self, callback):
        self._on_lost = callback

    # -- reading (Twisted's path; the zero-copy path calls feed directly) ------------------------

    def feed(self, view):
        """FrameReader.feed, with what it forwards to a zero-copy partner written at the end in
        one ``sendmsg`` (many small frames in one read: one system call, not one per frame)."""
        flow = self._flow
        if flow is not None:
            flow.n += len(view)  # relayd.traffic: bytes counted as they flow (frames as read)
        partner = self.partner
        if type(partner) is not WebSocketLeg or partner._io is None:
            FrameReader.feed(self, view)
            return
        batch = partner._batch = []
        try:
            done = 0
            if (self._opcode is None and self._partial is None and self._reading and self._state == OPEN
                    and partner._state == OPEN and not partner._out_left):
                done = self._whole_binary_frames(view, batch)
            if done < len(view):
                FrameReader.feed(self, view[done:] if done else view)
        finally:
            partner._flush_batch()

    def dataReceived(self, data):
        pending = self._pending
        if pending is not None:
            pending += data
            if len(pending) > PENDING_MAX:
                pipe.hold_reading(self.transport, pipe.HELD_UNTIL_SPLICED)
            return
        self.feed(memoryview(bytearray(data)))

    def _sink_for_frame(self):
        partner = self.partner
        if self._state != OPEN or partner is None:
            return None
        if isinstance(partner, WebSocketLeg) and partner._state != OPEN:
            return None
        return partner

    # -- writing -------------------------------------------------------------------------------

    def write(self, *buffers):
        """Write ``buffers`` in order: straight to the socket on the zero-copy path, else through
        the transport (which keeps a reference: views of a lent read buffer are copied).  While
        the partner's read is being relayed (``feed``) they are collected and written at its end."""
        batch = self._batch
        if batch is not None:
            batch.extend(buffers)
            return
        io = self._io
        if io is not None:
            io.write(*buffers)
            return
        self.transport.writeSequence([bytes(b) if type(b) is memoryview else b for b in buffers])

    def _flush_batch(self):
        batch, self._batch = self._batch, None
        if not batch or self._state == CLOSED:
            return
        if len(batch) > BATCH_JOIN:
            self.write(b"".join(batch))  # many small frames: one copy beats as many iovecs
        else:
            self.write(*batch)

    def _lose(self):
        """Close the TCP connection once what is written (and batched) is sent."""
        self._flush_batch()
        pipe.close_after_flush(self.transport)

    def _out_start(self, header, length, chunk):
        """A frame of ``length`` payload bytes forwarded to this leg begins (with ``chunk``)."""
        if self._state == CLOSED:
            return
        self._out_left = length - len(chunk)
        if chunk:
            self.write(header, chunk)
        else:
            self.write(header)
        if not self._out_left:
            self._at_boundary()

    def _out_more(self, chunk):
        if self._state == CLOSED:
            return
        self._out_left -= len(chunk)
        self.write(chunk)
        if not self._out_left:
            self._at_boundary()

    def _at_boundary(self):
        queued = self._queued
        if queued is not None:
            self._queued = None
            for frame in queued:
                if frame is not None:
                    self.write(frame)
            if queued[1] is not None and self._drop_after_close:
                self._lose()

    def _send_control(self, opcode, payload):
        frame = encode_header(opcode, True, len(payload)) + payload
        if not self._out_left:
            self.write(frame)
            if opcode == CLOSE and self._drop_after_close:
                self._lose()
            return
        queued = self._queued
        if queued is None:
            queued = self._queued = [None, None]
        if opcode == CLOSE:
            queued[1] = frame
        elif queued[1] is None:
            queued[0] = frame  # only the latest ping is answered (RFC 6455 5.5.3)

    # -- control frames read ---------------------------------------------------------------------

    def _on_ping(self, payload):
        if self._state == OPEN:
            self._send_control(PONG, payload)

    def _on_close_frame(self, payload):
        try:
            code, reason = wsframe.parse_close(payload)
        except wsframe.FrameError as e:
            self.fail(e.code, e.reason)
            return
        if self._conn is not None:
            self._conn.set_status(code)
        if self._state == OPEN:
            # the client closes: answer with its code, close the TCP connection (the server's
            # part, RFC 6455 7.1.1), and close the partner with the same code and reason
            self._closing(drop=True)
            self._send_control(CLOSE, wsframe.encode_close(code))
            partner = self.partner
            if partner is not None:
                partner.close(code, reason or None)
        elif self._state == CLOSING:
            # the answer to our close frame
            self._drop_after_close = True
            if self._queued is None or self._queued[1] is None:
                self._lose()

    def fail(self, code, reason):
        """Fail the connection (RFC 6455 7.1.7): a close frame with ``code``, then TCP close; the
        partner is closed with the same code."""
        self._reading = False
        if self._state != OPEN:
            self._drop_after_close = True
            if self._queued is None or self._queued[1] is None:
                self._lose()
            return
        _log.info("relayed connection on {path}: closing with {code}: {reason}",
                  path=self.entity_path, code=code, reason=reason)
        if self._conn is not None:
            self._conn.set_status(code)
        self._closing(drop=True)
        self._send_control(CLOSE, wsframe.encode_close(code, reason))
        partner = self.partner
        if partner is not None:
            partner.close(code, "the other side of the relayed connection was closed: " + reason)

    # -- closing ---------------------------------------------------------------------------------

    def _closing(self, drop):
        self._state = CLOSING
        self._drop_after_close = drop
        self._timer = self.factory.clock.callLater(CLOSE_HANDSHAKE_TIMEOUT, self._close_timed_out)
        if self._pending is not None:
            self._start()  # read the other end's close frame

    def _close_timed_out(self):
        self._timer = None
        pipe.reset(self.transport)

    def close(self, code, reason):
        """IClosable / ILeg: start the close handshake with ``code`` (None: no code) and
        ``reason``.  A leg in the middle of a frame forwarded to it closes after that frame
        (its partner goes on forwarding it); if the partner's connection ends first, nothing
        can finish the frame and this leg is dropped (TCP reset, see connectionLost)."""
        if self._state != OPEN:
            return
        self._closing(drop=False)
        code = sendable_close_code(code)
        payload = b"" if code is None else wsframe.encode_close(code, reason or "")
        self._send_control(CLOSE, payload)

    def connectionLost(self, reason=None):
        self._state = CLOSED
        self._reading = False
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._untrack is not None:
            self._untrack()
            self._untrack = None
        self._io = None
        self._pending = None
        conn, self._conn, self._flow = self._conn, None, None
        if conn is not None:
            conn.close(traffic.ABNORMAL_CLOSE)  # the code its close frames gave, else 1006
        partner = self.partner
        if partner is not None:
            pipe.unsplice(self)
            if isinstance(partner, WebSocketLeg) and partner._out_left:
                pipe.reset(partner.transport)  # inside a frame from here that cannot be finished
            else:
                partner.close(wsframe.CLOSE_GOING_AWAY, "the other side of the relayed connection went away")
        closer, self._on_lost = self._on_lost, None
        if closer is not None:
            closer()
        self.factory.countConnections -= 1  # Autobahn's count: its protocol no longer sees the end

    # -- ILeg: what a non-WebSocket partner (a TCP door, the HTTP door) sends ----------------------
    #
    # Such a partner sends whole pieces, so the output is at a frame boundary between calls:
    # every frame_data piece goes out as a frame of its own, the first with the message's
    # opcode, and end_message ends the message with an empty FIN continuation frame (a message
    # with no payload is one empty FIN frame).

    def begin_message(self, is_binary):
        self._msg_opcode = BINARY if is_binary else TEXT
        self._msg_started = False

    def frame_begin(self, length):
        """No-op: every frame_data() piece goes out as a frame of its own."""

    def frame_data(self, data):
        if self._state != OPEN or not data or self._msg_opcode is None:
            return
        opcode = CONTINUATION if self._msg_started else self._msg_opcode
        self._msg_started = True
        self.write(encode_header(opcode, False, len(data)), data)

    def end_message(self):
        opcode = CONTINUATION if self._msg_started else self._msg_opcode
        self._msg_opcode = None
        self._msg_started = False
        if self._state == OPEN and opcode is not None:
            self.write(encode_header(opcode, True, 0))

    def send_message(self, data):
        """One whole binary message (a TCP door's read; ``b""`` is the half-close marker)."""
        if self._state == OPEN:
            self.write(encode_header(BINARY, True, len(data)), data)

    def send_text(self, text):
        if self._state == OPEN:
            data = text.encode("utf-8")
            self.write(encode_header(TEXT, True, len(data)), data)
