"""One client HTTP/1.1 connection of the HTTP door: reading request heads (keep-alive, one
request at a time -- a pipelined next request waits unread), the deadlines between requests
(keep-alive idle, the head deadline), and the rendezvous leg kept for later requests.

Wire protocol: HTTP/1.1 from the client (:mod:`relayd.wire.http1`); towards the listener, the
Hybrid Connections request messages over a rendezvous WebSocket leg (:class:`LegReader` reads
what the listener sends back on it: a ``response`` JSON text message, then the body as binary
message(s)).  See :mod:`relayd.transports.http` for the whole protocol.
"""

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Protocol

from relayd import pipe
from relayd.transports.http.exchange import Exchange
from relayd.transports.http.request import HttpError
from relayd.transports.http.responses import log, write_error, write_fault
from relayd.wire import hc, http1


class HttpRelayProtocol(Protocol):
    """One client HTTP/1.1 connection; one request at a time (later ones wait, unread)."""

    def __init__(self, door):
        self.door = door
        self.buf = b""
        self.exchange = None
        self.leg = None  # rendezvous WebSocket kept for later requests of this connection
        self.leg_entity = None
        self.leg_keep = False
        self.closed = False
        # Between requests: the keep-alive idle timer, then the head deadline from the first
        # byte of the next request (limits.http_keepalive_timeout, limits.open_handshake_timeout).
        # ``waiting``: what to call when the wait is over (None while not waiting); the reactor
        # call is kept across requests and moved (reset), not made and cancelled each time.
        self.waiting = None
        self._wait_call = None

    def connectionMade(self):
        self.secure = ISSLTransport.providedBy(self.transport)
        pipe.no_delay(self.transport)

    # -- waiting between requests ------------------------------------------------------------

    def _wait(self, seconds, expired):
        self.waiting = expired
        call = self._wait_call
        if call is not None and call.active():
            call.reset(seconds)
        else:
            self._wait_call = self.door.clock.callLater(seconds, self._wait_over)

    def _stop_waiting(self):
        self.waiting = None  # the call stays, idle, for the next wait (or fires and does nothing)

    def _wait_over(self):
        self._wait_call = None
        expired, self.waiting = self.waiting, None
        if expired is not None:
            expired()

    def _idle_expired(self):
        if self.exchange is None and not self.buf and not self.closed:
            self.closed = True
            self.transport.loseConnection()

    def _head_expired(self):
        if self.exchange is None and not self.closed:
            self.buf = b""
            self.send_error(408, "the request head did not arrive within %s seconds"
                            % self.door.limits.open_handshake_timeout, close=True)

    # -- reading ---------------------------------------------------------------------------

    def dataReceived(self, data):
        if self.closed:
            return
        if self.exchange is not None:
            if self.exchange.decoder is not None:
                self.exchange.feed(data)
            else:
                self.buf += data
                if len(self.buf) > self.door.limits.max_header_bytes:
                    self.transport.pauseProducing()
            return
        self.buf += data
        self._next_request()

    def _next_request(self):
        self._read_request()
        if self.exchange is None and not self.closed and self.waiting is None:
            if self.buf:
                self._wait(self.door.limits.open_handshake_timeout, self._head_expired)
            else:
                self._wait(self.door.limits.http_keepalive_timeout, self._idle_expired)

    def _read_request(self):
        if self.closed or self.exchange is not None:
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > self.door.limits.max_header_bytes:
                self.send_error(431, "the request head is larger than %d bytes" % self.door.limits.max_header_bytes,
                                close=True)
            elif self.buf and self.waiting != self._head_expired:
                self._wait(self.door.limits.open_handshake_timeout, self._head_expired)
            return
        self._stop_waiting()
        if end > self.door.limits.max_header_bytes:
            self.send_error(431, "the request head is larger than %d bytes" % self.door.limits.max_header_bytes,
                            close=True)
            return
        head, self.buf = self.buf[:end], self.buf[end + 4:]
        try:
            exchange = Exchange(self, http1.parse_request_head(head))
        except http1.HeadError as e:
            self.send_error(e.status, e.message, close=True)
            return
        try:
            self.exchange = exchange
            exchange.start()
        except HttpError as e:
            self.exchange = None
            exchange._dispose_quietly()
            close = e.close or exchange.close_after  # the client's Connection: close (or HTTP/1.0) too
            exchange.send_error(e.status, e.message, close=close, headers=e.headers)
            if not close and self.buf:
                self._read_request()
        except Exception:
            log.failure("HTTP relay request failed unexpectedly")
            self.exchange = None
            exchange._dispose_quietly()
            self.send_error(500, "internal error in the relay", close=True)

    # -- writing errors ----------------------------------------------------------------------

    def send_error(self, status, message, close=False, headers=(), head_only=False):
        """``head_only``: the answer to a HEAD request (no body)."""
        write_error(self.transport, status, message, close=close, headers=headers,
                    refusals=getattr(self.door, "refusals", None), head_only=head_only)
        if close:
            self.closed = True

    def send_fault(self, fault, close=True, headers=(), head_only=False):
        write_fault(self.transport, fault, close=close, headers=headers, head_only=head_only)
        if close:
            self.closed = True

    def exchange_done(self, exchange, close):
        if self.exchange is exchange:
            self.exchange = None
        if close or self.closed:
            self.closed = True
            pipe.close_after_flush(self.transport)
            return
        self.transport.resumeProducing()
        self._next_request()

    # -- the kept rendezvous leg -------------------------------------------------------------

    def attach_leg(self, leg, entity_path, keep):
        """Use ``leg`` for this connection.  A leg the listener opened to fetch a request is
        kept for later requests; one it opened only to send a large response is closed when
        that response ends (Azure's hyco-https never reads from such a socket)."""
        if self.leg is not None:
            self.detach_leg()
        self.leg = leg
        self.leg_keep = keep
        self.leg_entity = entity_path.lower()
        leg.partner = LegReader(self)
        leg.start_data_leg()
        pipe.splice_transports(self.transport, leg.transport)
        leg.notify_on_lost(self._leg_lost)

    def detach_leg(self, code=1000, reason="response complete"):
        leg, self.leg = self.leg, None
        if leg is None:
            return
        leg.partner = None
        leg.notify_on_lost(None)
        for t in (self.transport, leg.transport):
            if getattr(t, "producer", None) is not None:
                t.unregisterProducer()
        self.transport.resumeProducing()
        leg.close(code, reason)

    def _leg_lost(self):
        leg, self.leg = self.leg, None
        if leg is not None and getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()
        if self.exchange is not None:
            self.exchange.leg_lost()

    def connectionLost(self, reason):
        self.closed = True
        self.waiting = None
        call, self._wait_call = self._wait_call, None
        if call is not None and call.active():
            call.cancel()
        if self.exchange is not None:
            self.exchange.client_lost()
            self.exchange = None
        leg, self.leg = self.leg, None
        if leg is not None:
            leg.partner = None
            leg.notify_on_lost(None)
            leg.close(1001, "the HTTP client closed its connection")


