"""The request body of an exchange: read through the :mod:`relayd.wire.http1` decoder, under
a progress deadline, and forwarded -- gathered whole for the control channel (small bodies), or
streamed as the frames of one binary message on the listener's rendezvous leg, held (with the
client paused) until that leg arrives.

The request half of an exchange is a state machine too::

    HEAD --body framed--> RECEIVING --end of body--> COMPLETE
      |                       |
      |                       +--end of a body the policy reads whole--> CHECKING --checked--> COMPLETE
      +--no body (routed at once, or the policy checked an empty body)------------------------> COMPLETE

COMPLETE: the whole request has been read from the client (and sent, or is held for the leg).

How the request travels to the listener is a second, independent machine (``route``)::

    UNROUTED --offered to a balanced listener--> OFFERED --its leg arrived (a large request)--> ON_LEG
        +--the client's kept rendezvous leg---------------------------------------------------> ON_LEG

OFFERED: the request (small) or its announcement (large) went with the control channel's offer; a
small request's body follows there.  ON_LEG: the request went as a text message on the rendezvous
leg; a large body follows as the frames of one binary message, a small one as one message.
"""

from relayd import states
from relayd.wire import hc, http1

# request states
HEAD, RECEIVING, CHECKING, COMPLETE = "head", "receiving", "checking", "complete"
_TRANSITIONS = {
    HEAD: {RECEIVING, COMPLETE},
    RECEIVING: {CHECKING, COMPLETE},
    CHECKING: {COMPLETE},
    COMPLETE: {COMPLETE},
}

# request routes
UNROUTED, OFFERED, ON_LEG = "unrouted", "offered", "on leg"
ROUTES = {
    UNROUTED: {OFFERED, ON_LEG},
    OFFERED: {ON_LEG},
    ON_LEG: set(),
}


class RequestBody:
    """The request-body half of :class:`relayd.transports.http.exchange.Exchange` (mixed in;
    the exchange provides ``client``, ``door``, ``policy``, the response timer and the ways to
    end)."""

    decoder = None  # the body decoder while body bytes are still to come
    body_small = None  # the body gathered for the control-channel path
    request_state = HEAD
    route = UNROUTED
    body_received = 0

    def _request_to(self, state):
        self.request_state = states.step(_TRANSITIONS, "HTTP exchange: request", self.request_state, state)

    def _route_to(self, route):
        self.route = states.step(ROUTES, "HTTP exchange: route", self.route, route)

    @property
    def request_done(self):
        """The whole request has been read from the client."""
        return self.request_state == COMPLETE

    def feed(self, data):
        try:
            pieces = self.decoder.feed(data)
        except http1.BodyError as e:  # malformed chunked encoding
            self.refuse_and_close(400, "malformed request body: %s" % e)
            return
        decoder = self.decoder
        for piece in pieces:
            self._body_data(piece)
            if self.decoder is not decoder:
                return  # the exchange ended on this piece (a limit, an error)
        if decoder.done:
            self._body_end(decoder.rest)

    # The body must arrive within limits.http_body_timeout seconds plus one second per
    # limits.http_body_min_rate bytes received (a slow upload goes on, a dribble does not); the
    # clock restarts while the relay itself holds the client back (backpressure, or waiting for
    # the listener's leg).  body_hard_limit, when set, caps the whole allowance (SOAP envelopes
    # read before their sender is authenticated).
    body_timer = None
    body_hard_limit = None

    def _start_body_clock(self):
        self.body_started = self.door.clock.seconds()
        self.body_progress = 0
        self.body_timer = self.door.clock.callLater(self._body_allowance(), self._body_deadline)

    def _body_allowance(self):
        limits = self.door.limits
        allowed = limits.http_body_timeout + self.body_progress / limits.http_body_min_rate
        if self.body_hard_limit is not None:
            allowed = min(allowed, self.body_hard_limit)
        return allowed

    def _stop_body_clock(self):
        timer, self.body_timer = self.body_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _held_back(self):
        if self.pending_body:
            return True
        leg = self.client.leg
        producer = getattr(getattr(leg, "transport", None), "producer", None) if leg is not None else None
        return bool(getattr(producer, "paused", False))

    def _body_deadline(self):
        self.body_timer = None
        if self.finished or self.decoder is None:
            return
        now = self.door.clock.seconds()
        if self._held_back() and self.body_hard_limit is None:
            self.body_started, self.body_progress = now, 0
        left = self.body_started + self._body_allowance() - now
        if left > 0:
            self.body_timer = self.door.clock.callLater(left, self._body_deadline)
            return
        self.decoder = None
        message = "the request body did not arrive in time (%d bytes in %.0f seconds)" % (
            self.body_progress, now - self.body_started)
        if self.responding:
            self.abort()
        else:
            self.fail(408, message)

    def _body_data(self, data):
        if not data:
            return
        self.body_progress += len(data)
        if self.conn is not None:
            self.conn.up.n += len(data)  # relayd.traffic: counted as it flows
        self._touch()  # upload progress: the response deadline counts from the last byte
        if self.policy is not None and self.policy.collecting:
            self.policy.data(data)
            return
        self.body_received += len(data)
        if self.body_received > self.door.limits.http_max_body:
            self.refuse_and_close(413, "the request body is larger than the relay's limit of %d bytes"
                                  % self.door.limits.http_max_body)
            return
        if self.body_small is not None:
            self.body_small.append(data)
            return
        leg = self.client.leg
        if self.route == ON_LEG and leg is not None:
            leg.frame_data(data)
        else:
            # the leg is not there yet: hold the client until it is
            self.pending_body.append(data)
            self.client.transport.pauseProducing()

    def _body_end(self, rest):
        self.decoder = None
        self._stop_body_clock()
        if rest:
            self.client.buf = rest + self.client.buf
            self.client.transport.pauseProducing()
        if self.policy is not None and self.policy.collecting:
            self._request_to(CHECKING)
            self.policy.complete()
            return
        self._request_complete()

    def _request_complete(self):
        self._request_to(COMPLETE)
        if self.body_small is not None or (self.small and not self.has_body):
            body = b"".join(self.body_small or [])
            self.body_small = None
            if self.route == ON_LEG:
                leg = self.client.leg
                if body:
                    leg.send_message(body)
                return
            if self.rv is not None and self.has_body:
                # small request with a body: request JSON + the body as one binary message
                message = hc.encode_request(self.address, self.id, self.request_target, self.method,
                                                  self.forward_headers, True)
                if not self.channel.offer_raw(message, body):
                    self.fail(502, "the listener went away")
            return
        leg = self.client.leg
        if self.route == ON_LEG and leg is not None:
            leg.end_message()

    # -- for the entity kind's policy -----------------------------------------------------------

    def body_pending(self):
        """True while body bytes are still to come from the client."""
        return self.decoder is not None

    def limit_body_time(self, seconds):
        """Cap the whole body's allowance at ``seconds``, counted from now."""
        self.body_hard_limit = seconds
        if self.body_timer is not None:
            self._stop_body_clock()
            self._start_body_clock()
