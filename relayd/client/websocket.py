"""The client's WebSocket to the relay, on either side of a hybrid connection: the listener's
control channel and rendezvous legs, and the sender's connection (:mod:`relayd.client.sender`).

:func:`relayd.client.handshake.open_websocket` opens one and fires with the open protocol, by
default a :class:`RelayedConnection`; the protocol tells its factory
(:class:`~relayd.client.handshake.HandshakeFactory`) whether the handshake succeeded.

A :class:`RelayedConnection` is one end of a relayed WebSocket, on either side:

* messages: ``send(str)`` sends a text message, ``send(bytes)`` a binary one, each as one
  frame (``send_in_place(buffer)`` masks a buffer the caller gives up where it is,
  ``send_fragment`` sends a message in pieces); incoming
  messages go to ``on_message(data)`` (``str`` for text, ``bytes`` for binary) or, when
  no callback is set, queue up for ``receive()`` (a Deferred per message);
* streaming: with ``on_data`` set, payload is handed over in chunks as it arrives (text
  as UTF-8 bytes), without assembling whole messages, for byte pipes; ``on_view`` is the
  same with a memoryview valid only during the call (for a sink that writes it out at once);
  ``on_message_end(is_binary, size)`` marks the end of each message; ``attach(protocol)``
  runs an ordinary Twisted :class:`~twisted.internet.interfaces.IProtocol` over it
  (``transport.write`` sends binary messages, ``dataReceived`` gets the payload);
* flow control: ``pauseProducing()`` / ``resumeProducing()`` stop and restart reading
  from the socket (TCP backpressure reaches the far end through the relay), and
  ``registerProducer(producer, streaming)`` lets the outgoing socket buffer pause a
  producer such as stdin;
* closing: ``close(code=1000, reason=None)``; ``on_close(code, reason)`` and ``closed``
  (a new Deferred on each access, firing with ``(code, reason)`` of the peer's close frame,
  1005 when it had no code, 1006 when the TCP connection dropped) tell when it ended.

After the opening handshake frames are read and written by
:class:`relayd.client.connection.DataPath` (streaming, masked in place, zero-copy I/O on
plain TCP), not by Autobahn's message machinery.  Everything runs on the reactor passed in;
nothing blocks and no thread is used.
"""


import collections

from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet import defer, error as net_error
from twisted.internet.interfaces import IPushProducer, ITransport, IConsumer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from relayd.client.connection import DataPath
from relayd.wire import wsframe

class ConnectionClosed(Exception):
    """``receive()`` on a connection that has closed."""

    def __init__(self, code, reason):
        super().__init__("connection closed: %s %s" % (code, reason or ""))
        self.code = code
        self.reason = reason


def _normal_code(code):
    return 1005 if code is None else code


class _Callback:
    """A callback attribute of :class:`RelayedConnection`: setting it delivers the messages
    that queued up while no callback was set."""

    def __init__(self, name):
        self.name = name

    def __get__(self, conn, owner=None):
        return self if conn is None else getattr(conn, self.name)

    def __set__(self, conn, callback):
        setattr(conn, self.name, callback)
        conn._drain_queue()