class LegReader:
    """Receives what the listener sends on a request rendezvous leg (ILeg as the partner)."""

    def __init__(self, client):
        self.client = client
        self._binary = False
        self._text = []
        self._size = 0

    def begin_message(self, is_binary):
        self._binary = is_binary
        self._text = []
        self._size = 0
        if is_binary and self.client.exchange is not None:
            self.client.exchange.response_body_begin()

    def frame_begin(self, length):
        pass

    def frame_data(self, data):
        if self._binary:
            if self.client.exchange is not None:
                self.client.exchange.response_body_data(data)
        else:
            self._size += len(data)
            if self._size > hc.MAX_CONTROL_JSON:
                self.client.leg.close(1008, "response message larger than %d bytes" % hc.MAX_CONTROL_JSON)
                return
            self._text.append(data)

    def end_message(self):
        exchange = self.client.exchange
        if self._binary:
            if exchange is not None:
                exchange.response_body_end()
            return
        try:
            message = hc.decode(b"".join(self._text))
        except hc.MessageError as e:
            self.client.leg.close(1008, "bad response message: %s" % e)
            return
        if isinstance(message, hc.Response) and exchange is not None and message.request_id == exchange.id:
            exchange.response_start(message, via_control=False)

    def close(self, code, reason):
        self.client.leg = None
        if self.client.exchange is not None:
            self.client.exchange.leg_lost()
