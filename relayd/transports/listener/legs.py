"""A listener's rendezvous legs and the frame relay every data leg shares.

Wire protocol (Azure Relay Hybrid Connections, relayd flavour):

* ``/$hc/{path}?sb-hc-action=accept&sb-hc-id=KEY`` -- the listener's rendezvous leg for one
  WebSocket sender (the address comes from the ``accept`` message, used as is).  With
  ``sb-hc-statusCode`` (400-599) and ``sb-hc-statusDescription`` it rejects the sender
  instead (the sender's handshake fails with that status); that handshake ends with 410.
  The leg takes the first subprotocol it offers and answers the sender's handshake with it.
* ``/$hc/{path}?sb-hc-action=request&sb-hc-id=KEY`` -- the listener's rendezvous leg for an
  HTTP request (the address from the ``request`` message): the listener reads the request and
  writes its response over it (see :mod:`relayd.transports.http`).
* A KEY that is unknown, used or past its accept deadline: 403; an action that does not match
  the rendezvous' kind: 400.

After pairing, frames are relayed as they arrive (see :mod:`relayd.pipe` and
:class:`RelayingLeg`); a frame the relay rejects closes both legs with the same code.
"""

import struct

from relayd import access, pipe
from relayd.switchboard import SwitchboardError
from relayd.transports.listener.roles import Denied, Role, param

MAX_REASON = 512  # characters of a listener's sb-hc-statusDescription passed on to the sender


class RendezvousLeg(Role):
    """The ``accept`` / ``request`` role: completes the pending rendezvous once open."""

    __slots__ = ("rendezvous",)

    relays = True

    def __init__(self, protocol, rendezvous):
        super().__init__(protocol)
        self.rendezvous = rendezvous

    @classmethod
    def arrive(cls, protocol, request, action):
        """Check the leg's handshake against its rendezvous.  Returns ``(role, subprotocol)``;
        raises :class:`Denied` (a rejection ends here too, with 410)."""
        key = param(request, "sb-hc-id")
        if not key:
            raise Denied(400, "the accept address must carry sb-hc-id; use the address from the accept message as is")
        try:
            rv = protocol.factory.switchboard.find(key)
        except SwitchboardError as e:
            raise Denied(e.status, e.message)
        if action != rv.kind:
            raise Denied(400, "sb-hc-action=%s does not match this rendezvous; use its address as is" % action)
        if action == "accept":
            status = param(request, "sb-hc-statusCode")
            if status is not None:
                cls._reject(rv, status, param(request, "sb-hc-statusDescription"))
            protocol.selected_protocol = request.protocols[0] if request.protocols else None
        protocol.entity_path = rv.entity_path
        protocol.maxMessagePayloadSize = 0
        protocol.maxFramePayloadSize = 0
        return cls(protocol, rv), protocol.selected_protocol

    @staticmethod
    def _reject(rv, status, description):
        description = access.one_line(description or "Rejected by the listener", MAX_REASON)
        try:
            code = int(status)
        except ValueError:
            code = 0
        if not 400 <= code <= 599:
            raise Denied(400, "sb-hc-statusCode must be an HTTP error status from 400 to 599")
        rv.reject(code, description)
        raise Denied(410, "the connection was rejected as asked")

    def opened(self):
        rv, self.rendezvous = self.rendezvous, None
        if rv.done:
            self.protocol.close(1001, "the sender went away before the connection was accepted")
            return
        rv.accept(self.protocol)  # completes the sender's handshake; its onOpen splices both legs

    def lost(self):
        rv, self.rendezvous = self.rendezvous, None
        if rv is not None and not rv.done:
            rv.cancel()


