"""The client side of a relayed WebSocket's data path once the handshake is done: frames read
as they stream in and frames written masked in place (issue 10 item 3).

Receive: a :class:`FrameReader` parses the relay's frames incrementally
(:func:`relayd.wire.wsframe.parse_header`) and hands each piece of payload to its sink as it
arrives, without assembling messages (the sink may assemble them, for the message API).  A
header split across reads is kept (at most :data:`~relayd.wire.wsframe.MAX_HEADER` bytes);
payload is never copied here.  Control frames (at most 125 bytes) are collected and handed
over whole at their end, so the sink answers pings between frames.  What the client checks,
in the terms of RFC 6455 (a :class:`~relayd.wire.wsframe.FrameError` with the close code to
fail the connection with): every wsframe rule (RSV bits, reserved opcodes, fragmented or long
control frames), no masked frame from the server (1002, RFC 6455 5.1), continuation frames
only inside a message and no new message inside one (1002), UTF-8 of text messages checked
as they stream (1007), a message over ``max_message`` bytes (1009; 0: no limit).  Nothing
of a frame that breaks a rule is handed over.  After a close frame the reader stops.

Send: :func:`masked_frame` masks a payload with a fresh random mask per frame (RFC 6455 5.3:
``os.urandom``, 4 bytes) with the compiled masker (:func:`relayd.accel.xor_in_place`), either
in the caller's buffer (a read buffer about to be reused) or in one reusable scratch buffer
(:data:`SCRATCH_SIZE`) whose contents must be written out before the next frame is built
(:meth:`fastio.DirectIO.write` copies what the socket does not take at once).  No object per
frame beyond the header bytes.
"""

import codecs
import os

from relayd import fastio
from relayd.accel import xor_in_place
from relayd.wire import wsframe

