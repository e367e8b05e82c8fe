"""The SOAP/HTTP relay: what the HTTP door does differently for entities with ``kind = "soap"``,
as a policy object (:class:`SoapPolicy`, an :class:`~relayd.transports.http.policy.IKindPolicy`).

Requests still travel to listeners by the Hybrid Connections request mechanics
(:mod:`relayd.transports.http`), so ``relayd bridge -H`` and hyco-https serve them.
On top of that, for a SOAP entity:

* a POST with a SOAP content type (``text/xml`` = SOAP 1.1, ``application/soap+xml`` = 1.2)
  is read whole (at most ``limits.soap_max_bytes``), parsed with the hardened parser of
  :mod:`relayd.wire.soap.envelope` (no DTD, no entities, no network, depth and size
  limits), authorised with the token from the query, the ``ServiceBusAuthorization`` /
  ``Authorization`` header or the ``RelayAccessToken`` SOAP header (which is removed), and
  forwarded otherwise unchanged;
* relay-side failures become SOAP faults in the client's SOAP version, with WS-Addressing
  ``RelatesTo`` when the request had a ``MessageID`` (see :mod:`relayd.wire.soap.faults`);
* ``GET ...?wsdl`` / ``?wsdl=...`` / ``?xsd=...`` / ``?singleWsdl`` responses come back with
  ``soap:address``, ``soap12:address``, ``wsdl:import`` and ``xsd:import`` locations rewritten
  to the relay's public address;
* anything else (plain XML or JSON over HTTP, WebHttpRelayBinding style) is relayed as is.

Bounds for envelopes read before their sender is known
------------------------------------------------------
A token in the query or the ``ServiceBusAuthorization`` header (which win over the envelope's)
is checked from the request head, before any of the body is read (a bad one is a fault at
once).  Without one, on an entity that requires client authorization, and unless the
``Authorization`` header holds a valid Send token, the sender is unknown until the
``RelayAccessToken`` SOAP header, inside the body, has been read: such bodies share one
budget of ``limits.soap_unauthenticated_budget`` bytes across all connections (a declared length is reserved whole when the head arrives; a chunked body as it
grows), and each must arrive whole within ``limits.soap_unauthenticated_timeout`` seconds.
Past the budget the request gets a 503 fault and the connection closes; past the deadline a
408 fault.  The reservation is given back once the envelope is parsed and its token checked,
or when the exchange ends in any other way.

Envelopes larger than ``THREAD_PARSE_THRESHOLD`` are parsed in the reactor's thread pool (at
most ``PARSE_THREADS`` at a time; lxml releases the GIL while it builds the tree), so a large
envelope does not stall the other connections.
"""

import re
from urllib.parse import parse_qsl, urlsplit

from twisted.internet import defer, threads
from twisted.logger import Logger
from zope.interface import implementer

from relayd.transports.http.policy import IKindPolicy, IRequestPolicy
from relayd.transports.http.request import HttpError
from relayd.wire.soap import envelope, faults, wsdl

MAX_WSDL = 16 * 1024 * 1024
THREAD_PARSE_THRESHOLD = 256 * 1024
PARSE_THREADS = 2
OVER_BUDGET = ("the relay is reading too many SOAP envelopes from unauthenticated senders "
               "(limits.soap_unauthenticated_budget); retry later, or send the token in the "
               "ServiceBusAuthorization header")
# Added to a 401 for an envelope that carried no token: where a SOAP sender puts it.
NO_TOKEN_HINT = ("; a SOAP sender may instead put it in the envelope's RelayAccessToken header "
                 "(namespace %s)" % envelope.RELAY_CONNECT_NS)
# Seconds a sender refused for the unauthenticated budget is told to wait (Retry-After).
OVER_BUDGET_RETRY = (("Retry-After", "1"),)
_WSDL_KEYS = {"wsdl", "xsd", "singlewsdl"}

log = Logger(namespace="relayd.soap")


class Budget:
    """Bytes shared by all connections for envelopes read before authentication."""

    def __init__(self, total):
        self.total = total
        self.used = 0

    def take(self, n):
        if self.used + n > self.total:
            return False
        self.used += n
        return True

    def give(self, n):
        self.used -= n