class RelayingLeg:
    """Mixin for the WebSocket protocol: a data leg (:class:`relayd.interfaces.IRendezvousLeg`)
    that relays frames to its ``partner`` as they arrive, when ``self.relays`` is set (the
    sender's and the rendezvous legs' roles); a control channel keeps Autobahn's whole,
    size-limited messages."""

    partner = None
    pause_reader = None
    selected_protocol = None
    entity_path = None
    relays = False
    _untrack = None
    _on_lost = None

    def start_data_leg(self):
        buffer_size = self.factory.limits.leg_buffer
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = buffer_size
        self._untrack = self.factory.switchboard.track(self.entity_path, self)

    def notify_on_lost(self, callback):
        self._on_lost = callback

    def _leg_lost(self):
        """The connection is gone: let the entity forget it, close the partner, tell the door."""
        if self._untrack is not None:
            self._untrack()
            self._untrack = None
        peer = self.partner
        if peer is not None:
            pipe.unsplice(self)
            peer.close(1001, "the other side of the relayed connection went away")
        closer = self._on_lost
        if closer is not None:
            closer()

    # -- receiving: forward each validated piece of a frame to the partner as it arrives --------
    #
    # Nothing is forwarded once this leg is no longer OPEN: Autobahn (failByDrop=False) keeps
    # parsing a frame it has just rejected (bad RSV, opcode, mask, continuation order, invalid
    # UTF-8) after sending its close frame, so a rejected frame would otherwise still reach the
    # peer.  The rejection itself closes the peer at once (see sendCloseFrame).
    #
    # Binary payload needs no check beyond the frame header, so it goes on as it is read.
    # Text is valid only once its frame has been checked to the end (and, for the final
    # frame, once the message does not end inside a code point), so a text frame is held
    # until then, up to limits.leg_buffer bytes; a longer one is forwarded in pieces of that
    # size, each validated before it goes.

    _text = False  # the message being received is text
    _held = ()  # validated text of the current frame not yet forwarded
    _held_size = 0

    def _forwarding(self):
        return self.partner is not None and self.state == self.STATE_OPEN

    def _flush_held(self):
        held, self._held, self._held_size = self._held, (), 0
        if held and self._forwarding():
            self.partner.frame_data(held[0] if len(held) == 1 else b"".join(held))

    def onMessageBegin(self, isBinary):
        if not self.relays:
            return super().onMessageBegin(isBinary)
        self._text = not isBinary
        self._held, self._held_size = (), 0
        if self._forwarding():
            self.partner.begin_message(isBinary)

    def onMessageFrameBegin(self, length):
        if not self.relays:
            return super().onMessageFrameBegin(length)
        if self._forwarding():
            self.partner.frame_begin(length)

    def onMessageFrameData(self, payload):
        if not self.relays:
            return super().onMessageFrameData(payload)
        if not payload or not self._forwarding():
            return
        if self._text:
            if self._held_size + len(payload) <= self.factory.limits.leg_buffer:
                self._held = self._held + (payload,) if self._held else (payload,)
                self._held_size += len(payload)
                return
            self._flush_held()
        self.partner.frame_data(payload)

    def onMessageFrameEnd(self):
        if not self.relays:
            return super().onMessageFrameEnd()
        # Autobahn checks the end of a text message (FIN) only after this: hold the final
        # frame's text until onMessageEnd.
        frame = self.current_frame
        if self._held and frame is not None and not frame.fin:
            self._flush_held()

    def onMessageEnd(self):
        if not self.relays:
            return super().onMessageEnd()
        if self._forwarding():
            self._flush_held()
            self.partner.end_message()
        self._held, self._held_size = (), 0

    def onCloseFrame(self, code, reasonRaw):
        peer = self.partner
        if peer is not None:
            pipe.unsplice(self)
            try:
                reason = reasonRaw.decode("utf-8") if reasonRaw else None
            except UnicodeDecodeError:
                reason = None
            peer.close(code, reason)
        return super().onCloseFrame(code, reasonRaw)

    # -- sending relayed messages --------------------------------------------------------
    #
    # A relayed message is re-fragmented (RFC 6455 5.4 allows an intermediary to do so when
    # no extension is negotiated; relayd refuses compression): every piece of payload goes out
    # as its own COMPLETE frame, the first with the message's opcode, the rest as
    # continuations, and the message ends with an empty FIN continuation frame (a message
    # with no payload at all is one empty FIN frame with the message's opcode).  Between two
    # calls the outgoing stream is therefore always at a frame boundary, so the pongs and close
    # frames Autobahn writes can never land inside a frame.  These override Autobahn's
    # streaming API of the same names (the HTTP door and the TCP doors call them).

    _out_opcode = None  # opcode of the message being sent; None outside a message
    _out_started = False  # a frame of it has been written (later frames are continuations)

    def _write_frame(self, opcode, payload, fin):
        n = len(payload)
        b0 = (0x80 if fin else 0) | opcode
        if n <= 125:
            header = bytes((b0, n))
        elif n <= 0xFFFF:
            header = struct.pack("!BBH", b0, 126, n)
        else:
            header = struct.pack("!BBQ", b0, 127, n)
        # Straight to the transport: Autobahn's sendData only adds its send queue (used for
        # "sync"/chopped writes, which relayd never makes) and per-call debug-log arguments.
        if n:
            self.transport.writeSequence((header, payload))
        else:
            self.transport.write(header)

    def beginMessage(self, isBinary=False, doNotCompress=False):
        if self.state != self.STATE_OPEN:
            return
        if self._out_opcode is not None:
            raise RuntimeError("beginMessage while a relayed message is still being sent")
        self._out_opcode = self.MESSAGE_TYPE_BINARY if isBinary else self.MESSAGE_TYPE_TEXT
        self._out_started = False

    def beginMessageFrame(self, length):
        """No-op: frames are cut by :meth:`sendMessageFrameData`, one per piece of payload."""

    def sendMessageFrameData(self, payload, sync=False):
        if self.state != self.STATE_OPEN or not payload:
            return
        opcode = self._out_opcode
        if opcode is None:
            raise RuntimeError("sendMessageFrameData outside a message (call beginMessage first)")
        if self._out_started:
            opcode = 0
        self._out_started = True
        self._write_frame(opcode, payload, False)

    def endMessage(self):
        if self.state != self.STATE_OPEN:
            self._out_opcode = None
            return
        opcode = self._out_opcode
        if opcode is None:
            raise RuntimeError("endMessage outside a message (call beginMessage first)")
        self._write_frame(0 if self._out_started else opcode, b"", True)
        self._out_opcode = None
        self._out_started = False

    def sendCloseFrame(self, code=None, reasonUtf8=None, isReply=False):
        # A close this leg starts while still spliced is the relay failing it (protocol
        # error, invalid payload, message too big, ping timeout) or the relay closing it; the
        # peer is told at once, with the same code, instead of after this leg's close handshake.
        first = self.state == self.STATE_OPEN
        super().sendCloseFrame(code=code, reasonUtf8=reasonUtf8, isReply=isReply)
        peer = self.partner
        if first and not isReply and peer is not None:
            pipe.unsplice(self)
            reason = (reasonUtf8 or b"").decode("utf-8", "replace")
            peer.close(code, "the other side of the relayed connection was closed%s" % (
                ": " + reason if reason else ""))

    # -- ILeg (what the peer calls) / IClosable -------------------------------------------

    def begin_message(self, is_binary):
        self.beginMessage(isBinary=is_binary)

    def frame_begin(self, length):
        """No-op (see beginMessageFrame): every frame_data() goes out as one whole frame."""

    def frame_data(self, data):
        self.sendMessageFrameData(data)

    def end_message(self):
        self.endMessage()

    def send_message(self, data):
        """One whole binary message (a TCP door's read, or the empty half-close marker)."""
        self.sendMessage(data, isBinary=True)

    def send_text(self, text):
        """One whole text message (the HTTP door's ``request`` control message)."""
        self.sendMessage(text.encode("utf-8"), isBinary=False)

    def close(self, code, reason):
        if self.state == self.STATE_OPEN:
            if code in (None, 1005):
                self.sendCloseFrame(isReply=False)
            else:
                if code in (1006, 1015) or not (1000 <= code <= 4999):
                    code = 1001
                reason_utf8 = (reason or "").encode("utf-8")[:123] or None
                self.sendCloseFrame(code=code, reasonUtf8=reason_utf8, isReply=False)
        elif self.state == self.STATE_CONNECTING:
            self.dropConnection(abort=True)
