"""``relayd listen PATH`` and ``relayd connect PATH``: netcat over a hybrid connection.

``relayd connect PATH`` connects to the hybrid connection as a sender, then copies stdin to
the relay as binary messages (one per read) and every message from the relay (binary, or
text as UTF-8) to stdout.  End of stdin closes the connection with 1000; when the other
side closes, the command exits.

``relayd listen PATH`` opens a listener, accepts **one** connection (senders arriving while
it is busy are rejected with 503), pipes stdin/stdout over it the same way, and exits when
that connection has closed.  Loop it in the shell to serve several in turn.  It reports on
stderr when it is online (``relayd listen: online on PATH``), and keeps reconnecting its
control channel with backoff, except that a 401, 403 or 404 before it was ever online
ends it (a wrong key, rule or path will not fix itself).

Flow control: stdin is read only while the relay socket can take more, and the relay
socket is read only while stdout keeps up.  Stdin is not read before a connection exists.

Exit status: 0 after a normal close (1000, 1001 or no code) from either side; 1 when the
connection could not be made or ended abnormally; 2 for bad options; 130 on Ctrl-C.
"""

import sys

from twisted.internet import defer, interfaces
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from relayd.client.connection import ConnectionInfo
from relayd.client.listener import HybridListener
from relayd.client.sender import RelayConnectError, connect

NORMAL_CLOSE = (1000, 1001, 1005)
FATAL_BEFORE_ONLINE = (401, 403, 404)


def _say(name, message, err=None):
    print("relayd %s: %s" % (name, message), file=err or sys.stderr, flush=True)


@implementer(interfaces.IHalfCloseableProtocol)
class _Stdio(Protocol):
    """The stdin/stdout end of the pipe."""

    def __init__(self, conn):
        self.conn = conn
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        if self.conn.is_connected:
            self.conn.send(data)

    def readConnectionLost(self):
        # end of stdin: finish the connection (the close frame follows what was sent)
        if self.conn.is_connected:
            self.conn.close(1000)

    def writeConnectionLost(self):
        # stdout went away (e.g. `| head`): nothing more can be delivered
        if self.conn.is_connected:
            self.conn.close(1000, "the reader's stdout closed")

    def connectionLost(self, reason):
        if not self.lost.called:
            self.lost.callback(None)


async def _pipe(reactor, name, conn, stdin, stdout, err):
    """Pipe stdin/stdout over ``conn`` until it closes; returns the exit status."""
    from twisted.internet import stdio

    closed = conn.closed
    proto = _Stdio(conn)
    io = stdio.StandardIO(proto, stdin=stdin, stdout=stdout, reactor=reactor)
    conn.on_data = io.write
    conn.registerProducer(io, True)  # a full socket buffer pauses reading stdin
    io.registerProducer(conn, True)  # a full stdout buffer pauses reading the socket
    # Ctrl-C / SIGTERM: close with 1001 rather than dropping the socket
    trigger = reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: conn.close(1001, "interrupted") if conn.is_connected else None)
    try:
        code, reason = await closed
    finally:
        reactor.removeSystemEventTrigger(trigger)
    io.unregisterProducer()
    io.loseConnection()  # flushes stdout first
    await proto.lost
    if code in NORMAL_CLOSE:
        return 0
    _say(name, "the connection ended abnormally: %s %s" % (code, reason or ""), err)
    return 1


async def run_connect(reactor, info, path, stdin=0, stdout=1, err=None, timeout=40):
    try:
        conn = await connect(reactor, info, path, timeout=timeout)
    except RelayConnectError as e:
        _say("connect", "cannot connect to %s: %s" % (info.resolve_path(path), e), err)
        return 1
    return await _pipe(reactor, "connect", conn, stdin, stdout, err)


async def run_listen(reactor, info, path, stdin=0, stdout=1, err=None):
    state = {"online_once": False, "busy": False}
    fatal = defer.Deferred()
    accepted = defer.Deferred()

    def on_status(status, detail):
        if status == "online":
            if not state["online_once"]:
                _say("listen", "online on %s" % listener.path, err)
            state["online_once"] = True
        elif status == "error":
            if not state["online_once"] and detail.status in FATAL_BEFORE_ONLINE:
                if not fatal.called:
                    fatal.callback(detail)
            else:
                _say("listen", "control channel: %s (retrying)" % (detail,), err)
        elif status == "offline" and listener.state != "stopped" and state["online_once"]:
            _say("listen", "control channel closed: %s %s (reconnecting)" % (detail.code, detail.reason or ""),
                 err)

    def on_accept(request):
        if state["busy"]:
            return request.reject(503, "this relayd listen is busy with another connection")
        state["busy"] = True

        def opened(conn):
            accepted.callback(conn)
            return conn

        def failed(failure):
            state["busy"] = False  # the sender gave up; wait for the next one
            _say("listen", "accepting %s failed: %s" % (request.id, failure.getErrorMessage()), err)

        request.accept().addCallbacks(opened, failed)
        return None

    listener = HybridListener(reactor, info, path, on_accept, on_status=on_status)
    shutdown = reactor.addSystemEventTrigger("before", "shutdown", listener.stop)
    listener.start().addErrback(lambda f: f.trap(defer.CancelledError))
    try:
        result, index = await defer.DeferredList([fatal, accepted], fireOnOneCallback=True,
                                                 consumeErrors=True)
        if index == 0:
            _say("listen", "cannot listen on %s: %s" % (listener.path, result), err)
            return 1
        return await _pipe(reactor, "listen", result, stdin, stdout, err)
    finally:
        reactor.removeSystemEventTrigger(shutdown)
        await listener.stop()


def _run(reactor, coroutine_fn):
    outcome = {}

    def go():
        d = defer.ensureDeferred(coroutine_fn())

        def done(code):
            outcome["code"] = code

        def failed(failure):
            print("relayd: unexpected error: %s" % failure.getTraceback(), file=sys.stderr)
            outcome["code"] = 1

        d.addCallbacks(done, failed)
        d.addBoth(lambda _: reactor.stop() if reactor.running else None)

    reactor.callWhenRunning(go)
    reactor.run()
    return outcome.get("code", 130)


def main(name, args, reactor=None):
    """Entry point for ``relayd listen`` / ``relayd connect``; returns the exit status."""
    if name not in ("listen", "connect"):
        raise ValueError("netcat.main: name must be 'listen' or 'connect', got %r" % (name,))
    try:
        info = ConnectionInfo.from_args(args, require_key=(name == "listen"))
        path = info.resolve_path(getattr(args, "path", None))
    except ValueError as e:
        _say(name, str(e))
        return 2
    if reactor is None:
        from twisted.internet import reactor
    if name == "connect":
        return _run(reactor, lambda: run_connect(reactor, info, path))
    return _run(reactor, lambda: run_listen(reactor, info, path))
