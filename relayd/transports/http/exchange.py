"""One HTTP request and its response, as it travels to a listener and back.

An exchange is made from a parsed request head (:mod:`relayd.wire.http1`); ``start`` checks and
routes it: to the client's kept rendezvous leg, or offered to a balanced listener of the entity
(:class:`~relayd.transports.listener.offers.RequestOffer`).  Its request body is
:class:`~relayd.transports.http.upload.RequestBody` (HEAD -> RECEIVING -> [CHECKING] -> COMPLETE; its
route UNROUTED -> OFFERED -> ON_LEG), its response
:class:`~relayd.transports.http.responses.ResponseSide` (a state machine: WAITING -> WHOLE |
BUFFERING | STREAMING -> DONE).  What the entity's kind changes (SOAP envelopes, faults, WSDL
rewriting) is its :class:`~relayd.transports.http.policy.IRequestPolicy`, given by the door.
"""

from urllib.parse import parse_qsl, unquote, urlsplit

from relayd import access, pipe
from relayd.switchboard import AcceptTimeout, SwitchboardError
from relayd.transports.http.request import (
    SMALL_BODY, HttpError, _SEPARATORS, normalise_path, path_and_query, request_headers)
from relayd.transports.http.responses import DONE, ResponseSide, _write_whole
from relayd.transports.http.upload import COMPLETE, OFFERED, ON_LEG, RECEIVING, RequestBody
from relayd.transports.listener.offers import RequestOffer
from relayd.transports.http.counted import Counted
from relayd.wire import hc, http1, sas


