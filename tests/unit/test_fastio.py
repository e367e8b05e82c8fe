"""relayd.fastio on real loopback sockets in the test's reactor: reads into the shared reusable
buffer (intact, in order, views released after the call), writes straight to the socket when
nothing is queued and through Twisted's queue (with its producer backpressure) otherwise,
EOF / half-close / reset ending the connection as Twisted's own doRead does, TLS left on the
ordinary path, and the Twisted write-queue internals fastio relies on, pinned."""

import random
import socket
import struct

import pytest
import pytest_twisted
from twisted.internet import abstract, endpoints, protocol, threads
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from zope.interface import implementer

from relayd import fastio
from tests.support.net import read_until_closed
from tests.support.waits import wait_for

pytestmark = pytest.mark.timeout(60)


class Leg(protocol.Protocol):
    """The accepted side: attaches fastio when connected (``factory.attach``: its options)."""

    io = None
    lost = None

    def connectionMade(self):
        self.received = []
        self.plain = []
        self.io = fastio.attach(self.transport, self.on_read, **self.factory.attach)
        self.factory.made.append(self)

    def on_read(self, view):
        self.received.append(bytes(view))

    def dataReceived(self, data):
        self.plain.append(data)

    def connectionLost(self, reason):
        self.lost = reason

    def data(self):
        return b"".join(self.received)


@implementer(IHalfCloseableProtocol)
class HalfClosingLeg(Leg):
    read_closed = False

    def readConnectionLost(self):
        self.read_closed = True

    def writeConnectionLost(self):
        pass


class Pair:
    """A listening port, a blocking peer socket connected to it and the accepted ``Leg``."""

    def __init__(self, port, peer, leg):
        self.port, self.peer, self.leg = port, peer, leg


@pytest_twisted.async_yield_fixture
async def connect():
    from twisted.internet import reactor

    made = []

    async def make(leg=Leg, peer_rcvbuf=None, endpoint=None, **attach):
        factory = protocol.Factory.forProtocol(leg)
        factory.attach = attach
        factory.made = []
        if endpoint is None:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        else:
            port = await endpoints.serverFromString(reactor, endpoint).listen(factory)
        peer = socket.socket()
        if peer_rcvbuf:
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, peer_rcvbuf)
        peer.settimeout(10)
        peer.connect(("127.0.0.1", port.getHost().port))
        await wait_for(lambda: factory.made)
        pair = Pair(port, peer, factory.made[0])
        made.append(pair)
        return pair

    yield make
    for pair in made:
        pair.peer.close()
        if pair.leg.lost is None:
            pair.leg.transport.abortConnection()
        await pair.port.stopListening()
    await wait_for(lambda: all(p.leg.lost is not None for p in made))


def recv_exactly(sock, n):
    parts, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


@pytest.mark.parametrize("buffer_size, total", [(7, 50_000), (fastio.DEFAULT_BUFFER_SIZE, 16 << 20)])
@pytest_twisted.ensureDeferred
async def test_reads_arrive_intact_and_in_order(connect, buffer_size, total):
    pair = await connect(buffer_size=buffer_size)
    assert pair.leg.io is not None
    data = random.Random(buffer_size).randbytes(total)

    def send():
        rng = random.Random(1)
        at = 0
        while at < total:
            n = rng.randrange(1, 300_000)
            pair.peer.sendall(data[at:at + n])
            at += n
        pair.peer.shutdown(socket.SHUT_WR)

    await threads.deferToThread(send)
    await wait_for(lambda: pair.leg.lost is not None, timeout=30)
    assert pair.leg.data() == data
    assert pair.leg.plain == []  # nothing took Twisted's own read path
    assert max(map(len, pair.leg.received)) <= buffer_size
    assert len(pair.leg.received) >= total // buffer_size
    assert pair.leg.lost.check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_view_is_valid_only_during_on_read(connect):
    """The contract: the view is released when on_read returns, and the memory behind it
    (the shared buffer) holds the next read's bytes, whichever connection it was for."""
    kept = []
    pair = await connect()
    other = await connect()
    pair.leg.io.detach()
    pair.leg.io = fastio.attach(pair.leg.transport, lambda view: kept.append((view, view[0:8])))
    pair.peer.sendall(b"AAAAAAAA")
    await wait_for(lambda: kept)
    view, derived = kept[0]
    with pytest.raises(ValueError):
        bytes(view)  # released
    other.peer.sendall(b"BBBBBBBB")
    await wait_for(lambda: other.leg.received)
    assert bytes(derived) == b"BBBBBBBB"  # a slice kept past the call sees the next read