@implementer(IPushProducer)
class RelayedConnection(DataPath, WebSocketClientProtocol):
    """One relayed WebSocket (see the module docstring)."""

    _log = Logger()
    max_queued = 64  # whole messages held for receive() before reading pauses

    def __init__(self):
        super().__init__()
        self._on_message = None
        self._on_data = None
        self._on_view = None
        self.on_close = None
        self.subprotocol = None
        self.response_headers = {}
        self.close_code = None
        self.close_reason = None
        self.was_clean = None
        self.opened = False
        self._queue = collections.deque()
        self._waiters = collections.deque()
        self._close_waiters = []
        self._user_paused = False
        self._queue_paused = False
        self._finished = False

    # -- callbacks as properties: setting one delivers what queued up meanwhile -----------

    on_message = _Callback("_on_message")
    on_view = _Callback("_on_view")
    on_data = _Callback("_on_data")

    def _drain_queue(self):
        while self._queue and (self._on_message is not None or self._on_data is not None
                               or self._on_view is not None):
            self._deliver(self._queue.popleft())
        self._update_queue_pause()

    def _deliver(self, data):
        if self._on_view is None and self._on_data is None:
            self._on_message(data)
            return
        is_binary = not isinstance(data, str)
        data = data if is_binary else data.encode("utf-8")
        if data:
            if self._on_view is not None:
                self._on_view(memoryview(data))
            else:
                self._on_data(data)
        if self.on_message_end is not None:
            self.on_message_end(is_binary, len(data))

    # -- Autobahn hooks ------------------------------------------------------------------

    on_traffic = None  # called with no arguments whenever bytes arrive (keepalive tracking)

    def onConnect(self, response):
        self.subprotocol = response.protocol
        self.response_headers = dict(response.headers)

    def onOpen(self):
        leftover = self.start_data_path()  # frames are read and written by relayd from now on
        self.opened = True
        self.factory.opened(self)
        if leftover:
            self.data_arrived(leftover)

    # -- the frame reader's sink (relayd.client.connection.FrameReader) ---------------------

    # streaming mode: called with (is_binary, size in bytes) as each message ends, e.g. to see
    # an empty binary message (the half-close marker of relayd's byte pipes)
    on_message_end = None
    message_is_binary = True
    _streamed = 0
    _parts = None  # the pieces of a message assembled for on_message / receive()

    def message_begin(self, is_binary):
        self.message_is_binary = is_binary
        self._streamed = 0
        self._parts = None if (self._on_view is not None or self._on_data is not None) else []

    def message_data(self, view):
        self._streamed += len(view)
        if self._parts is not None:
            self._parts.append(bytes(view))
        elif self._on_view is not None:
            self._on_view(view)
        elif self._on_data is not None:
            self._on_data(bytes(view))

    def message_end(self):
        parts, self._parts = self._parts, None
        if parts is not None:
            self.onMessage(b"".join(parts), self.message_is_binary)
        elif self.on_message_end is not None:
            self.on_message_end(self.message_is_binary, self._streamed)

    def onMessage(self, payload, isBinary):
        data = payload if isBinary else payload.decode("utf-8")
        if self._waiters:
            self._waiters.popleft().callback(data)
        elif self._on_message is not None or self._on_data is not None or self._on_view is not None:
            self._deliver(data)
        else:
            self._queue.append(data)
            self._update_queue_pause()

    def onClose(self, wasClean, code, reason):
        if not self.opened:
            self.factory.failed(self, code, reason)
            return
        if self._finished:
            return
        self._finished = True
        self.was_clean = wasClean
        self.close_code = _normal_code(code)
        self.close_reason = reason
        for waiter in list(self._waiters):
            waiter.errback(ConnectionClosed(self.close_code, reason))
        self._waiters.clear()
        if self.on_close is not None:
            try:
                self.on_close(self.close_code, reason)
            except Exception:
                self._log.failure("on_close callback failed")
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback((self.close_code, reason))

    # -- messages --------------------------------------------------------------------------

    def send(self, data):
        """Send one message: text for ``str``, binary for ``bytes``/``bytearray``/``memoryview``."""
        if self.state != self.STATE_OPEN:
            raise ConnectionClosed(self.close_code, self.close_reason or "the connection is not open")
        if isinstance(data, str):
            self.write_frame(wsframe.TEXT, data.encode("utf-8"))
        else:
            self.write_frame(wsframe.BINARY, data)

    def send_together(self, *messages):
        """Send small whole messages (``str``: text, else binary) in one write: one system
        call and one wake-up of the relay for, e.g., an HTTP response and its body."""
        if self.state != self.STATE_OPEN:
            raise ConnectionClosed(self.close_code, self.close_reason or "the connection is not open")
        self.write_frames([(wsframe.TEXT, m.encode("utf-8")) if isinstance(m, str) else (wsframe.BINARY, m)
                           for m in messages])

    def send_in_place(self, buffer):
        """Send the writable ``buffer`` (e.g. a read buffer about to be reused) as one binary
        message, masking it where it is: its contents are garbage afterwards."""
        if self.state != self.STATE_OPEN:
            raise ConnectionClosed(self.close_code, self.close_reason or "the connection is not open")
        self.write_frame(wsframe.BINARY, buffer, in_place=True)

    def send_fragment(self, data, first, last):
        """One frame of a binary message sent in pieces (``first``: it starts the message,
        ``last``: it ends it), e.g. a body of unknown length."""
        if self.state != self.STATE_OPEN:
            raise ConnectionClosed(self.close_code, self.close_reason or "the connection is not open")
        self.write_frame(wsframe.BINARY if first else wsframe.CONTINUATION, data, fin=last)

    def receive(self):
        """A Deferred firing with the next message (``str`` or ``bytes``), or failing with
        :class:`ConnectionClosed` once the connection has closed."""
        if self._queue:
            d = defer.succeed(self._queue.popleft())
            self._update_queue_pause()
            return d
        if self._finished:
            return defer.fail(ConnectionClosed(self.close_code, self.close_reason))
        d = defer.Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        self._waiters.append(d)
        return d

    def close(self, code=1000, reason=None):
        """Start the closing handshake (or drop a connection still opening).  Returns a
        Deferred firing, once the connection has ended, with the ``(code, reason)`` of the
        peer's close frame (its reply to ours, here)."""
        d = self.closed
        if self.state == self.STATE_OPEN:
            if code is None:
                self.sendCloseFrame(isReply=False)
            else:
                if not (code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011)
                        or 3000 <= code <= 4999):
                    raise ValueError("close code %r is not one an endpoint may send "
                                     "(1000-1003, 1007-1011, 3000-4999)" % (code,))
                reason_utf8 = (reason or "").encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8") or None
                self.sendCloseFrame(code=code, reasonUtf8=reason_utf8, isReply=False)
        elif self.state == self.STATE_CONNECTING:
            self.dropConnection(abort=True)
        return d

    def abort(self, reason=None):
        """Drop the TCP connection without a closing handshake (``on_close`` gets 1006 and
        ``reason``)."""
        if self.state != self.STATE_CLOSED:
            if reason:
                self.wasNotCleanReason = reason
            self.dropConnection(abort=True)

    @property
    def closed(self):
        """A new Deferred firing with ``(code, reason)`` when the connection has ended."""
        if self._finished:
            return defer.succeed((self.close_code, self.close_reason))
        d = defer.Deferred()
        self._close_waiters.append(d)
        return d

    @property
    def is_connected(self):
        return self.state == self.STATE_OPEN

    # -- flow control ----------------------------------------------------------------------

    def pauseProducing(self):
        """Stop reading from the socket (the far end's writes back up through the relay)."""
        self._user_paused = True
        self._apply_pause()

    def resumeProducing(self):
        self._user_paused = False
        self._apply_pause()

    def stopProducing(self):
        self.abort()

    def _update_queue_pause(self):
        want = len(self._queue) >= self.max_queued
        if want != self._queue_paused:
            self._queue_paused = want
            self._apply_pause()

    def _apply_pause(self):
        transport = self.transport
        if transport is None or self.state == self.STATE_CLOSED:
            return
        if self._user_paused or self._queue_paused:
            transport.pauseProducing()
        else:
            transport.resumeProducing()

    def registerProducer(self, producer, streaming):
        """Let the outgoing socket buffer pause ``producer`` (e.g. stdin) when it fills up."""
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self):
        if self.transport is not None and getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()

    # -- an IProtocol over the message stream ------------------------------------------------

    def attach(self, protocol):
        """Run a Twisted ``protocol`` over this connection as a byte stream and return it:
        its ``transport.write`` sends binary messages, ``dataReceived`` gets payload chunks
        as they arrive, and ``connectionLost`` follows the WebSocket close."""
        transport = MessageTransport(self)
        previous_close = self.on_close

        def lost(code, reason):
            if previous_close is not None:
                previous_close(code, reason)
            if code in (1000, 1001, 1005):
                protocol.connectionLost(Failure(net_error.ConnectionDone("closed %s %s" % (code, reason or ""))))
            else:
                protocol.connectionLost(Failure(net_error.ConnectionLost("closed %s %s" % (code, reason or ""))))

        self.on_close = lost
        protocol.makeConnection(transport)
        self.on_data = protocol.dataReceived
        if self._finished:
            self.on_close = previous_close
            lost(self.close_code, self.close_reason)
        return protocol


@implementer(ITransport, IConsumer, IPushProducer)
class MessageTransport:
    """The transport :meth:`RelayedConnection.attach` gives its protocol."""

    def __init__(self, connection):
        self.connection = connection
        self.disconnecting = False

    def write(self, data):
        if data and self.connection.is_connected:
            self.connection.send(data)

    def writeSequence(self, seq):
        self.write(b"".join(seq))

    def loseConnection(self):
        self.disconnecting = True
        self.connection.close(1000)

    def abortConnection(self):
        self.disconnecting = True
        self.connection.abort()

    def getPeer(self):
        return self.connection.transport.getPeer()

    def getHost(self):
        return self.connection.transport.getHost()

    def registerProducer(self, producer, streaming):
        self.connection.registerProducer(producer, streaming)

    def unregisterProducer(self):
        self.connection.unregisterProducer()

    def pauseProducing(self):
        self.connection.pauseProducing()

    def resumeProducing(self):
        self.connection.resumeProducing()

    def stopProducing(self):
        self.connection.abort()
