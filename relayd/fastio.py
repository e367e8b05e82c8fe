"""Zero-copy I/O on a plain TCP transport of Twisted's POSIX reactors.

What it changes, and only on a transport it is attached to (:func:`attach`):

- **Reads** go into ONE reusable buffer with ``socket.recv_into`` (up to ``buffer_size``
  bytes per read, 1 MiB by default, where Twisted reads 64 KiB into a fresh ``bytes``
  each time; on the 2-core bench machine 1 MiB reads cost ~0.65 s of relay CPU per GB
  streamed where 256 KiB reads cost ~0.8: a quarter of the reactor turns, system calls and
  wake-ups per byte), and ``on_read(view)`` gets a ``memoryview`` of the bytes read.

  .. warning::

     **The view is valid ONLY during the call.**  It is released when ``on_read``
     returns (using it afterwards raises ``ValueError``), and the memory behind it is
     overwritten by the next read on any connection of the same reactor thread: the
     buffer is shared (see below).  Anything that must outlive the call (a partial frame
     header, bytes for a later write) has to be copied (``bytes(view[a:b])``) or written
     with :meth:`DirectIO.write`, which copies what the socket does not take at once.
     The same holds for views passed *to* :meth:`DirectIO.write`: it never keeps them.

- **Writes** through :meth:`DirectIO.write` go straight to the socket (``send`` /
  ``sendmsg``) while nothing is queued, in the caller's turn of the reactor (Twisted's own
  ``write`` only queues and sends on the next poll).  What the socket refuses is copied, in
  order, into fastio's queue: 64 KiB ``bytearray`` chunks taken from a pool per reactor
  thread and given back when sent.  No fresh buffer per write: Twisted's queue makes a new
  ``bytes`` per write and joins them into another one per ``doWrite``; with large reads
  glibc returned those to the kernel and faulted them in again, read after read (issue 10
  item 5: tens of thousands of page faults per GiB relayed; with the pool, a few hundred,
  whatever malloc's thresholds).  The queue keeps Twisted's backpressure: above the
  transport's ``bufferSize`` a registered streaming producer is paused (as
  ``FileDescriptor._maybePauseProducer`` does) and resumed by Twisted once all is sent.

How it hooks in: the reactor calls ``selectable.doRead()`` / ``doWrite()``, so ``attach``
sets ``doRead``, ``doWrite`` and ``connectionLost`` on the transport *instance*.  The
``doWrite`` sends fastio's queue first and then calls Twisted's own ``doWrite``, which sends
whatever was written through ``transport.write`` (an ordinary write stays behind fastio's
queue; a :meth:`DirectIO.write` made while the transport's queue holds data goes behind
it, so bytes stay in order whichever way they were written) and, once everything is out,
does what it always does: stop writing, resume a paused producer, complete
``loseConnection`` / ``loseWriteConnection``.  A send error ends the connection with
``ConnectionLost`` as Twisted's ``writeSomeData`` does; ``abortConnection`` drops the
queue.  ``connectionLost`` gives the chunks back and detaches (no reference cycle is left).
Reads: ``pauseProducing`` / ``resumeProducing`` (``stopReading`` / ``startReading``) work
because the reactor simply does not call ``doRead``; EOF and read errors return
``main.CONNECTION_DONE`` / ``main.CONNECTION_LOST`` like Twisted's ``tcp.Connection.doRead``,
so ``connectionLost`` (``ConnectionDone`` / ``ConnectionLost``) and half-close
(``IHalfCloseableProtocol.readConnectionLost``) are unchanged; an exception from ``on_read``
ends the connection as one from ``dataReceived`` does.

Knowing whether the transport's own queue holds something needs three of Twisted's
internals in ``twisted/internet/abstract.py`` ``FileDescriptor``: ``dataBuffer`` (bytes
being sent), ``offset`` (how much of it is sent) and ``_tempDataLen`` (bytes in
``_tempDataBuffer`` not yet joined into ``dataBuffer``); queued = ``len(dataBuffer) -
offset + _tempDataLen``.  ``tests/unit/test_fastio.py::test_pinned_twisted_write_internals``
pins their names and meaning (run on Twisted 24.3 and 26.10), and :func:`attach` returns
None (the caller keeps the ordinary path) on a transport without them, on a TLS transport
(``ISSLTransport``, ``startTLS`` done, or a TLS wrapper, which has no ``socket``) and on
anything but a connected socket transport.  Call :meth:`DirectIO.detach` before
``startTLS``.

The shared read buffer: reads are synchronous (the reactor calls one ``doRead`` at a time
and nothing in ``on_read`` makes another transport read), so one buffer per reactor thread
and size serves every connection: 2,000 attached connections cost one 1 MiB buffer
instead of 2 GiB of private ones (a ``bytearray`` is zero-filled, so a private buffer is
resident from the start).  Should a read ever re-enter while the buffer is in use, that read
gets a private temporary buffer instead (``shared=False`` gives every connection its own).
Measured figures (CPU per GB, RSS per connection) are in docs/protocol.rst, "Zero-copy I/O".
"""

