"""Writing to the HTTP client: relay-side errors (JSON, or a SOAP fault), and the listener's
response -- its head, then its body whole (``Content-Length``) or streamed (chunked; in
HTTP/1.0 ended by the close).

The response half of an exchange is an explicit state machine (:class:`ResponseSide`)::

    WAITING --no body--------------------------------------> DONE
    WAITING --body over the control channel--> WHOLE ------> DONE   (one binary message)
    WAITING --body over the leg, rewritten---> BUFFERING --> DONE   (WSDL/XSD: whole, then sent)
    WAITING --body over the leg--------------> STREAMING --> DONE   (chunks as they come)

Any state goes to DONE when the exchange ends otherwise (error, client gone, timeout).
"""

import json
import re

from twisted.logger import Logger
from twisted.web.http import RESPONSES

from relayd import access, pipe, states
from relayd.transports.http.request import NOT_FORWARDED

RESPONSE_SKIP = NOT_FORWARDED | {"via"}
_NOT_A_NAME = re.compile(r"[:\r\n ]")  # a header name with one of these is dropped

# response states
WAITING, WHOLE, BUFFERING, STREAMING, DONE = "waiting", "whole", "buffering", "streaming", "done"
_TRANSITIONS = {
    WAITING: {WHOLE, BUFFERING, STREAMING, DONE},
    WHOLE: {DONE},
    BUFFERING: {DONE},
    STREAMING: {DONE},
    DONE: {DONE},
}

# The HTTP door's one logger, at module level: a Logger reached through an instance records that
# instance as the event's log_source, and an event kept by an observer would then keep the
# connection alive.
log = Logger(namespace="relayd.transports.http")