class EnvelopeParser:
    """Parses envelopes: small ones at once, large ones in the reactor's thread pool with at
    most ``PARSE_THREADS`` in flight.  ``reactor`` without a thread pool (a test Clock) parses
    everything at once."""

    def __init__(self, reactor, threshold=THREAD_PARSE_THRESHOLD, threads_=PARSE_THREADS):
        self.reactor = reactor
        self.threshold = threshold
        self.slots = defer.DeferredSemaphore(threads_)

    def parse(self, body, content_type, soap_action, max_bytes):
        pool = getattr(self.reactor, "getThreadPool", None)
        if len(body) <= self.threshold or pool is None:
            return defer.maybeDeferred(envelope.parse_request, body, content_type, soap_action,
                                       max_bytes=max_bytes)
        return self.slots.run(threads.deferToThreadPool, self.reactor, pool(), envelope.parse_request,
                              body, content_type, soap_action, max_bytes=max_bytes)


@implementer(IKindPolicy)
class SoapPolicy:
    """The rules of ``kind = "soap"`` entities: one per HTTP door, holding what all SOAP
    exchanges share (the unauthenticated budget, the envelope parser)."""

    kind = "soap"

    def __init__(self, limits, reactor):
        self.limits = limits
        self.budget = Budget(limits.soap_unauthenticated_budget)
        self.parser = EnvelopeParser(reactor)

    def for_request(self, exchange, query):
        return SoapRequest(self, exchange, query)

    def fault_version(self, head):
        if head.method != "POST":
            return None
        return envelope.soap_version_for_content_type(head.first("content-type", ""))

    def fault(self, version, status, message, addressing):
        return fault_for(version, status, message, addressing)


def fault_for(version, status, message, addressing):
    """The SOAP ``version`` fault for a relay-side error with HTTP ``status`` (SOAP entities,
    and SOAP envelopes published to event entities)."""
    ctor = _BY_STATUS.get(status)
    if ctor is not None:
        return ctor(version, message, **addressing)
    return faults.build_fault(version, "Receiver" if status >= 500 else "Sender", message,
                              http_status=status, **addressing)


