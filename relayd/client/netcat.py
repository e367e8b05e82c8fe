"""``relayd listen PATH`` and ``relayd connect PATH``: netcat over a hybrid connection.

``relayd connect PATH`` connects to the hybrid connection as a sender, then copies stdin to
the relay as binary messages (one per read) and every message from the relay (binary, or
text as UTF-8) to stdout.

``relayd listen PATH`` opens a listener, accepts **one** connection (senders arriving while
it is busy are rejected with 503), pipes stdin/stdout over it the same way, and exits when
that connection has closed.  Loop it in the shell to serve several in turn.  It reports on
stderr when it is online (``relayd listen: online on PATH``), and keeps reconnecting its
control channel with backoff, except that a 401, 403 or 404 before it was ever online
ends it (a wrong key, rule or path will not fix itself).  Given several relay endpoints
(``Endpoint=a,b`` or repeated ``--url``) it fails over among them, with a line per attempt
(``connecting to ws://host:port (attempt N)``; the first attempt's only with -v).

End of file is a half-close, as with TCP: at the end of stdin (``</dev/null`` included) the
command sends an empty binary message (the end-of-data marker ``relayd bridge`` uses too)
and goes on receiving; when the peer's empty binary message arrives, stdout is closed (the
reader sees end of file) and stdin goes on being sent.  The side that has both sent and
received the marker closes the connection (1000).  A peer that does not use the marker ends
the transfer by closing the connection.

Flow control: stdin is read only while the relay socket can take more, and the relay
socket is read only while stdout keeps up.  Stdin is not read before a connection exists.

Exit status: 0 when the transfer completed (the connection closed normally after all of stdin
was sent, or after the reader of stdout went away); 1 when the connection could not be made
or ended abnormally; 2 for bad options; 3 when the peer closed the connection normally before
all of stdin was sent; 130 on Ctrl-C.
"""

import os
import sys

from twisted.internet import defer, interfaces
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from relayd.client.connection_string import ConnectionInfo
from relayd.client.listener import HybridListener
from relayd.client.handshake import RelayConnectError
from relayd.client.sender import connect

NORMAL_CLOSE = (1000, 1001, 1005)
FATAL_BEFORE_ONLINE = (401, 403, 404)


# -q: stderr only for problems; -v: also what the command is doing (set by main)
_verbosity = 0


def _say(name, message, err=None):
    """A problem: always reported."""
    print("relayd %s: %s" % (name, message), file=err or sys.stderr, flush=True)


def _info(name, message, err=None):
    """Progress (online, reconnecting): not with -q."""
    if _verbosity >= 0:
        _say(name, message, err)


def _debug(name, message, err=None):
    """Details: only with -v."""
    if _verbosity > 0:
        _say(name, message, err)


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INPUT_NOT_SENT = 0, 1, 2, 3
END_OF_DATA = b""  # an empty binary message: this side has nothing more to send


@implementer(interfaces.IHalfCloseableProtocol)
class _Stdio(Protocol):
    """The stdin/stdout end of the pipe, and the half-close state of both directions."""

    def __init__(self, conn, stdout_fd):
        self.conn = conn
        self.stdout_fd = stdout_fd
        self.sent_eof = False  # stdin ended and the end-of-data marker went out
        self.got_eof = False  # the peer's end-of-data marker arrived; stdout is being closed
        self.reader_gone = False  # stdout closed under us (e.g. `| head`)
        self.stdout_done = defer.Deferred()  # stdout flushed and closed

    def dataReceived(self, data):
        if self.conn.is_connected:
            self.conn.send(data)

    def readConnectionLost(self):
        # end of stdin: half-close; keep receiving until the peer has finished too
        if self.conn.is_connected and not self.sent_eof:
            self.sent_eof = True
            self.conn.send(END_OF_DATA)
            self._both_done()

    def peer_data(self, data):
        if data:
            self.transport.write(data)
        else:
            self.peer_eof()

    def peer_message_end(self, is_binary, size):
        if is_binary and size == 0:
            self.peer_eof()

    def peer_eof(self):
        if self.got_eof:
            return
        self.got_eof = True
        # nothing more will come: stdout no longer paces the socket (which must stay readable
        # for the close), and closes once what arrived is written
        self.transport.unregisterProducer()
        self.conn.resumeProducing()
        self.transport.loseWriteConnection()
        self._both_done()

    def _both_done(self):
        if self.sent_eof and self.got_eof and self.conn.is_connected:
            self.conn.close(1000)

    def writeConnectionLost(self):
        if self.got_eof:
            # flushed: the reader gets its end of file now (Twisted leaves the descriptor open;
            # pointing it at /dev/null closes the pipe and keeps the descriptor number valid)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stdout_fd)
            os.close(devnull)
        else:
            # stdout went away (e.g. `| head`): nothing more can be delivered
            self.reader_gone = True
            if self.conn.is_connected:
                self.conn.close(1000, "the reader's stdout closed")
        self._stdout_closed()

    def connectionLost(self, reason):
        self._stdout_closed()

    def _stdout_closed(self):
        if not self.stdout_done.called:
            self.stdout_done.callback(None)


