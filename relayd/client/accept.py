"""An offered sender, as the listener SDK hands it to ``on_accept``: :class:`AcceptRequest`.

Built from the relay's ``accept`` control message (:class:`relayd.wire.hc.Accept`) by
:class:`relayd.client.listener.HybridListener`; ``accept()`` opens the rendezvous WebSocket to
the message's address, ``reject()`` opens it with ``sb-hc-statusCode``/``sb-hc-statusDescription``
appended, which the relay answers with 410 and passes to the sender as its handshake status.
"""

from urllib.parse import parse_qsl, quote, unquote, urlsplit

from twisted.internet import defer
from twisted.logger import Logger

from relayd.client.handshake import RelayConnectError, open_websocket
from relayd.client.websocket import RelayedConnection


class AlreadyAnswered(Exception):
    """accept() or reject() on a request that was already accepted or rejected."""


# the listener's own log namespace (accepting is part of what a listener does)
log = Logger(namespace="relayd.client.listener.HybridListener")


class Accepted:
    """What a listener's answers opened: the accepts and rejects under way (Deferreds) and
    the accepted connections still open, all ended together by :meth:`close`."""

    def __init__(self):
        self.pending = set()
        self.connections = set()

    def track_pending(self, d):
        """Cancel the Deferred ``d`` (an accept or reject under way) on :meth:`close`."""
        self.pending.add(d)

        def done(result):
            self.pending.discard(d)
            return result

        d.addBoth(done)

    def track_connection(self, conn):
        """Close the accepted connection ``conn`` on :meth:`close`."""
        self.connections.add(conn)
        conn.closed.addCallback(lambda _: self.connections.discard(conn))

    def close(self, code=1001, reason="the listener stopped"):
        """Cancel what is under way and close every connection; a Deferred for each close."""
        for d in list(self.pending):
            d.cancel()
        return [conn.close(code, reason) if conn.is_connected else conn.closed for conn in list(self.connections)]


