"""Zero-copy I/O on a plain TCP transport of Twisted's POSIX reactors.

What it changes, and only on a transport it is attached to (:func:`attach`):

- **Reads** go into ONE reusable buffer with ``socket.recv_into`` (up to ``buffer_size``
  bytes per read, 256 KiB by default, where Twisted reads 64 KiB into a fresh ``bytes``
  each time), and ``on_read(view)`` gets a ``memoryview`` of the bytes read.

  .. warning::

     **The view is valid ONLY during the call.**  It is released when ``on_read``
     returns (using it afterwards raises ``ValueError``), and the memory behind it is
     overwritten by the next read on any connection of the same reactor thread: the
     buffer is shared (see below).  Anything that must outlive the call (a partial frame
     header, bytes for a later write) has to be copied (``bytes(view[a:b])``) or written
     with :meth:`DirectIO.write`, which copies what the socket does not take at once.

- **Writes** through :meth:`DirectIO.write` go straight to the socket (``send`` /
  ``sendmsg``) while nothing is queued in the transport, in the caller's turn of the reactor
  (Twisted's own ``write`` only queues and sends on the next poll).  What the socket refuses
  is copied into ``bytes`` and handed to the transport's ordinary ``writeSequence``: it
  queues it, registers for writability and pauses a registered streaming producer above its
  ``bufferSize`` exactly as before, so TCP-like backpressure and the per-connection memory
  bound are Twisted's.  While anything is queued every write takes the ordinary path, so the
  bytes stay in order.  A write the kernel rejects with an error is handed to the ordinary
  path too: Twisted meets the same error on its next ``doWrite`` and ends the connection its
  usual way.

How it hooks in: the reactor calls ``selectable.doRead()`` when the socket is readable, so
``attach`` sets ``doRead`` on the transport *instance* (and ``connectionLost``, to detach
when the connection ends, which breaks the reference cycle).  Everything else is Twisted's:
``pauseProducing`` / ``resumeProducing`` (``stopReading`` / ``startReading``) work because
the reactor simply does not call ``doRead``; EOF and read errors return
``main.CONNECTION_DONE`` / ``main.CONNECTION_LOST`` like Twisted's ``tcp.Connection.doRead``,
so ``connectionLost`` (``ConnectionDone`` / ``ConnectionLost``) and half-close
(``IHalfCloseableProtocol.readConnectionLost``) are unchanged; an exception from ``on_read``
ends the connection as one from ``dataReceived`` does.

Knowing whether something is queued needs three of Twisted's internals in
``twisted/internet/abstract.py`` ``FileDescriptor``: ``dataBuffer`` (bytes being sent),
``offset`` (how much of it is sent) and ``_tempDataLen`` (bytes in ``_tempDataBuffer`` not
yet joined into ``dataBuffer``); queued = ``len(dataBuffer) - offset + _tempDataLen``.
``tests/unit/test_fastio.py::test_pinned_twisted_write_internals`` pins their names and
meaning (checked on Twisted 24.3 and 26.10), and :func:`attach` returns None (the caller
keeps the ordinary path) on a transport without them, on a TLS transport
(``ISSLTransport``, ``startTLS`` done, or a TLS wrapper, which has no ``socket``) and on
anything but a connected socket transport.  Call :meth:`DirectIO.detach` before
``startTLS``.

The shared read buffer: reads are synchronous (the reactor calls one ``doRead`` at a time
and nothing in ``on_read`` makes another transport read), so one buffer per reactor thread
and size serves every connection: 2,000 attached connections cost one 256 KiB buffer
instead of 500 MiB of private ones (a ``bytearray`` is zero-filled, so a private buffer is
resident from the start).  Should a read ever re-enter while the buffer is in use, that read
gets a private temporary buffer instead (``shared=False`` gives every connection its own).
Measured figures (CPU per GB, RSS per connection) are in docs/protocol.rst, "Zero-copy I/O".
"""

import socket
import threading
from errno import EAGAIN, EWOULDBLOCK

from twisted.internet import main
from twisted.internet.interfaces import ISSLTransport

DEFAULT_BUFFER_SIZE = 256 * 1024  # bytes per recv_into: 4x Twisted's 64 KiB reads
MAX_IOVECS = 1024  # IOV_MAX on Linux: the most buffers one sendmsg takes
_WOULD_BLOCK = (EAGAIN, EWOULDBLOCK)  # nothing to read now (Twisted: return None)

# FileDescriptor's write-queue internals this module reads (pinned by the unit tests).
_QUEUE_INTERNALS = (("dataBuffer", bytes), ("offset", int), ("_tempDataLen", int),
                    ("_tempDataBuffer", list), ("_writeDisconnected", bool),
                    ("_writeDisconnecting", bool))

_local = threading.local()


class _SharedBuffer:
    """One reusable read buffer, lent to one read at a time."""

    __slots__ = ("view", "busy")

    def __init__(self, size):
        self.view = memoryview(bytearray(size))
        self.busy = False