@implementer(IRequestPolicy)
class SoapRequest:
    """One exchange on a SOAP entity; subclasses change the size bound (:meth:`_limit`, named
    by ``limit_name``) and what a vetted envelope becomes (:meth:`deliver`)."""

    max_rewritten = MAX_WSDL
    limit_name = "the relay's limit"

    def __init__(self, policy, exchange, query):
        self.policy = policy
        self.exchange = exchange
        self.collecting = False
        self.request = None
        keys = {k.lower() for k, _ in parse_qsl(query, keep_blank_values=True)}
        self.rewrites = exchange.method == "GET" and bool(keys & _WSDL_KEYS)
        self.parts = []
        self.size = 0
        self.unauthenticated = False  # reading an envelope whose token can only be inside it
        self.budget = policy.budget
        self.reserved = 0  # bytes of that budget held by this exchange
        self.fault_version = policy.fault_version(exchange.head)

    # -- requests ------------------------------------------------------------------------------

    def reads_body_first(self):
        """A SOAP POST is read whole, parsed and authorised before it is routed."""
        return self.fault_version is not None

    def collect(self, length):
        limit = self._limit()
        if length is not None and length > limit:
            raise HttpError(413, "the SOAP envelope (%d bytes) is larger than %s of %d bytes"
                            % (length, self.limit_name, limit), close=True)
        ex = self.exchange
        if ex.head_token():
            ex.authorize(None)  # the token that wins over one in the envelope: check it now
        elif not ex.sender_known():
            self.unauthenticated = True
            if length is not None and not self._reserve(length):
                raise HttpError(503, OVER_BUDGET, close=True, headers=OVER_BUDGET_RETRY)
            ex.limit_body_time(self.policy.limits.soap_unauthenticated_timeout)
        self.collecting = True
        if not ex.body_pending():
            self.complete()

    def _reserve(self, n):
        if not self.budget.take(n):
            return False
        self.reserved += n
        return True

    def release(self):
        """Give back this exchange's share of the unauthenticated budget (idempotent), and let
        go of the exchange."""
        if self.reserved:
            self.budget.give(self.reserved)
            self.reserved = 0
        self.exchange = None

    def _limit(self):
        limits = self.policy.limits
        return min(limits.soap_max_bytes, limits.http_max_body)

    def data(self, data):
        self.size += len(data)
        ex = self.exchange
        if self.size > self._limit():
            self.collecting = False
            self.parts = []
            ex.refuse_and_close(413, "the SOAP envelope is larger than %s of %d bytes" % (self.limit_name, self._limit()))
            return
        if self.unauthenticated and self.size > self.reserved and not self._reserve(self.size - self.reserved):
            self.collecting = False
            self.parts = []
            ex.refuse_and_close(503, OVER_BUDGET, headers=OVER_BUDGET_RETRY)
            return
        self.parts.append(data)

    def complete(self):
        self.collecting = False
        ex = self.exchange
        body, self.parts = b"".join(self.parts), []
        d = self.policy.parser.parse(body, ex.head.first("content-type", ""), ex.head.first("soapaction"),
                                     self.policy.limits.soap_max_bytes)
        del body
        d.addCallbacks(self._parsed, self._not_parsed)
        d.addErrback(self._failed)

    def _failed(self, failure):
        log.failure("SOAP request handling failed unexpectedly", failure)
        if not self._gone():
            self.exchange.refuse(500, "internal error in the relay")

    def _gone(self):
        return self.exchange is None or self.exchange.gone()

    def _not_parsed(self, failure):
        failure.trap(envelope.SoapError)
        if self._gone():
            self.release()
            return
        self._parsed(None, failure.value)

    def _parsed(self, request, error=None):
        if self._gone():
            self.release()
            return
        ex = self.exchange
        try:
            if error is not None:
                raise error
            self.request = request
            ex.authorize(self.request.relay_token or None)
            if self.reserved:
                self.budget.give(self.reserved)
                self.reserved = 0
            self.unauthenticated = False
            self.deliver(self.request.body_bytes)
        except envelope.SoapError as e:
            ex.answer_fault(faults.from_error(e, **self.addressing()))
        except HttpError as e:
            message = e.message
            if e.status == 401 and self.request is not None and not self.request.relay_token:
                message += NO_TOKEN_HINT
            ex.refuse(e.status, message)

    def deliver(self, body):
        """The envelope ``body`` (its ``RelayAccessToken`` header removed) passed every check:
        relay it to a listener."""
        self.exchange.forward_body(body)

    def addressing(self):
        req = self.request
        if req is not None and req.message_id:
            kw = {"relates_to": req.message_id}
            if getattr(req, "addressing_ns", None):
                kw["addressing_ns"] = req.addressing_ns
            return kw
        return {}

    # -- responses -----------------------------------------------------------------------------

    def rewrite(self, payload, headers):
        if not self.rewrites or not payload:
            return payload
        ex = self.exchange
        scheme = "https" if ex.client.secure else "http"
        public = ex.door.settings.public_url
        netloc = urlsplit(public).netloc if public else ex.head.first("host", "localhost")
        if public and urlsplit(public).scheme in ("https", "wss"):
            scheme = "https"
        base = "%s://%s/%s" % (scheme, netloc, ex.entity.path)
        try:
            return wsdl.rewrite_locations(payload, base, own_prefixes(payload))
        except wsdl.WsdlError as e:
            log.info("not rewriting the listener's metadata for {path}: {err}", path=ex.entity.path, err=e)
            return payload


_ADDRESS = re.compile(rb'<[\w.-]*:?address\s[^>]*location\s*=\s*["\'](https?://[^/"\'?#]+)', re.I)
_ANY_URL = re.compile(rb'(?:location|schemaLocation)\s*=\s*["\'](https?://[^/"\'?#]+)', re.I)
_LOOPBACK = re.compile(rb"^https?://(localhost|127\.[0-9.]+|\[::1\])(:\d+)?$", re.I)


def own_prefixes(document):
    """The scheme://host:port of the listener's own service: the hosts of its soap:address /
    soap12:address elements, plus any loopback host.  Other absolute URLs (e.g. a schema on
    www.w3.org) are left alone."""
    prefixes = {m.group(1).decode("ascii", "replace") for m in _ADDRESS.finditer(document)}
    prefixes |= {m.group(1).decode("ascii", "replace") for m in _ANY_URL.finditer(document)
                 if _LOOPBACK.match(m.group(1))}
    return sorted(prefixes) or ["http://localhost", "http://127.0.0.1"]


_BY_STATUS = {
    400: faults.malformed,
    401: faults.unauthorized,
    403: faults.forbidden,
    404: faults.unknown_address,
    413: faults.too_large,
    502: faults.no_listener,
    504: faults.timeout,
}