# Bytes per read of a data connection's socket (fastio's recv_into buffer): 4x Twisted's 64 KiB.
READ_SIZE = 256 * 1024
# The reusable buffer a copied payload is masked in before a direct write; larger payloads
# get a buffer of their own.
SCRATCH_SIZE = READ_SIZE

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class FrameReader:
    """Server frames in, payload pieces out.  ``sink`` provides:

    * ``message_begin(is_binary)``, ``message_data(view)`` (a memoryview valid only during the
      call, never empty), ``message_end()``;
    * ``control_frame(opcode, payload)`` for PING, PONG and CLOSE (``payload`` bytes).

    :meth:`feed` raises :class:`~relayd.wire.wsframe.FrameError`; the reader is then stopped.
    """

    __slots__ = ("sink", "max_message", "stopped", "_head", "_opcode", "_fin", "_remaining",
                 "_control", "_message", "_size", "_utf8")

    def __init__(self, sink, max_message=0):
        self.sink = sink
        self.max_message = max_message
        self.stopped = False
        self._head = b""  # the start of a header not yet whole
        self._opcode = None  # opcode of the frame whose payload is being read; None: between frames
        self._fin = False
        self._remaining = 0  # payload bytes of the current frame still to come
        self._control = None  # payload of the control frame being read
        self._message = None  # TEXT or BINARY while a data message is under way
        self._size = 0  # payload bytes of that message so far
        self._utf8 = None  # incremental UTF-8 check of a text message

    def stop(self):
        """Ignore everything from now on (the connection failed or is closing)."""
        self.stopped = True

    def feed(self, data):
        """Parse ``data`` (bytes-like), handing what it completes to the sink."""
        if self.stopped:
            return
        view = memoryview(data)
        n = len(view)
        pos = 0
        try:
            while not self.stopped:
                if self._opcode is None:
                    if pos >= n:
                        return
                    pos = self._header(view, pos, n)
                    if pos < 0:
                        return  # the header is not whole yet
                    if self._remaining:
                        continue
                elif pos < n:
                    take = min(self._remaining, n - pos)
                    self._remaining -= take
                    self._payload(view[pos:pos + take])
                    pos += take
                    if self._remaining:
                        return
                else:
                    return
                self._frame_end()
        except wsframe.FrameError:
            self.stopped = True
            raise

    def _header(self, view, pos, n):
        """Parse the header at ``view[pos:]``; the position after it, or -1 once the bytes
        are kept for the next read."""
        head = self._head
        if head:
            buf = head + bytes(view[pos:pos + wsframe.MAX_HEADER - len(head)])
            parsed = wsframe.parse_header(buf)
            if parsed is None:
                self._head = buf
                return -1
            header, length = parsed
            pos += length - len(head)
            self._head = b""
        else:
            parsed = wsframe.parse_header(view, pos)
            if parsed is None:
                self._head = bytes(view[pos:n])
                return -1
            header, length = parsed
            pos += length
        self._begin(header)
        return pos

    def _begin(self, header):
        if header.masked:
            raise wsframe.FrameError(wsframe.CLOSE_PROTOCOL_ERROR,
                                     "the relay sent a masked frame; a server must not mask (RFC 6455 5.1)")
        opcode = header.opcode
        if wsframe.is_control(opcode):
            self._control = bytearray()
        elif opcode == wsframe.CONTINUATION:
            if self._message is None:
                raise wsframe.FrameError(wsframe.CLOSE_PROTOCOL_ERROR, "a continuation frame outside a message")
        elif self._message is not None:
            raise wsframe.FrameError(wsframe.CLOSE_PROTOCOL_ERROR,
                                     "a new message began before the previous one ended")
        if not wsframe.is_control(opcode):
            if self.max_message and self._size + header.length > self.max_message:
                raise wsframe.FrameError(wsframe.CLOSE_MESSAGE_TOO_BIG,
                                         "a message over %d bytes" % self.max_message)
            if opcode != wsframe.CONTINUATION:
                self._message = opcode
                self._size = 0
                self._utf8 = _utf8_decoder() if opcode == wsframe.TEXT else None
                self.sink.message_begin(opcode == wsframe.BINARY)
        self._opcode = opcode
        self._fin = header.fin
        self._remaining = header.length

    def _payload(self, piece):
        if self._control is not None:
            self._control += piece
            return
        if self._utf8 is not None:
            self._check_utf8(piece, False)
        self._size += len(piece)
        self.sink.message_data(piece)

    def _check_utf8(self, piece, final):
        try:
            self._utf8.decode(piece, final)
        except UnicodeDecodeError:
            raise wsframe.FrameError(wsframe.CLOSE_INVALID_PAYLOAD, "a text message that is not UTF-8") from None

    def _frame_end(self):
        opcode, self._opcode = self._opcode, None
        if self._control is not None:
            payload, self._control = bytes(self._control), None
            if opcode == wsframe.CLOSE:
                self.stopped = True  # nothing may follow a close frame
            self.sink.control_frame(opcode, payload)
            return
        if self._fin:
            if self._utf8 is not None:
                self._check_utf8(b"", True)
                self._utf8 = None
            self._message = None
            self.sink.message_end()


_scratch = memoryview(bytearray(SCRATCH_SIZE))


def masked_frame(opcode, data, fin=True, in_place=False):
    """``(header, payload)`` of a client frame carrying ``data`` masked with a fresh mask.

    ``in_place``: ``data`` is a writable buffer the caller gives up (a read buffer about to be
    reused) and is masked where it is.  Else the payload is a masked copy, in the reusable
    scratch buffer when it fits: write it out before building the next frame."""
    n = len(data)
    mask = os.urandom(4)
    header = wsframe.encode_header(opcode, fin, n, mask)
    if in_place:
        payload = data
    elif n <= SCRATCH_SIZE:
        payload = _scratch[:n]
        payload[:] = data
    else:
        payload = bytearray(data)
    if n:
        xor_in_place(payload, mask)
    return header, payload