class AcceptRequest:
    """A sender waiting for this listener (from an ``accept`` control message, a
    :class:`relayd.wire.hc.Accept`).

    ``id``: the rendezvous id (the sender's ``sb-hc-id`` when it gave one);
    ``address``: where to accept; ``connect_headers``: the sender's handshake headers;
    ``path_suffix``: what the sender put after the entity path (``"/a/b"`` or ``""``);
    ``query``: the sender's query parameters without ``sb-hc-*`` (a dict, last value wins);
    ``remote_endpoint``: ``{"address": ..., "port": ...}`` of the sender as the relay saw it;
    ``subprotocols``: the WebSocket subprotocols the sender offered.

    ``listener`` is the :class:`~relayd.client.listener.HybridListener` the offer came to: its
    ``path``, ``reactor``, ``accept_timeout`` and ``info.trust_root`` are used, and what this
    opens is registered with its :class:`Accepted` (``listener.accepted``) so that ``stop()``
    ends it.
    """

    def __init__(self, listener, accept):
        self.listener = listener
        self.address = accept.address
        self.id = accept.id
        self.connect_headers = dict(accept.connect_headers)
        self.remote_endpoint = dict(accept.remote_endpoint)
        parts = urlsplit(self.address)
        rel = unquote(parts.path)
        if rel.startswith("/$hc/"):
            rel = rel[len("/$hc/"):]
        entity = listener.path.strip("/")
        if rel.lower().startswith(entity.lower()):
            self.path_suffix = rel[len(entity):]
        else:
            self.path_suffix = ""
        self.query = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=True)
                      if not k.lower().startswith("sb-hc-")}
        offered = self.header("Sec-WebSocket-Protocol") or ""
        self.subprotocols = [p.strip() for p in offered.split(",") if p.strip()]
        self.answer = None  # "accepted" / "rejected" once answered

    def header(self, name):
        """A connect header by name, case-insensitively (None when absent)."""
        low = name.lower()
        for key, value in self.connect_headers.items():
            if key.lower() == low:
                return value
        return None

    def offer(self, on_accept):
        """Hand this request to the application's ``on_accept``: a result of False (or a
        Deferred firing False) rejects with 403, an exception rejects with 500, anything
        else leaves the answer to ``on_accept``."""
        d = defer.maybeDeferred(on_accept, self)

        def decided(result):
            if result is False and not self.answered:
                return self.reject(403, "Rejected by the listener")
            return None

        def failed(failure):
            log.failure("on_accept failed for {request}", failure, request=self)
            if not self.answered:
                return self.reject(500, "The listener failed to handle the connection")
            return None

        def report(failure):
            if not failure.check(defer.CancelledError):
                log.info("listener {id}: answering {request} failed: {err}", id=self.listener.listener_id,
                         request=self, err=failure.getErrorMessage())

        d.addCallbacks(decided, failed)
        d.addErrback(report)

    @property
    def answered(self):
        return self.answer is not None

    def accept(self, handler=None, subprotocol=None):
        """Accept: open the rendezvous WebSocket to ``address`` as is.

        ``handler`` may be None (use the returned connection directly), a callable taking
        the :class:`RelayedConnection` (called as soon as it is open, before any message is
        delivered), or a Twisted protocol factory (its protocol is attached to the
        connection as a byte stream, see :meth:`RelayedConnection.attach`).
        ``subprotocol`` is echoed in Sec-WebSocket-Protocol (pick one the sender offered,
        see ``subprotocols``).  Fires with the connection; fails with
        :class:`RelayConnectError` (e.g. 403/404 when the sender gave up meanwhile).
        """
        if self.answered:
            return defer.fail(AlreadyAnswered("request %s was already %s" % (self.id, self.answer)))
        self.answer = "accepted"
        listener = self.listener
        d = open_websocket(listener.reactor, self.address, RelayedConnection,
                           protocols=[subprotocol] if subprotocol else None,
                           timeout=listener.accept_timeout, trust_root=listener.info.trust_root)
        listener.accepted.track_pending(d)

        def opened(conn):
            listener.accepted.track_connection(conn)
            if handler is not None:
                if hasattr(handler, "buildProtocol"):
                    proto = handler.buildProtocol(conn.transport.getPeer())
                    if proto is None:
                        conn.close(1011, "the listener refused the connection")
                        return conn
                    conn.attach(proto)
                else:
                    handler(conn)
            return conn

        return d.addCallback(opened)

    def reject(self, status=403, description="Rejected by the listener"):
        """Reject with an HTTP error ``status`` (400-599) and ``description``, which the
        sender gets as its handshake's status.  Fires with None when the relay confirmed
        (the handshake ends in 410 by design); fails with :class:`RelayConnectError`."""
        if self.answered:
            return defer.fail(AlreadyAnswered("request %s was already %s" % (self.id, self.answer)))
        status = int(status)
        if not 400 <= status <= 599:
            return defer.fail(ValueError("reject status must be from 400 to 599, got %d" % status))
        self.answer = "rejected"
        description = " ".join(str(description or "").split())  # one line
        url = "%s%ssb-hc-statusCode=%d&sb-hc-statusDescription=%s" % (
            self.address, "&" if "?" in self.address else "?", status, quote(description, safe=""))
        d = open_websocket(self.listener.reactor, url, RelayedConnection,
                           timeout=self.listener.accept_timeout, trust_root=self.listener.info.trust_root)
        self.listener.accepted.track_pending(d)

        def opened(conn):
            conn.abort()
            raise RelayConnectError(101, "the relay opened a WebSocket for a reject request")

        def failed(failure):
            failure.trap(RelayConnectError)
            if failure.value.status == 410:
                return None
            return failure

        return d.addCallbacks(opened, failed)

    def __repr__(self):
        return "<AcceptRequest id=%r suffix=%r query=%r>" % (self.id, self.path_suffix, self.query)