import socket
import threading
from errno import EAGAIN, ENOBUFS, EWOULDBLOCK

from twisted.internet import main
from twisted.internet.interfaces import ISSLTransport

DEFAULT_BUFFER_SIZE = 1024 * 1024  # bytes per recv_into: 16x Twisted's 64 KiB reads
MAX_IOVECS = 1024  # IOV_MAX on Linux: the most buffers one sendmsg takes
_WOULD_BLOCK = (EAGAIN, EWOULDBLOCK)  # nothing to read now (Twisted: return None)
_FULL = (EAGAIN, EWOULDBLOCK, ENOBUFS)  # nothing more can be sent now (Twisted: 0 bytes sent)
CHUNK_SIZE = 64 * 1024  # bytes per chunk of the write queue (below glibc's mmap threshold)
POOL_CHUNKS = 64  # chunks kept for reuse per reactor thread (4 MiB); more are freed

# FileDescriptor's write-queue internals this module reads (pinned by the unit tests).
_QUEUE_INTERNALS = (("dataBuffer", bytes), ("offset", int), ("_tempDataLen", int),
                    ("_tempDataBuffer", list), ("_writeDisconnected", bool),
                    ("_writeDisconnecting", bool), ("streamingProducer", bool),
                    ("producerPaused", bool), ("bufferSize", int))

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
            or "doRead" in vars(transport) or "doWrite" in vars(transport)
            or not _has_queue_internals(transport)):
        return None
    return DirectIO(transport, sock, on_read, buffer_size, shared)


def send_now(transport, data):
    """A one-off write (a handshake response, a control message): straight to the socket, in the
    caller's turn, when ``transport`` is a plain TCP transport of Twisted's POSIX reactors (as
    :func:`attach` requires, but not attached) with nothing queued; what the socket refuses, and
    everything on any other transport, goes through ``transport.write``, in order.  Saves the
    reactor turn and the two ``epoll_ctl`` calls (EPOLLOUT on, then off) of Twisted's deferred
    write."""
    sock = getattr(transport, "socket", None)
    if (type(sock) is socket.socket and getattr(transport, "connected", False)
            and "doWrite" not in vars(transport) and not ISSLTransport.providedBy(transport)
            and not getattr(transport, "TLS", False) and _has_queue_internals(transport)
            and not transport._writeDisconnected and not transport._tempDataLen
            and len(transport.dataBuffer) == transport.offset):
        try:
            sent = sock.send(data)
        except OSError:
            sent = 0  # full; an error: Twisted's doWrite meets it again and ends the connection
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class DirectIO:
    """Direct reads and writes on one attached transport (made by :func:`attach`)."""

    __slots__ = ("transport", "_sock", "_on_read", "_size", "_shared", "_own", "_out", "__weakref__")

    def __init__(self, transport, sock, on_read, buffer_size, shared):
        self.transport = transport
        self._sock = sock
        self._on_read = on_read
        self._size = buffer_size
        self._shared = _shared_buffer(buffer_size) if shared else None
        self._own = None if shared else memoryview(bytearray(buffer_size))
        self._out = None  # an _OutQueue while the socket has refused something
        transport.doRead = self._do_read
        transport.doWrite = self._do_write
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
        """Bytes written and not yet handed to the kernel (fastio's queue + Twisted's)."""
        t = self.transport
        mine = self._out.size if self._out is not None else 0
        return mine + len(t.dataBuffer) - t.offset + t._tempDataLen

    def write(self, *buffers):
        """Send ``buffers`` (bytes-like, e.g. the read view) in order: straight to the socket
        when nothing is queued, the rest copied into the pooled queue (see the module doc).
        Dropped, as Twisted drops them, once the transport is disconnected, aborted or its
        write half is shut."""
        t = self.transport
        if not t.connected or t._writeDisconnected or not buffers:
            return
        writer = vars(t).get("doWrite")
        if not self._is_mine(writer):
            if writer is None:  # detached: the ordinary path
                _to_transport(t, buffers)
            return  # else aborted: Twisted replaced doWrite to drop everything
        if t._tempDataLen or len(t.dataBuffer) - t.offset:
            _to_transport(t, buffers)  # someone wrote through the transport: stay behind it
            return
        out = self._out
        sent = 0
        if out is None:
            try:
                if len(buffers) == 1:
                    sent = self._sock.send(buffers[0])
                    if sent == len(buffers[0]):
                        return
                else:
                    sent = self._sock.sendmsg(buffers[:MAX_IOVECS])
                    if sent == sum(map(len, buffers)):
                        return
            except OSError:
                pass  # full: queue it all; an error: doWrite meets it again and ends the connection
            out = self._out = _OutQueue()
        out.append(buffers, sent)
        if not out.size:  # only empty buffers were left
            self._out = None
            return
        t.startWriting()
        if out.size > t.bufferSize and t.producer is not None and t.streamingProducer:
            t.producerPaused = True  # as FileDescriptor._maybePauseProducer; resumed by its doWrite
            t.producer.pauseProducing()

    def _do_write(self):
        t = self.transport
        out = self._out
        if out is not None:
            try:
                out.send(self._sock)
            except OSError as e:
                if e.errno not in _FULL:
                    return main.CONNECTION_LOST
            if out.size:
                return None
            self._out = None
            out.release()
            if self._on_read is None:  # detached meanwhile: Twisted's doWrite from now on
                vars(t).pop("doWrite", None)
        # Twisted's own: sends what was written through the transport, and once all is sent
        # stops writing, resumes a paused producer, or completes loseConnection /
        # loseWriteConnection.
        return type(t).doWrite(t)

    # -- lifetime ---------------------------------------------------------------------------

    def detach(self):
        """Give the transport back to Twisted's own ``doRead`` (idempotent); what fastio
        still has queued is sent first (its ``doWrite`` stays until then)."""
        self._on_read = None
        d = vars(self.transport)
        for name in ("doRead", "connectionLost") if self._out is not None else (
                "doRead", "connectionLost", "doWrite"):
            if self._is_mine(d.get(name)):
                del d[name]

    def _is_mine(self, method):
        """Whether ``method`` is one of this DirectIO's bound methods.  Compared by
        ``__self__``: keeping the bound method on ``self`` would be a reference cycle that
        only a full GC frees, with the transport behind it."""
        return getattr(method, "__self__", None) is self

    def _connection_lost(self, reason):
        out, self._out = self._out, None
        if out is not None:
            out.release()
        self.detach()  # nothing queued any more: Twisted's doWrite too
        self.transport.connectionLost(reason)