async def _pipe(reactor, name, conn, stdin, stdout, err):
    """Pipe stdin/stdout over ``conn`` until it closes; returns the exit status."""
    from twisted.internet import stdio

    closed = conn.closed
    proto = _Stdio(conn, stdout)
    io = stdio.StandardIO(proto, stdin=stdin, stdout=stdout, reactor=reactor)
    conn.on_data = proto.peer_data
    conn.on_message_end = proto.peer_message_end
    conn.registerProducer(io, True)  # a full socket buffer pauses reading stdin
    io.registerProducer(conn, True)  # a full stdout buffer pauses reading the socket
    # Ctrl-C / SIGTERM: close with 1001 rather than dropping the socket
    trigger = reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: conn.close(1001, "interrupted") if conn.is_connected else None)
    try:
        code, reason = await closed
    finally:
        reactor.removeSystemEventTrigger(trigger)
    _debug(name, "closed: %s %s (stdin %s, the peer's data %s)" % (
        code, reason or "", "sent" if proto.sent_eof else "not at its end",
        "complete" if proto.got_eof else "ended by the close"), err)
    io.unregisterProducer()
    io.loseConnection()  # flushes stdout first (if still open) and stops reading stdin
    await proto.stdout_done
    if proto.sent_eof and proto.got_eof:
        # both ends of data were exchanged: everything arrived whatever the close looked like
        # (both sides may close at once, and the crossing closes may end in a dropped socket)
        return EXIT_OK
    if code not in NORMAL_CLOSE:
        _say(name, "the connection ended abnormally: %s %s" % (code, reason or ""), err)
        return EXIT_FAILED
    if not proto.sent_eof and not proto.reader_gone:
        _say(name, "the peer closed the connection (%s %s) before all of stdin was sent"
             % (code, reason or ""), err)
        return EXIT_INPUT_NOT_SENT
    return EXIT_OK


async def run_connect(reactor, info, path, stdin=0, stdout=1, err=None, timeout=40):
    _debug("connect", "connecting to %s" % info.hc_url(path), err)
    try:
        conn = await connect(reactor, info, path, timeout=timeout)
    except RelayConnectError as e:
        _say("connect", "cannot connect to %s: %s" % (info.resolve_path(path), e), err)
        return 1
    return await _pipe(reactor, "connect", conn, stdin, stdout, err)


async def run_listen(reactor, info, path, stdin=0, stdout=1, err=None):
    state = {"online_once": False, "busy": False, "attempts": 0}
    fatal = defer.Deferred()
    accepted = defer.Deferred()

    def on_status(status, detail):
        if status == "connecting":  # one line per attempt, the very first one with -v only
            (_info if state["attempts"] or state["online_once"] else _debug)("listen", "connecting to %s (attempt %d)" % (
                listener.target.describe(), state["attempts"] + 1), err)
            state["attempts"] += 1
        elif status == "online":
            _info("listen", "online %son %s via %s" % ("again " if state["online_once"] else "", listener.path,
                                                      listener.target.describe()), err)
            state["online_once"], state["attempts"] = True, 0
        elif status == "error":
            if not state["online_once"] and detail.status in FATAL_BEFORE_ONLINE:
                if not fatal.called:
                    fatal.callback(detail)
            else:
                _info("listen", "control channel: %s (retrying)" % (detail,), err)
        elif status == "offline" and listener.state != "stopped" and state["online_once"]:
            _info("listen", "control channel closed: %s %s (reconnecting)" % (detail.code, detail.reason or ""),
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
    global _verbosity
    _verbosity = getattr(args, "verbosity", 0)
    if reactor is None:
        from twisted.internet import reactor
    if name == "connect":
        return _run(reactor, lambda: run_connect(reactor, info, path))
    return _run(reactor, lambda: run_listen(reactor, info, path))