@pytest_twisted.ensureDeferred
async def test_write_goes_to_the_socket_at_once(connect):
    pair = await connect()
    scratch = bytearray(b"world")
    pair.leg.io.write(b"hello ", memoryview(scratch), b"", b"!")
    scratch[:] = b"XXXXX"  # the caller's buffer is reused at once: nothing may still point at it
    # No reactor turn in between: the bytes are already in the peer's receive queue.
    pair.peer.setblocking(False)
    assert pair.peer.recv(100) == b"hello world!"
    assert pair.leg.io.queued() == 0
    # Twisted's own write only queues them until the next poll.
    pair.leg.transport.write(b"later")
    with pytest.raises(BlockingIOError):
        pair.peer.recv(100)
    pair.peer.settimeout(10)
    assert await threads.deferToThread(recv_exactly, pair.peer, 5) == b"later"


@implementer(IPushProducer)
class Producer:
    def __init__(self):
        self.paused = False
        self.pauses = self.resumes = 0

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1

    def resumeProducing(self):
        self.paused = False
        self.resumes += 1

    def stopProducing(self):
        pass


@pytest_twisted.ensureDeferred
async def test_backpressure_and_order_across_direct_and_queued_writes(connect):
    """A peer that does not read: what the socket refuses is queued, the registered
    producer is paused above the transport's bufferSize (memory bounded), resumed when
    the peer drains it; bytes stay in order across direct, queued and direct again."""
    pair = await connect(peer_rcvbuf=4096)
    t, io = pair.leg.transport, pair.leg.io
    t.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    producer = Producer()
    t.registerProducer(producer, True)
    chunk = bytearray(32 * 1024)
    sent = []
    n = 0
    while not producer.paused:
        assert n < 1000, "the producer was never paused: the queue is unbounded"
        struct.pack_into(">I", chunk, 0, n)
        chunk[4:] = bytes([n % 251]) * (len(chunk) - 4)
        io.write(memoryview(chunk))  # reused right after, like a read view
        sent.append(bytes(chunk))
        n += 1
    assert t.bufferSize < io.queued() <= t.bufferSize + len(chunk)
    io.write(b"tail-queued")  # behind the queue, never ahead of it
    sent.append(b"tail-queued")
    total = sum(map(len, sent))
    got = await threads.deferToThread(recv_exactly, pair.peer, total)
    assert got == b"".join(sent)
    await wait_for(lambda: not producer.paused)
    assert producer.resumes == 1 and io.queued() == 0
    io.write(b"direct-again")
    pair.peer.setblocking(False)
    assert pair.peer.recv(100) == b"direct-again"


@pytest_twisted.ensureDeferred
async def test_eof_ends_with_connection_done(connect):
    pair = await connect()
    pair.peer.sendall(b"last words")
    pair.peer.close()
    await wait_for(lambda: pair.leg.lost is not None)
    assert pair.leg.data() == b"last words"
    assert pair.leg.lost.check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_half_close_reaches_read_connection_lost(connect):
    pair = await connect(leg=HalfClosingLeg)
    pair.peer.sendall(b"request")
    pair.peer.shutdown(socket.SHUT_WR)
    await wait_for(lambda: pair.leg.read_closed)
    assert pair.leg.lost is None and pair.leg.data() == b"request"
    pair.leg.io.write(b"response after the peer's EOF")
    pair.leg.transport.loseConnection()
    got = await threads.deferToThread(recv_exactly, pair.peer, 1 << 16)
    assert got == b"response after the peer's EOF"
    await wait_for(lambda: pair.leg.lost is not None)
    assert pair.leg.lost.check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_peer_reset_ends_with_connection_lost(connect):
    pair = await connect()
    pair.peer.sendall(b"x")
    await wait_for(lambda: pair.leg.received)
    pair.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    pair.peer.close()
    await wait_for(lambda: pair.leg.lost is not None)
    assert pair.leg.lost.check(ConnectionLost) and not pair.leg.lost.check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_write_after_disconnect_is_dropped(connect):
    pair = await connect()
    io = pair.leg.io
    pair.leg.transport.loseConnection()
    io.write(b"still flushed while disconnecting")  # Twisted flushes writes made before the close
    await wait_for(lambda: pair.leg.lost is not None)
    io.write(b"dropped")
    assert "doRead" not in vars(pair.leg.transport)  # detached on connectionLost
    assert await threads.deferToThread(recv_exactly, pair.peer, 1 << 16) == b"still flushed while disconnecting"