def _shared_buffer(size):
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    buf = buffers.get(size)
    if buf is None:
        buf = buffers[size] = _SharedBuffer(size)
    return buf


def _has_queue_internals(transport):
    for name, kind in _QUEUE_INTERNALS:
        value = getattr(transport, name, None)
        if not isinstance(value, kind) and not (kind is bool and isinstance(value, int)):
            return False
    return True


def attach(transport, on_read, buffer_size=DEFAULT_BUFFER_SIZE, shared=True):
    """Route ``transport``'s reads to ``on_read(memoryview)`` through a reusable buffer and
    return a :class:`DirectIO` for direct writes; None when the transport is not a connected
    plain TCP transport of Twisted's POSIX reactors (TLS, a wrapper, another reactor, a
    Twisted without the internals above): the caller then keeps the ordinary path.

    The view passed to ``on_read`` is valid ONLY during the call (see the module doc)."""
    if buffer_size < 1:
        raise ValueError("buffer_size must be at least 1 byte, got %r" % (buffer_size,))
    sock = getattr(transport, "socket", None)
    if (not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM
            or ISSLTransport.providedBy(transport) or getattr(transport, "TLS", False)
            or not getattr(transport, "connected", False)
            or "doRead" in vars(transport) or not _has_queue_internals(transport)):
        return None
    return DirectIO(transport, sock, on_read, buffer_size, shared)


class DirectIO:
    """Direct reads and writes on one attached transport (made by :func:`attach`)."""

    __slots__ = ("transport", "_sock", "_on_read", "_size", "_shared", "_own")

    def __init__(self, transport, sock, on_read, buffer_size, shared):
        self.transport = transport
        self._sock = sock
        self._on_read = on_read
        self._size = buffer_size
        self._shared = _shared_buffer(buffer_size) if shared else None
        self._own = None if shared else memoryview(bytearray(buffer_size))
        transport.doRead = self._do_read
        transport.connectionLost = self._connection_lost

    # -- reads ------------------------------------------------------------------------------

    def _do_read(self):
        shared = self._shared
        if shared is None:
            return self._read_into(self._own)
        if shared.busy:  # a re-entered read: never hand out a buffer that is in use
            return self._read_into(memoryview(bytearray(self._size)))
        shared.busy = True
        try:
            return self._read_into(shared.view)
        finally:
            shared.busy = False

    def _read_into(self, buf):
        try:
            n = self._sock.recv_into(buf)
        except OSError as e:
            if e.errno in _WOULD_BLOCK:
                return None
            return main.CONNECTION_LOST
        if not n:
            return main.CONNECTION_DONE
        view = buf[:n]
        try:
            self._on_read(view)
        finally:
            try:
                view.release()
            except BufferError:  # on_read exported it (e.g. to numpy): still only valid until the next read
                pass
        return None

    # -- writes -----------------------------------------------------------------------------

    def queued(self):
        """Bytes accepted by the transport and not yet handed to the kernel."""
        t = self.transport
        return len(t.dataBuffer) - t.offset + t._tempDataLen

    def write(self, *buffers):
        """Send ``buffers`` (bytes-like, e.g. the read view) in order.  Straight to the
        socket when nothing is queued; the rest is copied and queued in the transport (which
        applies its producer backpressure).  Dropped, as Twisted drops them, once the
        transport is disconnected or its write half is shut."""
        t = self.transport
        if not t.connected or t._writeDisconnected:
            return
        if t.disconnecting or t._writeDisconnecting or self.queued():
            _queue(t, buffers, 0)
            return
        buffers = [b for b in buffers if len(b)]
        if not buffers:
            return
        try:
            if len(buffers) == 1:
                sent = self._sock.send(buffers[0])
            else:
                sent = self._sock.sendmsg(buffers[:MAX_IOVECS])
        except OSError:
            # Full (EAGAIN/ENOBUFS): queue all of it.  Any other error: queue it anyway;
            # Twisted's doWrite meets the same error and ends the connection with
            # ConnectionLost, its ordinary way.
            sent = 0
        _queue(t, buffers, sent)

    # -- lifetime ---------------------------------------------------------------------------

    def detach(self):
        """Give the transport back to Twisted's own ``doRead`` (idempotent)."""
        vars(self.transport).pop("doRead", None)
        vars(self.transport).pop("connectionLost", None)

    def _connection_lost(self, reason):
        self.detach()
        self.transport.connectionLost(reason)


def _queue(transport, buffers, skip):
    """Hand ``buffers`` after their first ``skip`` bytes to the transport's ordinary write
    path, copied into ``bytes`` (the caller's buffers may be a transient read view)."""
    rest = []
    for b in buffers:
        n = len(b)
        if skip >= n:
            skip -= n
            continue
        rest.append(bytes(b[skip:]) if skip else bytes(b))
        skip = 0
    if len(rest) == 1:
        transport.write(rest[0])
    elif rest:
        transport.writeSequence(rest)
