"""The relay's HTTP port: one listening socket, two protocols behind it.

Reads the request head (bounded in size and time), then hands the connection, with the bytes
read so far, to the Hybrid Connections WebSocket door (``/$hc/...``), the HTTP relaying door or
the twisted.web site (management API under ``/$relayd/``).  The WebSocket door thus sees the
request head exactly as the client sent it, header casing included, and after the handover the
door's protocol reads the socket directly: nothing of this class stays on the data path.

Connection bound
----------------
Every accepted socket is owned, for its whole life, by a :class:`CountedConnection` (a
:class:`twisted.protocols.policies.ProtocolWrapper`): it counts against
``limits.max_connections`` from accept to close, whichever door's protocol it was handed to
(WebSocket legs, kept-alive HTTP relay connections, management calls).  Past the limit a
connection is answered ``503`` with ``Connection: close`` at once, without reading it.

The limit in force is also kept below the process's open-files limit (``RLIMIT_NOFILE``) with
headroom for the relay's own descriptors (listening sockets, its database, logs, TCP doors), so
that running out of descriptors refuses newcomers with a 503 instead of leaving them in the
accept queue or resetting them; a lowered limit is logged with the fix.

Management calls are authenticated and their body size checked here, from the head, before
any of the body is read (:class:`relayd.interfaces.IHeadCheck`, which the management site provides); management
connections serve one request each, so every management request passes this door.
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from relayd.interfaces import IHeadCheck

HC_PREFIX = b"/$hc/"
MANAGE_PREFIX = b"/$relayd/"

# Descriptors kept free for the relay's own use when the connection limit is derived from
# RLIMIT_NOFILE: one eighth of the limit, at least this many.
FD_HEADROOM_MIN = 64
FD_HEADROOM_FRACTION = 8
# Refusals at the connection limit are logged at most once per this many seconds (with a count).
REFUSAL_LOG_INTERVAL = 10.0
# Seconds a client refused at the connection limit is told to wait (Retry-After).
AT_LIMIT_RETRY_AFTER = 1


def open_files_limit():
    """The soft RLIMIT_NOFILE of this process, or None where there is none."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_ceiling(configured, nofile):
    """The connection limit in force: ``configured`` (0 = no limit of its own), but below the
    open-files limit ``nofile`` with headroom.  Returns (limit, lowered) where lowered says
    whether the open-files limit decided it."""
    if not nofile:
        return configured, False
    ceiling = max(1, nofile - max(FD_HEADROOM_MIN, nofile // FD_HEADROOM_FRACTION))
    if configured == 0 or configured > ceiling:
        return ceiling, True
    return configured, False


def plain_reply(transport, code, phrase, message, content_type=b"text/plain; charset=utf-8",
                retry_after=None):
    """Write a complete ``Connection: close`` response and close (after the write drains)."""
    body = message if isinstance(message, bytes) else (message + "\n").encode("utf-8")
    extra = b"Retry-After: %d\r\n" % retry_after if retry_after is not None else b""
    transport.write(
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (code, phrase.encode("ascii"), content_type, extra, len(body), body)
    )
    transport.loseConnection()


class CountedConnection(ProtocolWrapper):
    """Owns one accepted socket for its whole life and counts it against the limit.

    The front door hands the socket over by replacing ``wrappedProtocol``; this wrapper stays
    the transport of whichever protocol serves the connection, so its ``connectionLost``
    (which ProtocolWrapper calls, then drops the wrapped protocol) releases the place.
    """

    counted = True

    # Doors tune the socket's read size through the transport (``bufferSize``); pass it on to
    # the real transport rather than setting it on this wrapper.
    @property
    def bufferSize(self):
        return self.transport.bufferSize

    @bufferSize.setter
    def bufferSize(self, value):
        self.transport.bufferSize = value


class AtLimit(Protocol):
    """Past ``max_connections``: a 503 and the connection closed, nothing read."""

    def connectionMade(self):
        plain_reply(self.transport, 503, "Service Unavailable",
                    "the relay is at its connection limit; retry later", retry_after=AT_LIMIT_RETRY_AFTER)


class FrontDoor(Protocol):
    _log = Logger()

    def __init__(self, factory, addr):
        self.factory = factory
        self.addr = addr
        self.buf = b""
        self._timer = None
        self._done = False

    def connectionMade(self):
        self._timer = self.factory.clock.callLater(self.factory.head_timeout, self._too_slow)

    def connectionLost(self, reason):
        self._done = True
        self._cancel_timer()

    def _cancel_timer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _too_slow(self):
        self._timer = None
        self._reply(408, "Request Timeout", "the request head did not arrive in time")

    def _reply(self, code, phrase, message, content_type=b"text/plain; charset=utf-8"):
        self._done = True
        self._cancel_timer()
        self.buf = b""
        plain_reply(self.transport, code, phrase, message, content_type)

    def dataReceived(self, data):
        if self._done:
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if (len(self.buf) if end < 0 else end) > self.factory.max_head:
            self._reply(431, "Request Header Fields Too Large",
                        "the request head is larger than %d bytes" % self.factory.max_head)
            return
        if end < 0:
            return
        line = self.buf[: self.buf.find(b"\r\n")]
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._reply(400, "Bad Request", "malformed HTTP request line")
            return
        target = parts[1]
        if target.startswith(b"http://") or target.startswith(b"https://"):
            target = b"/" + target.split(b"/", 3)[-1]
        if target.startswith(HC_PREFIX):
            factory = self.factory.websocket
        elif target.startswith(MANAGE_PREFIX) or self.factory.http is None:
            factory = self.factory.web
            refusal = factory.refuse(self.buf[:end]) if IHeadCheck.providedBy(factory) else None
            if refusal is not None:
                code, phrase, body = refusal
                self._reply(code, phrase, body, b"application/json")
                return
        else:
            factory = self.factory.http
        self._handover(factory.buildProtocol(self.addr))

    def _handover(self, protocol):
        self._done = True
        self._cancel_timer()
        transport = self.transport
        if isinstance(transport, ProtocolWrapper):
            transport.wrappedProtocol = protocol
            # On TLS the protocol gets the TLS transport itself: autobahn takes the TLS channel
            # (tls-unique) from it and refuses a wrapper that only claims ISSLTransport.  The
            # CountedConnection stays in between and still sees the data and connectionLost.
            if isinstance(transport.transport, TLSMemoryBIOProtocol):
                transport = transport.transport
        else:
            transport.protocol = protocol
        # The connection's place is released by CountedConnection when the socket closes.
        protocol.makeConnection(transport)
        buf, self.buf = self.buf, b""
        protocol.dataReceived(buf)


class ConnectionBudget:
    """``limits.max_connections``, shared by every listening door of the relay.

    The HTTP port and each TCP door take a place when a socket is accepted and give it back
    when it closes.  The limit in force is kept below the process's open-files limit with
    headroom (see :func:`connection_ceiling`).  Refusals are logged at most once every
    ``REFUSAL_LOG_INTERVAL`` seconds, with a count.
    """

    _log = Logger()

    def __init__(self, clock, max_connections=0, nofile=None):
        self.clock = clock
        self.configured = max_connections
        self.nofile = open_files_limit() if nofile is None else nofile
        self.limit, self.lowered = connection_ceiling(max_connections, self.nofile)
        self.count = 0
        self.refused = 0
        self._refused_unlogged = 0
        self._refusal_logged_at = None
        self._warned = False

    def full(self):
        return bool(self.limit) and self.count >= self.limit

    def take(self):
        self.count += 1

    def release(self):
        self.count -= 1

    def warn_if_lowered(self):
        if self.lowered and not self._warned:
            self._warned = True
            self._log.warn(
                "relayd accepts at most {limit} connections (limits.max_connections = "
                "{configured}): the process may open only {nofile} files; raise that limit "
                "(ulimit -n, systemd LimitNOFILE=) to allow more",
                limit=self.limit, configured=self.configured or "unlimited", nofile=self.nofile)

    def note_refusal(self, door):
        self.refused += 1
        self._refused_unlogged += 1
        now = self.clock.seconds()
        if self._refusal_logged_at is None or now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL:
            self._log.warn("relayd refused {n} connection(s) on {door} at its connection limit of "
                           "{limit} (limits.max_connections)", n=self._refused_unlogged, door=door,
                           limit=self.limit)
            self._refusal_logged_at = now
            self._refused_unlogged = 0


class Budgeted:
    """What a listening factory needs to count its connections against ``self.budget``: the
    wrappers call these from makeConnection / connectionLost."""

    budget = None

    def registerProtocol(self, wrapper):
        if wrapper.counted:
            self.budget.take()

    def unregisterProtocol(self, wrapper):
        if wrapper.counted:
            self.budget.release()

    def at_limit(self, door, wrapper_class, protocol):
        """The connection past the limit: ``protocol`` answers it, and it is not counted."""
        self.budget.note_refusal(door)
        wrapper = wrapper_class(self, protocol)
        wrapper.counted = False
        return wrapper


class FrontDoorFactory(Budgeted, Factory):
    def __init__(self, websocket_factory, web_factory, clock, max_head=32 * 1024,
                 head_timeout=10.0, max_connections=0, http_factory=None, nofile=None,
                 budget=None):
        self.websocket = websocket_factory
        self.web = web_factory
        self.http = http_factory
        self.clock = clock
        self.max_head = max_head
        self.head_timeout = head_timeout
        self.budget = budget if budget is not None else ConnectionBudget(clock, max_connections, nofile)

    # Read-only views kept for callers and tests.
    @property
    def max_connections(self):
        return self.budget.limit

    @property
    def configured_max_connections(self):
        return self.budget.configured

    @property
    def connections(self):
        return self.budget.count

    @property
    def refused(self):
        return self.budget.refused

    def startFactory(self):
        self.budget.warn_if_lowered()

    def buildProtocol(self, addr):
        if self.budget.full():
            return self.at_limit("the HTTP port", CountedConnection, AtLimit())
        return CountedConnection(self, FrontDoor(self, addr))



class Refused(Protocol):
    """Past the connection limit on a TCP door: ``greeting`` (an NMF fault record for net.tcp
    clients, nothing for port-mapped ones) and the connection closed, nothing read."""

    def __init__(self, greeting=b""):
        self.greeting = greeting

    def connectionMade(self):
        if self.greeting:
            self.transport.write(self.greeting)
        self.transport.loseConnection()

    def readConnectionLost(self):
        pass

    def writeConnectionLost(self):
        pass


@implementer(IHalfCloseableProtocol)
class HalfCloseCounted(CountedConnection):
    """A counted TCP door connection: the door's protocol handles half-closes (the client's
    EOF becomes the half-close marker), so the wrapper passes them on."""

    def readConnectionLost(self):
        self.wrappedProtocol.readConnectionLost()

    def writeConnectionLost(self):
        self.wrappedProtocol.writeConnectionLost()


class CountingFactory(Budgeted, WrappingFactory):
    """Counts a TCP door's connections against the relay's :class:`ConnectionBudget`.

    The wrapper stays between the socket and the door's protocol (one extra call per read
    and write), so the place is given back exactly when the socket closes.
    """

    protocol = HalfCloseCounted

    def __init__(self, budget, wrapped, label, refusal=b""):
        super().__init__(wrapped)
        self.budget = budget
        self.label = label
        self.refusal = refusal

    def startFactory(self):
        self.budget.warn_if_lowered()
        super().startFactory()

    def buildProtocol(self, addr):
        if self.budget.full():
            return self.at_limit(self.label, HalfCloseCounted, Refused(self.refusal))
        return super().buildProtocol(addr)