@pytest_twisted.ensureDeferred
async def test_tls_transport_keeps_the_ordinary_path(connect, tmp_path):
    import ssl

    from tests.support.tls import make_ca_and_server

    certs = make_ca_and_server(tmp_path)
    pair = await connect(endpoint="ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (
        certs["server-key.pem"], certs["server-cert.pem"]))
    assert pair.leg.io is None
    ctx = ssl.create_default_context(cafile=certs["ca.pem"])
    tls = ctx.wrap_socket(pair.peer, server_hostname="localhost", do_handshake_on_connect=False)
    await threads.deferToThread(tls.do_handshake)
    tls.sendall(b"over tls")
    await wait_for(lambda: pair.leg.plain)
    assert b"".join(pair.leg.plain) == b"over tls"


@pytest_twisted.ensureDeferred
async def test_attach_refuses_what_it_cannot_drive(connect):
    pair = await connect(**{})
    t = pair.leg.transport
    assert fastio.attach(t, lambda v: None) is None  # already attached
    pair.leg.io.detach()
    assert "doRead" not in vars(t)
    saved = t._tempDataLen
    del t._tempDataLen  # a Twisted without the internals fastio reads
    try:
        assert fastio.attach(t, lambda v: None) is None
    finally:
        t._tempDataLen = saved
    with pytest.raises(ValueError, match="buffer_size"):
        fastio.attach(t, lambda v: None, buffer_size=0)
    io = fastio.attach(t, lambda v: None)
    assert io is not None
    io.detach()
    # After detaching, Twisted's own doRead delivers to dataReceived again.
    pair.peer.sendall(b"plain again")
    await wait_for(lambda: pair.leg.plain)
    assert pair.leg.plain == [b"plain again"]


@pytest_twisted.ensureDeferred
async def test_pinned_twisted_write_internals(connect):
    """fastio.DirectIO.queued() reads FileDescriptor.dataBuffer, .offset and ._tempDataLen
    (twisted/internet/abstract.py): written bytes wait in _tempDataBuffer (counted by
    _tempDataLen) until doWrite joins them into dataBuffer, of which dataBuffer[:offset] is
    sent.  If a Twisted release changes this, this test fails (and fastio must change)."""
    pair = await connect(peer_rcvbuf=4096)
    t = pair.leg.transport
    pair.leg.io.detach()
    assert abstract.FileDescriptor.dataBuffer == b"" and abstract.FileDescriptor.offset == 0
    assert abstract.FileDescriptor._writeDisconnected is False
    assert abstract.FileDescriptor._writeDisconnecting is False
    assert t._tempDataLen == 0 and t._tempDataBuffer == []
    assert fastio._has_queue_internals(t)
    t.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    t.stopReading()  # keep the reactor out of it: doWrite is called by hand below
    data = random.Random(7).randbytes(4 << 20)
    t.write(data[:1 << 20])
    t.writeSequence([data[1 << 20:2 << 20], data[2 << 20:]])
    assert t._tempDataLen == len(data) and t.dataBuffer == b"" and t.offset == 0
    assert t._isSendBufferFull() == (len(t.dataBuffer) + t._tempDataLen > t.bufferSize)
    io = fastio.DirectIO(t, t.socket, lambda v: None, 64, shared=False)
    assert io.queued() == len(data)
    t.doWrite()
    assert t._tempDataLen == 0 and t._tempDataBuffer == []
    assert 0 < t.offset < len(t.dataBuffer)
    sent = t.offset
    assert io.queued() == len(data) - sent
    assert t.dataBuffer[sent:] == data[sent:]
    # What the peer sees first is exactly dataBuffer[:offset].
    assert await threads.deferToThread(recv_exactly, pair.peer, sent) == data[:sent]
    io.detach()
    got = await threads.deferToThread(recv_exactly, pair.peer, len(data) - sent)
    assert got == data[sent:]
    await wait_for(lambda: t.dataBuffer == b"" and t.offset == 0 and t._tempDataLen == 0)


def fill(pair, chunk_size=32 * 1024, limit=1000):
    """Write numbered chunks through fastio until the socket refuses some (the peer does not
    read, both socket buffers are small); all that was written, as bytes."""
    t, io = pair.leg.transport, pair.leg.io
    t.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    written = []
    n = 0
    while not io.queued():
        assert n < limit, "the socket never refused anything"
        chunk = struct.pack(">I", n) + bytes([n % 251]) * (chunk_size - 4)
        io.write(chunk)
        written.append(chunk)
        n += 1
    return b"".join(written)