class _OutQueue:
    """What the socket refused, copied in order into pooled :data:`CHUNK_SIZE` bytearrays:
    ``chunks[0][head:]`` ... ``chunks[-1][:tail]``, ``size`` bytes in all."""

    __slots__ = ("chunks", "head", "tail", "size")

    def __init__(self):
        self.chunks = []
        self.head = self.tail = self.size = 0

    def append(self, buffers, skip):
        chunks = self.chunks
        for b in buffers:
            n = len(b)
            if skip >= n:
                skip -= n
                continue
            view = memoryview(b)[skip:] if skip else memoryview(b)
            skip = 0
            at = 0
            while at < len(view):
                if not chunks or self.tail == CHUNK_SIZE:
                    chunks.append(_take_chunk())
                    self.tail = 0
                k = min(CHUNK_SIZE - self.tail, len(view) - at)
                chunks[-1][self.tail:self.tail + k] = view[at:at + k]
                self.tail += k
                self.size += k
                at += k
            view.release()

    def send(self, sock):
        chunks = self.chunks
        last = len(chunks) - 1
        views = [memoryview(c)[self.head if i == 0 else 0:self.tail if i == last else CHUNK_SIZE]
                 for i, c in enumerate(chunks[:MAX_IOVECS])]
        try:
            sent = sock.sendmsg(views)
        finally:
            for v in views:
                v.release()
        self.size -= sent
        while sent:
            avail = (self.tail if len(chunks) == 1 else CHUNK_SIZE) - self.head
            if sent < avail:
                self.head += sent
                break
            sent -= avail
            _give_chunk(chunks.pop(0))
            self.head = 0
        if not chunks:
            self.tail = 0

    def release(self):
        for c in self.chunks:
            _give_chunk(c)
        self.chunks = []
        self.head = self.tail = self.size = 0


def _take_chunk():
    pool = _chunk_pool()
    return pool.pop() if pool else bytearray(CHUNK_SIZE)


def _give_chunk(chunk):
    pool = _chunk_pool()
    if len(pool) < POOL_CHUNKS:
        pool.append(chunk)


def _chunk_pool():
    pool = getattr(_local, "chunks", None)
    if pool is None:
        pool = _local.chunks = []
    return pool


def _to_transport(transport, buffers):
    """Queue ``buffers`` behind what was written through the transport itself, copied into
    ``bytes`` (Twisted keeps a reference; the caller's buffers may be a transient read view)."""
    transport.writeSequence([bytes(b) for b in buffers if len(b)])