class DataPath:
    """The frame-level data path of :class:`relayd.client.websocket.RelayedConnection` (mixed
    in ahead of Autobahn's protocol): Autobahn does the opening handshake and the closing
    handshake (its ``onCloseFrame``, ``sendCloseFrame``); in between, frames are read by a
    :class:`FrameReader` and written by :meth:`write_frame`.

    On a plain TCP connection reads go through :func:`relayd.fastio.attach` (``recv_into``
    :data:`READ_SIZE` bytes into a reusable buffer) and frames are written straight to the
    socket while nothing is queued; on TLS (fastio declines) Twisted's ordinary reads and
    writes carry the same frames.  The class using it provides ``message_begin``,
    ``message_data``, ``message_end`` (see :class:`FrameReader`) and ``on_traffic``."""

    _reader = None  # the FrameReader, once open
    _direct = None  # the fastio.DirectIO of the transport, when it has one
    _log = None

    def start_data_path(self):
        """Take receiving over from Autobahn (from ``onOpen``); returns the bytes that came
        with the handshake, to be fed with :meth:`data_arrived` once the caller is ready."""
        leftover, self.data = self.data, b""
        self._reader = FrameReader(self, self.maxMessagePayloadSize or 0)
        self._direct = fastio.attach(self.transport, self.data_arrived, READ_SIZE)
        return leftover

    def dataReceived(self, data):
        if self._reader is None:  # the opening handshake (or fastio declined the transport)
            if self.on_traffic is not None:
                self.on_traffic()
            super().dataReceived(data)
        else:
            self.data_arrived(data)

    def data_arrived(self, data):
        """Bytes from the relay after the handshake (bytes, or fastio's transient view)."""
        if self.on_traffic is not None:
            self.on_traffic()
        if self.state == self.STATE_CLOSED:
            return
        try:
            self._reader.feed(data)
        except wsframe.FrameError as e:
            self.fail(e.code, e.reason)

    def fail(self, code, reason):
        """Fail the connection: stop reading frames and start the closing handshake with
        ``code`` (RFC 6455 7.1.7); the relay drops the TCP connection, or Autobahn's close
        handshake timeout does."""
        if self._reader is not None:
            self._reader.stop()
        if self._log is not None:
            self._log.info("failing the connection to the relay ({code}): {reason}", code=code, reason=reason)
        if self.state == self.STATE_OPEN:
            raw = reason.encode("utf-8")[:wsframe.MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
            self.sendCloseFrame(code=code, reasonUtf8=raw, isReply=False)

    def control_frame(self, opcode, payload):
        if opcode == wsframe.PING:
            if self.state == self.STATE_OPEN:
                self.write_frame(wsframe.PONG, payload)
        elif opcode == wsframe.CLOSE:
            try:
                code, _reason = wsframe.parse_close(payload)
            except wsframe.FrameError as e:
                self.fail(e.code, e.reason)
                return
            self.onCloseFrame(code, payload[2:] or None)  # Autobahn's closing handshake

    def write_frames(self, frames):
        """Write whole small frames ``((opcode, data), ...)`` together, masked in one copy,
        through the transport's own queue: everything written in one turn of the reactor goes
        out in one system call at its end, e.g. the answers to many HTTP requests on a control
        channel, each a response and its body (one wake-up of the relay, not two per answer)."""
        out = bytearray()
        masks = os.urandom(4 * len(frames))  # a fresh mask per frame, in one system call
        for i, (opcode, data) in enumerate(frames):
            n = len(data)
            mask = masks[4 * i:4 * i + 4]
            out += wsframe.encode_header(opcode, True, n, mask)
            at = len(out)
            out += data
            if n:
                xor_in_place(memoryview(out)[at:], mask)
        self.transport.write(bytes(out))

    def write_frame(self, opcode, data, fin=True, in_place=False):
        """Write one frame of ``data`` masked with a fresh mask (see :func:`masked_frame`)."""
        header, payload = masked_frame(opcode, data, fin, in_place)
        if self._direct is not None:
            self._direct.write(header, payload)
        else:
            self.transport.writeSequence([header, bytes(payload)])