def response_head(status, description, headers, via_host, length=None, chunked=False, close=False):
    """The HTTP/1.1 response head for a listener's response."""
    phrase = description or RESPONSES.get(status, b"").decode("ascii") or "Status"
    phrase = phrase.replace("\r", " ").replace("\n", " ")
    lines = ["HTTP/1.1 %d %s" % (status, phrase)]
    via = None
    for name, value in headers.items():
        if not isinstance(name, str) or not name or _NOT_A_NAME.search(name):
            continue
        low = name.lower()
        if low == "via":
            via = str(value)
            continue
        if low in RESPONSE_SKIP:
            continue
        values = value if isinstance(value, list) else [value]
        for v in values:
            v = str(v)
            if "\r" in v or "\n" in v:
                v = v.replace("\r", " ").replace("\n", " ")
            lines.append("%s: %s" % (name, v))
    lines.append("Via: %s1.1 %s" % (via + ", " if via else "", via_host))
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append("Content-Length: %d" % length)
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _write_whole(transport, status, content_type, body, headers, close, head_only=False):
    phrase = RESPONSES.get(status, b"Error").decode("ascii")
    head = ["HTTP/1.1 %d %s" % (status, phrase), "Content-Type: %s" % content_type,
            "Content-Length: %d" % len(body)]
    head += ["%s: %s" % h for h in headers]
    if close:
        head.append("Connection: close")
    transport.write(("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + (b"" if head_only else body))
    if close:
        pipe.close_after_flush(transport)


def write_error(transport, status, message, close=False, headers=(), refusals=None, head_only=False):
    """A relay-side error as ``{"error": {code, message, trackingId}}``; logged through
    ``refusals`` (a relayd.logs.RateLimitedLog: a storm from one peer is summed up) when given.
    ``head_only`` (the answer to a HEAD): the head GET would get, without the body."""
    tracking = access.tracking_id()
    body = json.dumps({"error": {"code": status, "message": message, "trackingId": tracking}}).encode()
    line, fields = "HTTP relay answered {status}: {message} (tracking {tracking})", dict(
        status=status, message=message, tracking=tracking)
    if refusals is None:
        log.info(line, **fields)
    else:
        refusals.emit(("HTTP %d" % status, getattr(transport.getPeer(), "host", "-")), line, **fields)
    _write_whole(transport, status, "application/json", body, headers, close, head_only)


def write_fault(transport, fault, close=True, headers=(), head_only=False):
    """A relay-side error as a SOAP fault (:mod:`relayd.wire.soap.faults`); ``head_only`` as
    for :func:`write_error`."""
    log.info("SOAP relay answered a fault, HTTP {status}", status=fault.status)
    _write_whole(transport, fault.status, fault.content_type, fault.body, headers, close, head_only)


class ResponseSide:
    """The listener's response to one exchange (mixed into :class:`Exchange`, which provides
    ``client``, ``door``, ``via_host``, ``version``, ``close_after``, ``policy``, ``timer``,
    ``entity_response_timeout``, ``finish``/``fail``/``abort``; :class:`~relayd.transports.http.counted.Counted`'s
    ``answered_with``)."""

    response_state = WAITING
    listener_response = None  # the hc.Response whose body is still to come
    response_buffer = None

    # -- response deadline (limits: the entity's response_timeout) ---------------------------

    def _arm_timer(self):
        timer = self.timer
        if timer is not None and timer.active():
            timer.reset(self.entity_response_timeout())  # later: no reordering of the reactor's timers
        else:
            self.timer = self.door.clock.callLater(self.entity_response_timeout(), self._timed_out)

    def _touch(self):
        if self.timer is not None and self.timer.active():
            self.timer.reset(self.entity_response_timeout())

    def _cancel_timer(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _timed_out(self):
        self.timer = None
        if self.responding:
            self.abort()  # an ongoing response went idle
        else:
            self.fail(504, "the listener did not answer within %d seconds" % self.entity_response_timeout())

    def _response_to(self, state):
        self.response_state = states.step(_TRANSITIONS, "HTTP exchange: response", self.response_state, state)

    @property
    def responding(self):
        return self.response_state != WAITING

    @property
    def finished(self):
        return self.response_state == DONE

    def response_start(self, response, via_control):
        """The listener's :class:`relayd.wire.hc.Response` arrived (on a control channel when
        ``via_control``, else on the exchange's rendezvous)."""
        if self.response_state != WAITING:
            return
        self.answered_with(response.status_code)
        transport = self.client.transport
        if not response.body:
            transport.write(self._head_of(response, length=0))
            self.finish()
            return
        self._arm_timer()  # the body is to come within the response timeout
        self.listener_response = response
        if via_control:
            self._response_to(WHOLE)
        elif self.policy is not None and self.policy.rewrites:
            self._response_to(BUFFERING)  # a WSDL/XSD: rewritten whole, then sent with its length
            self.response_buffer = []
            self.response_buffered = 0
        else:
            self._response_to(STREAMING)
            if self.version == "HTTP/1.0":
                self.close_after = True  # no chunked encoding in HTTP/1.0: the close ends the body
            transport.write(self._head_of(response, chunked=self._chunked()))

    def _head_of(self, response, **framing):
        """The head the client gets for the listener's ``response``; ``framing``: ``length=``
        or ``chunked=``."""
        return response_head(response.status_code, response.status_description, response.response_headers,
                             self.via_host, close=self.close_after, **framing)

    def _chunked(self):
        return self.version != "HTTP/1.0"

    def response_body_whole(self, payload):
        if self.policy is not None:
            payload = self.policy.rewrite(payload, self.listener_response.response_headers)
        if self.conn is not None:
            self.conn.down.n += len(payload)
        self.client.transport.write(self._head_of(self.listener_response, length=len(payload)))
        self.client.transport.write(payload)
        self.finish()

    def response_body_begin(self):
        pass

    def response_body_data(self, data):
        if self.response_state == BUFFERING:
            self.response_buffered += len(data)
            if self.response_buffered > self.policy.max_rewritten:
                self.fail(502, "the listener's WSDL is larger than %d bytes" % self.policy.max_rewritten)
                return
            self._arm_timer()
            self.response_buffer.append(data)
            return
        if self.response_state != STREAMING or not data:
            return
        if self.conn is not None:
            self.conn.down.n += len(data)
        self._touch()
        if self._chunked():
            self.client.transport.write(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            self.client.transport.write(data)

    def response_body_end(self):
        if self.response_state == BUFFERING:
            body, self.response_buffer = b"".join(self.response_buffer), None
            self.response_body_whole(body)
        elif self.response_state == STREAMING:
            if self._chunked():
                self.client.transport.write(b"0\r\n\r\n")
            self.finish()