@pytest_twisted.ensureDeferred
async def test_lose_connection_sends_what_fastio_queued_first(connect):
    pair = await connect(peer_rcvbuf=4096)
    data = fill(pair)
    pair.leg.transport.loseConnection()
    got = await threads.deferToThread(recv_exactly, pair.peer, len(data) + 1)  # + 1: up to EOF
    assert got == data
    await wait_for(lambda: pair.leg.lost is not None)
    assert pair.leg.lost.check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_half_close_after_what_fastio_queued(connect):
    pair = await connect(leg=HalfClosingLeg, peer_rcvbuf=4096)
    data = fill(pair)
    pair.leg.transport.loseWriteConnection()
    got = await threads.deferToThread(recv_exactly, pair.peer, len(data) + 1)
    assert got == data  # then EOF: the write half is shut
    pair.peer.sendall(b"the read half still works")
    await wait_for(lambda: pair.leg.received)
    assert pair.leg.data() == b"the read half still works" and pair.leg.lost is None


@pytest_twisted.ensureDeferred
async def test_order_kept_with_writes_through_the_transport_and_after_detach(connect):
    pair = await connect(peer_rcvbuf=4096)
    t, io = pair.leg.transport, pair.leg.io
    data = fill(pair)
    t.write(b"<through the transport>")  # behind fastio's queue
    io.write(b"<fastio again>")  # behind the transport's queue
    io.detach()  # fastio's queue still goes first
    t.write(b"<after detach>")
    io.write(b"<detached io>")
    expected = data + b"<through the transport><fastio again><after detach><detached io>"
    got = await threads.deferToThread(recv_exactly, pair.peer, len(expected))
    assert got == expected
    await wait_for(lambda: io.queued() == 0)
    assert "doWrite" not in vars(t) and "doRead" not in vars(t)


@pytest_twisted.ensureDeferred
async def test_abort_drops_what_fastio_queued(connect):
    from twisted.internet.error import ConnectionAborted

    pair = await connect(peer_rcvbuf=4096)
    data = fill(pair)
    pair.leg.transport.abortConnection()
    pair.leg.io.write(b"dropped after the abort")
    await wait_for(lambda: pair.leg.lost is not None)
    assert pair.leg.lost.check(ConnectionAborted)
    got = await threads.deferToThread(read_until_closed, pair.peer)  # ends with a reset
    assert len(got) < len(data) and data.startswith(got)


@pytest_twisted.ensureDeferred
async def test_a_read_inside_on_read_never_reuses_the_lent_buffer(connect):
    """Nothing in relayd reads from inside on_read, but should it happen (here: A's on_read
    makes B read), B's read gets its own buffer and A's view is left intact."""
    a = await connect()
    b = await connect()
    seen = []

    def on_read_a(view):
        before = bytes(view)
        b.leg.transport.doRead()  # a read re-entered while A's view is lent out
        seen.append((before, bytes(view)))

    a.leg.io.detach()
    a.leg.io = fastio.attach(a.leg.transport, on_read_a)
    b.leg.transport.stopReading()  # B is read only from inside A's on_read
    b.peer.sendall(b"B" * 1000)
    a.peer.sendall(b"A" * 1000)
    await wait_for(lambda: seen)
    assert seen[0] == (b"A" * 1000, b"A" * 1000)
    assert b.leg.data() == b"B" * 1000


@pytest.mark.parametrize("queued", [False, True])
@pytest_twisted.ensureDeferred
async def test_nothing_keeps_a_directio_alive_after_the_connection_ends(connect, queued):
    """No reference cycle (the transport's instance methods point at the DirectIO, which
    points at the transport): freed by reference counting alone, without a full GC."""
    import gc
    import weakref

    pair = await connect(peer_rcvbuf=4096)
    if queued:
        fill(pair)
    io = weakref.ref(pair.leg.io)
    pair.leg.transport.abortConnection() if queued else pair.peer.close()
    await wait_for(lambda: pair.leg.lost is not None)
    pair.leg.io.detach()  # idempotent, also after the end
    left = vars(pair.leg.transport)  # (abortConnection sets doRead/doWrite lambdas of its own)
    assert not [n for n in ("doRead", "doWrite", "connectionLost")
                if getattr(left.get(n), "__self__", None) is pair.leg.io]
    gc.disable()
    try:
        pair.leg.io = None
        assert io() is None, "a reference cycle keeps the DirectIO (and its transport) alive"
    finally:
        gc.enable()
