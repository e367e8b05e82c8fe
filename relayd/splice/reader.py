"""The incremental frame reader of a spliced WebSocket data leg (see :mod:`relayd.splice`).

:meth:`FrameReader.feed` consumes a writable ``memoryview`` synchronously and keeps no reference
to it (the zero-copy reader lends one buffer to every connection): a header split across reads
is copied, text being held is copied, and binary payload is unmasked in place and written (or
copied) by the partner before ``feed`` returns.

Per frame: the header checks of :func:`relayd.wire.wsframe.parse_header` (RSV, opcodes, control
frame rules, length), then the ones that need the leg's state -- every frame from a client is
masked (the relay is the server on every HC leg), continuation sequencing -- and text is
validated as UTF-8 incrementally across the message.  A :class:`~relayd.wire.wsframe.FrameError`
fails the leg with its close code; nothing of the rejected frame is forwarded.

Forwarding, frame by frame (no message assembly):

* to a WebSocket partner (another :class:`FrameReader` leg) the same frame goes out, header
  re-encoded unmasked, payload as it arrives (``_out_start`` / ``_out_more``);
* to any other partner (:class:`relayd.interfaces.ILeg`: the TCP doors, the HTTP door) as
  ``begin_message`` / ``frame_begin`` / ``frame_data`` / ``end_message``; ``frame_data`` gets
  ``bytes``, or the view itself when the partner says it writes or copies it at once
  (``takes_views = True``: the TCP door).

Text frames are held until validated to their end, up to ``limits.leg_buffer`` bytes; a longer
text frame goes out re-fragmented into validated pieces (RFC 6455 5.4 allows an intermediary
this when no extension is negotiated), so no invalid byte is ever forwarded and the close for
invalid text goes out at a frame boundary.
"""

from autobahn.websocket.utf8validator import Utf8Validator

from relayd import accel
from relayd.wire.wsframe import (
    BINARY, CLOSE, CLOSE_INVALID_PAYLOAD, CLOSE_PROTOCOL_ERROR, CONTINUATION, MAX_HEADER, PING, TEXT,
    FrameError, encode_header, parse_header,
)

xor_in_place = accel.xor_in_place

# A data leg's states: relaying; closing (its close frame sent or waiting for a frame boundary);
# its connection gone.
OPEN, CLOSING, CLOSED = "open", "closing", "closed"