class Exchange(Counted, RequestBody, ResponseSide):
    """One HTTP request and its response."""

    def __init__(self, client, head):
        self.client = client
        self.door = client.door
        self.began = self.door.clock.seconds()  # for the end line of a request the relay answers itself
        self.head = head
        self.method = head.method
        self.target = head.target
        self.version = head.version
        self.headers = head.headers
        self.lowered = head.lowered
        self.policy = None  # the entity kind's IRequestPolicy, if it has one
        self.fault_policy = None  # the IKindPolicy whose format relay-side errors use
        self.fault_version = None  # ... and its version ("1.1"/"1.2" for SOAP); None: JSON
        self.pending_body = []  # body bytes held until the listener's leg arrives
        self.address = ""  # the rendezvous address the listener was given
        self.channel = None
        self.rv = None
        self.id = None
        self.timer = None
        connection = head.joined("connection").lower()
        self.close_after = ("close" in connection) or (head.version == "HTTP/1.0" and "keep-alive" not in connection)

    # -- routing and checks -----------------------------------------------------------------

    def start(self):
        door = self.door
        if self.method == "CONNECT":
            raise HttpError(405, "CONNECT is not relayed", close=True)
        if "upgrade" in self.lowered:
            raise HttpError(400, "Upgrade requests are not relayed over HTTP; WebSockets connect to /$hc/{path}",
                            close=True)
        parts = urlsplit(self.target if self.target.startswith("/") else "/" + self.target.split("/", 3)[-1])
        raw_path = parts.path
        path = unquote(raw_path)
        segments = _SEPARATORS.split(path.lstrip("/"))
        dots = next((i for i, seg in enumerate(segments) if seg in (".", "..")), None)
        if dots is not None:
            # dot segments may act only below the entity named by the segments before them
            entity, _ = door.namespace.resolve("/".join(segments[:dots])) if dots else (None, None)
            raw_path = normalise_path(raw_path, entity.path.count("/") + 1 if entity else len(segments),
                                      entity.path if entity else "")
            path = unquote(raw_path)
        entity, suffix = door.namespace.resolve(path.lstrip("/"))
        reply = door.answers and door.answers.answer(self.method, path.strip("/"), entity, suffix, parts.query,
                                                      self.lowered, self.client.secure)
        if reply:  # discovery, listings, runtime information: the relay answers, never a listener
            self.close_after = self.close_after or self._body_expected()
            return self.answer(reply.status, reply.content_type, reply.body)
        if entity is None:
            for policy in door.policies.values():
                version = policy.fault_version(self.head)
                if version is not None:
                    self.fault_policy, self.fault_version = policy, version
                    break
            raise HttpError(404, "no hybrid connection at '%s'" % path.strip("/"), close=self._body_expected())
        self.entity = entity
        query_pairs = parse_qsl(parts.query, keep_blank_values=True)
        self.query_token = next((v for k, v in query_pairs if k.lower() == "sb-hc-token"), None)
        self.request_target = path_and_query(raw_path, parts.query)
        self.via_host = self._via_host()
        reads_first = False
        kind_policy = door.policies.get(entity.kind)
        if kind_policy is not None:
            self.policy = kind_policy.for_request(self, parts.query)
            self.fault_policy, self.fault_version = kind_policy, self.policy.fault_version
            reads_first = self.policy.reads_body_first()
        if not reads_first:
            self.authorize(None)

        # body framing
        try:
            framing, length = http1.body_framing(self.head, door.limits.http_max_body)
        except http1.HeadError as e:
            raise HttpError(e.status, e.message, close=True)
        self.decoder = http1.decoder_for(framing, length)
        self.has_body = self.decoder is not None
        self.small = not self.has_body or (length is not None and length <= SMALL_BODY)
        if self.has_body:
            self._request_to(RECEIVING)
            self._start_body_clock()
        if reads_first:
            self.policy.collect(length)  # check, authorise and route once the body is complete
        else:
            self._route()
        if self.has_body and "100-continue" in self.head.joined("expect").lower():
            self.client.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.client.buf:
            data, self.client.buf = self.client.buf, b""
            if self.decoder is not None:
                self.feed(data)
            else:
                self.client.buf = data
                self.client.transport.pauseProducing()

    def head_token(self):
        """The token that wins over any other, given in the request head: the query's
        ``sb-hc-token`` or the ``ServiceBusAuthorization`` header (None if neither)."""
        return self.query_token or self.lowered.get("servicebusauthorization", [None])[0]

    def sender_known(self):
        """Whether the head already proves a sender with the Send right: a winning token
        (checked by authorize) or a valid token in ``Authorization``."""
        if not self.entity.requires_client_authorization or self.head_token():
            return True
        token = self.lowered.get("authorization", [None])[0]
        if not token:
            return False
        try:
            self._verify(token)
        except sas.AuthError:
            return False  # e.g. the service's own Bearer token
        return True

    def _verify(self, token):
        door = self.door
        host = self.lowered.get("host", [None])[0]
        public = door.settings.public_url
        access.authorize(door.namespace, self.entity, token, sas.SEND,
                         access.candidate_hosts(host, urlsplit(public).hostname if public else None),
                         door.clock.seconds())

    def authorize(self, extra_token):
        """Check the Send right (unless the entity is anonymous); strip the token headers."""
        sba = self.lowered.get("servicebusauthorization", [None])[0]
        drop = {"servicebusauthorization"}
        if self.entity.requires_client_authorization:
            token = self.query_token or sba or extra_token
            if not token and "authorization" in self.lowered:
                token = self.lowered["authorization"][0]
                drop.add("authorization")
            try:
                self._verify(token)
            except sas.AuthError as e:
                raise HttpError(e.status, str(e), close=self._body_expected())
        self.forward_headers = request_headers(self.headers, self.via_host, drop)

    def _route(self):
        """Hand the request to a listener (the kept rendezvous leg, or a balanced listener)."""
        door, entity = self.door, self.entity
        if self.client.leg is not None and self.client.leg_keep and self.client.leg_entity == entity.path.lower():
            self.id = door.switchboard.new_key()
            door.exchanges[self.id] = self
            self._send_on_leg(self.client.leg)
        else:
            self._open_rendezvous()
        self.count_open()
        self._arm_timer()
        if self.small:
            self.body_small = [] if self.has_body else None
            if not self.has_body:
                self._request_complete()

    def _body_expected(self):
        return "content-length" in self.lowered or "transfer-encoding" in self.lowered

    def _via_host(self):
        public = self.door.settings.public_url
        if public:
            return urlsplit(public).netloc
        return self.lowered.get("host", ["relayd"])[0]

    def _open_rendezvous(self):
        door = self.door
        # A bodiless small request goes whole with the offer; a small one with a body later,
        # with its body (_request_complete); a large one is fetched over the listener's leg.
        offer = RequestOffer(
            self.lowered.get("host", [None])[0], self.client.secure,
            head=(self.request_target, self.method, self.forward_headers) if self.small and not self.has_body else None,
            announce=not self.small,
        )
        try:
            self.rv = door.switchboard.open_rendezvous(
                self.entity.path, offer, timeout=self.entity_response_timeout())
        except SwitchboardError as e:
            if e.status == 404:
                raise HttpError(502, "no listener is connected to '%s'" % self.entity.path,
                                close=self._body_expected())
            retry = [("Retry-After", "%d" % e.retry_after)] if e.retry_after is not None else ()
            raise HttpError(e.status, e.message, close=True, headers=retry)
        self._route_to(OFFERED)
        self.id = self.rv.key
        self.address = offer.address
        self.channel = self.rv.listener
        door.exchanges[self.id] = self
        self.rv.result.addCallbacks(self._leg_arrived, self._rendezvous_failed)
        # A bodiless request went out with the offer; a small one with a body goes out when
        # the body is complete (_request_complete); a large one waits for the listener's leg.

    def entity_response_timeout(self):
        return self.entity.response_timeout

    # -- rendezvous leg ---------------------------------------------------------------------

    def _leg_arrived(self, leg):
        self.rv = None
        if self.finished or self.client.closed:
            leg.close(1001, "the HTTP client went away")
            return
        self.client.attach_leg(leg, self.entity.path, keep=not self.small)
        if not self.small:
            self._send_on_leg(leg)

    def _rendezvous_failed(self, failure):
        failure.trap(SwitchboardError)
        self.rv = None
        if self.finished or self.responding:
            return
        e = failure.value
        if isinstance(e, AcceptTimeout):
            self.fail(504, "the listener did not answer within %d seconds" % self.entity_response_timeout())
        else:  # e.g. the entity was deleted meanwhile (404)
            self.fail(e.status, e.message)

    def _send_on_leg(self, leg):
        self._route_to(ON_LEG)
        message = hc.encode_request(self.address, self.id, self.request_target, self.method,
                                          self.forward_headers, self.has_body)
        leg.send_text(message)
        if self.small:
            return  # body (if any) goes as one message when complete
        leg.begin_message(True)
        pending = self.pending_body
        if pending:
            self.pending_body = []
            for chunk in pending:
                leg.frame_data(chunk)
            self.client.transport.resumeProducing()
        if self.request_done:
            leg.end_message()

    # -- ending -----------------------------------------------------------------------------

    def _dispose(self):
        self._let_go()
        self.door.exchanges.pop(self.id, None)
        rv, self.rv = self.rv, None
        if rv is not None:
            rv.withdraw()
        self.door.forget_awaiting(self)

    def _let_go(self):
        """The exchange is over: stop its timers and break the cycles it is part of (the body
        decoder holds bound methods of this exchange, the SOAP helper points back at it), so
        reference counting frees it without waiting for the garbage collector."""
        self.response_state = DONE
        self.count_close()
        self._cancel_timer()
        self._stop_body_clock()
        self.decoder = None
        if self.policy is not None:
            self.policy.release()

    def _dispose_quietly(self):
        if self.id is not None:
            self._dispose()
        else:
            self._let_go()

    def finish(self):
        self._dispose()
        if self.client.leg is not None and not self.client.leg_keep:
            self.client.detach_leg()
        if not self.request_done:
            # the listener answered before the whole request arrived: stop here
            self.client.exchange_done(self, close=True)
            return
        self.client.exchange_done(self, close=self.close_after)

    def fail(self, status, message):
        if self.finished:
            return
        self.answered_with(status)  # before _dispose: the end line carries it (no-op once responding)
        responding = self.responding
        self._dispose()
        if responding:
            self.client.exchange_done(self, close=True)
            return
        self.client.exchange = None
        self.send_error(status, message, close=True)

    def send_error(self, status, message, close, headers=()):
        """A relay-side error: a SOAP fault for SOAP requests, else JSON."""
        self.answered_with(status)
        if self.fault_version is not None:
            addressing = self.policy.addressing() if self.policy is not None else {}
            fault = self.fault_policy.fault(self.fault_version, status, message, addressing)
            self.client.send_fault(fault, close=close, headers=headers, head_only=self.method == "HEAD")
        else:
            self.client.send_error(status, message, close=close, headers=headers, head_only=self.method == "HEAD")

    def abort(self):
        self._dispose()
        self.client.exchange = None
        self.client.closed = True
        pipe.close_after_flush(self.client.transport)

    def leg_lost(self):
        if not self.finished:
            self.fail(502, "the listener's rendezvous connection closed before the response completed")

    def client_lost(self):
        self._dispose()

    # -- for the entity kind's policy (IRequestPolicy calls these) ----------------------------

    def gone(self):
        """True once the exchange has ended or its client has gone."""
        return self.finished or self.client.closed

    def refuse(self, status, message, headers=()):
        """End the exchange with a relay-side error before it was routed; the connection closes."""
        self.client.exchange = None
        self._dispose_quietly()
        self.send_error(status, message, close=True, headers=headers)

    def refuse_and_close(self, status, message, headers=()):
        """A relay-side error while the body is still coming: answer, then close at once."""
        self.send_error(status, message, close=True, headers=headers)
        self.abort()

    def answer_fault(self, fault):
        """Answer with the policy's own error document; the connection stays if it may."""
        self.answered_with(fault.status)
        self.client.exchange = None
        self._dispose_quietly()
        self.client.send_fault(fault, close=False, head_only=self.method == "HEAD")
        self.client.exchange_done(self, close=self.close_after)

    def answer(self, status, content_type, body, headers=()):
        """Answer from the relay itself (e.g. an event handed out: 202); the connection stays if it may."""
        self.answered_with(status)
        self.client.exchange = None
        self._dispose_quietly()
        _write_whole(self.client.transport, status, content_type, body, headers, False, self.method == "HEAD")
        self.client.exchange_done(self, close=self.close_after)

    def answer_error(self, status, message):
        """A relay-side error once the request was read whole; the connection stays if it may."""
        self.client.exchange = None
        self._dispose_quietly()
        self.send_error(status, message, close=False)
        self.client.exchange_done(self, close=self.close_after)

    def forward_body(self, body):
        """Route the request with ``body`` (read whole by the policy) as its body."""
        self.has_body = bool(body)
        self.small = len(body) <= SMALL_BODY
        if not self.small:
            self._request_to(COMPLETE)  # read whole: the leg gets it as one message
            self.pending_body = [body]
        self._route()
        if self.small:
            self.body_small = [body] if body else None
            self._request_complete()