class FrameReader:
    """The reading half of a data leg.  Subclasses provide ``partner``, ``_sink_for_frame()``,
    ``_text_hold`` (bytes of text held before it is forwarded in pieces), ``fail(code, reason)``,
    ``_on_ping(payload)`` and ``_on_close_frame(payload)``."""

    __slots__ = (
        "_partial",   # bytearray: the start of a header split across reads, else None
        "_opcode",    # opcode of the frame being read; None between frames
        "_fin", "_mask", "_left", "_done",  # that frame's FIN, mask, payload bytes left / done
        "_message",   # TEXT or BINARY while a message is being read (until its FIN frame)
        "_sink",      # where this frame goes: a WebSocket leg, an ILeg, or None (dropped)
        "_views",     # that ILeg's frame_data takes a view of the read buffer (takes_views)
        "_control",   # bytearray: the payload of the control frame being read
        "_utf8",      # the text messages' Utf8Validator (made on the first one)
        "_utf8_whole",  # the text so far ends on a code point
        "_held",      # bytearray: validated text of this frame not yet forwarded
        "_piece",     # opcode the next forwarded piece of a text frame goes out with
        "_reading",   # False once the leg failed or read a close frame: the rest is ignored
    )

    def _reader_init(self):
        self._partial = None
        self._opcode = None
        self._fin = True
        self._mask = None
        self._left = self._done = 0
        self._message = None
        self._sink = None
        self._views = False
        self._control = None
        self._utf8 = None
        self._utf8_whole = True
        self._held = None
        self._piece = None
        self._reading = True

    def feed(self, view):
        """Consume ``view`` (a writable ``memoryview`` of bytes read), synchronously."""
        pos = 0
        end = len(view)
        try:
            while pos < end and self._reading:
                if self._opcode is not None:
                    n = self._left if self._left <= end - pos else end - pos
                    self._data(view[pos:pos + n])
                    pos += n
                    continue
                partial = self._partial
                if partial is None:
                    parsed = parse_header(view, pos)
                    if parsed is None:
                        self._partial = bytearray(view[pos:])
                        return
                    header, size = parsed
                    pos += size
                else:
                    had = len(partial)
                    partial += view[pos:pos + MAX_HEADER - had]
                    parsed = parse_header(partial)
                    if parsed is None:
                        return
                    header, size = parsed
                    pos += size - had
                    self._partial = None
                n = header.length if header.length <= end - pos else end - pos
                self._begin(header, view[pos:pos + n])
                pos += n
        except FrameError as e:
            self._reading = False
            self.fail(e.code, e.reason)

    def _whole_binary_frames(self, view, out):
        """The fast path of a read to a zero-copy partner, at a frame boundary (the caller
        checks that): consume the whole masked binary frames (BINARY, or CONTINUATION of a
        binary message) at the start of ``view``, unmask each payload in place, rewrite its
        header in place as the unmasked one ending where the payload begins (the mask's 4 bytes
        are dropped from the front), and append that slice of ``view`` -- the frame as the
        partner must get it -- to ``out``.  Returns the bytes consumed; stops at the first
        frame that is not whole in ``view``, has a 64-bit length, or is anything else (text,
        control, invalid), which :meth:`feed` then takes with every check.  Same frames and
        checks as :meth:`feed` (RSV bits, masking, continuation sequencing)."""
        pos = 0
        end = len(view)
        message = self._message
        while end - pos >= 6:
            b0 = view[pos]
            if b0 & 0x7F != (BINARY if message is None else CONTINUATION) or message not in (None, BINARY):
                break  # RSV bits, another opcode, or a continuation outside a binary message
            b1 = view[pos + 1]
            length = b1 & 0x7F
            if not b1 & 0x80 or length == 127:
                break
            if length == 126:
                if end - pos < 8:
                    break
                hlen = 8
                length = (view[pos + 2] << 8) | view[pos + 3]
            else:
                hlen = 6
            stop = pos + hlen + length
            if stop > end:
                break
            if length > accel.PURE_MAX:
                xor_in_place(view[pos + hlen:stop], view[pos + hlen - 4:pos + hlen])
            elif length:  # small: one big-int XOR, without xor_mask's cast and mask rotation (phase 0)
                payload = view[pos + hlen:stop]
                mask = bytes(view[pos + hlen - 4:pos + hlen]) * ((length + 3) >> 2)
                payload[:] = (int.from_bytes(payload, "little")
                              ^ int.from_bytes(mask[:length], "little")).to_bytes(length, "little")
            view[pos + 4] = b0
            if hlen == 6:
                view[pos + 5] = length
            else:
                view[pos + 5] = 126
                view[pos + 6] = length >> 8
                view[pos + 7] = length & 0xFF
            out.append(view[pos + 4:stop])
            message = None if b0 & 0x80 else BINARY
            pos = stop
        self._message = message
        return pos

    # -- one frame ----------------------------------------------------------------------------

    def _begin(self, header, chunk):
        opcode = header.opcode
        if not header.masked:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "a client's frames must be masked (RFC 6455 5.1)")
        self._fin = header.fin
        self._mask = header.mask
        self._left = header.length
        self._done = 0
        self._opcode = opcode
        if opcode >= CLOSE:
            self._sink = None
            self._control = bytearray()
            self._data(chunk)
            return
        if opcode == CONTINUATION:
            if self._message is None:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "continuation frame without a message to continue")
        else:
            if self._message is not None:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "a new message began before the previous one ended "
                                 "(send its remaining frames as continuations, the last with FIN)")
            self._message = opcode
            if opcode == TEXT:
                if self._utf8 is None:
                    self._utf8 = Utf8Validator()
                else:
                    self._utf8.reset()
                self._utf8_whole = True
        sink = self._sink = self._sink_for_frame()
        self._views = getattr(sink, "takes_views", False)
        if sink is None or self._message == TEXT:
            self._held = bytearray() if sink is not None else None
            self._piece = opcode
            self._data(chunk)
            return
        # binary: on at once, the header with the first bytes of payload in one write
        n = len(chunk)
        if n:
            xor_in_place(chunk, self._mask, 0)
        if isinstance(sink, FrameReader):
            sink._out_start(encode_header(opcode, self._fin, header.length), header.length, chunk)
        else:
            if opcode != CONTINUATION:
                sink.begin_message(True)
            sink.frame_begin(header.length)
            if n:
                sink.frame_data(chunk if self._views else bytes(chunk))
        self._left -= n
        self._done = n
        if not self._left:
            self._end()

    def _data(self, chunk):
        n = len(chunk)
        if n:
            sink = self._sink
            if self._opcode >= CLOSE:
                xor_in_place(chunk, self._mask, self._done)
                self._control += chunk
            elif sink is not None:
                xor_in_place(chunk, self._mask, self._done)
                if self._message == TEXT:
                    self._text(chunk, n)
                elif isinstance(sink, FrameReader):
                    sink._out_more(chunk)
                else:
                    sink.frame_data(chunk if self._views else bytes(chunk))
            self._left -= n
            self._done += n
        if not self._left:
            self._end()

    def _text(self, chunk, n):
        data = bytes(chunk)
        valid, whole, _, _ = self._utf8.validate(data)
        if not valid:
            raise FrameError(CLOSE_INVALID_PAYLOAD, "invalid UTF-8 in a text message")
        self._utf8_whole = whole
        self._held += data
        hold = self._text_hold
        more = self._left > n  # the frame goes on after this chunk
        # pieces of at most ``hold`` bytes, whatever the read size (a read may be larger)
        while len(self._held) >= hold and (more or len(self._held) > hold):
            self._flush_text(False, hold)

    def _flush_text(self, fin, size=None):
        """Forward the held, validated text (its first ``size`` bytes if given) as one frame (a
        piece of the sender's frame unless it is the whole of it)."""
        held = self._held
        if size is None or size >= len(held):
            self._held = bytearray()
        else:
            held = held[:size]
            del self._held[:size]
        sink = self._sink
        opcode, self._piece = self._piece, CONTINUATION
        if sink is None:
            return
        if isinstance(sink, FrameReader):
            if sink._state != OPEN:
                return  # it is closing: a new frame may not start
            sink._out_start(encode_header(opcode, fin, len(held)), len(held), held)
            return
        if opcode == TEXT:
            sink.begin_message(False)
        sink.frame_begin(len(held))
        if held:
            sink.frame_data(bytes(held))

    def _end(self):
        """The current frame's payload is complete."""
        opcode, self._opcode = self._opcode, None
        if opcode >= CLOSE:
            payload, self._control = bytes(self._control), None
            if opcode == PING:
                self._on_ping(payload)
            elif opcode == CLOSE:
                self._reading = False
                self._on_close_frame(payload)
            return
        sink, self._sink = self._sink, None
        fin = self._fin
        if sink is not None:
            if self._message == TEXT:
                if fin and not self._utf8_whole:
                    raise FrameError(CLOSE_INVALID_PAYLOAD, "a text message ends inside a UTF-8 sequence")
                self._sink = sink
                self._flush_text(fin)
                self._sink = None
            if fin and not isinstance(sink, FrameReader):
                sink.end_message()
        self._held = None
        if fin:
            self._message = None
