"""SOAP one-way envelopes published to event entities (``kind = "oneway"`` / ``"multicast"``;
issue 11, docs/events.rst): how NetEventRelayBinding / NetOnewayRelayBinding publishers over
HTTP send, and what WCF one-way calls and zeep's one-way operations expect back.

A POST with a SOAP content type (``text/xml`` = SOAP 1.1, ``application/soap+xml`` = 1.2) to
an event entity is one event, vetted exactly as on a SOAP entity -- it *is* a
:class:`~relayd.transports.http.soap.SoapRequest`, with two changes:

* its size bound is the entity's ``max_message`` (also capped by ``limits.soap_max_bytes`` and
  ``limits.http_max_body``): a declared length over it is a 413 fault at once, a chunked body
  that grows past it a 413 fault when it does;
* once parsed (the hardened parser: no DTD, no entities, depth and size limits) and authorised
  (the token from the query, ``ServiceBusAuthorization`` / ``Authorization`` header, or the
  ``RelayAccessToken`` SOAP header, which is removed), the envelope is published as one event
  (:meth:`~relayd.transports.http.events.EventPolicy.publish_and_answer`): the rewritten
  envelope is the body, the publisher's content type and ``SOAPAction`` are kept.

Envelopes whose token can only be inside them share the SOAP entities' unauthenticated budget
and deadline (``limits.soap_unauthenticated_budget`` / ``soap_unauthenticated_timeout``).
Refusals are SOAP faults in the publisher's version (401/403 no token or no Send right, 413,
400/500 malformed, 502 ``EndpointUnavailable`` for a oneway entity with no listener); success is
``202 Accepted`` with an empty body and ``X-Relayd-Delivered: N``.
"""

from relayd.transports.http.soap import SoapRequest
from relayd.wire.soap import envelope, faults

# The content type of the empty 202 that accepts a one-way envelope, by SOAP version.
ACCEPTED_CONTENT_TYPE = {"1.1": faults.SOAP11_FAULT_CONTENT_TYPE, "1.2": faults.SOAP12_FAULT_CONTENT_TYPE}


def is_soap_post(head):
    """True for a request head that publishes a SOAP envelope."""
    return envelope.is_soap_request(head.first("content-type", ""), head.method)


class SoapEventRequest(SoapRequest):
    """One SOAP envelope published to an event entity: read, vetted and authorised by the SOAP
    entities' rules (``soap_policy``: their budget and parser), then handed to ``events`` (the
    entity's :class:`~relayd.transports.http.events.EventPolicy`)."""

    limit_name = "the entity's max_message"

    def __init__(self, soap_policy, exchange, query, events):
        super().__init__(soap_policy, exchange, query)
        self.events = events

    def _limit(self):
        return min(self.exchange.entity.max_message, super()._limit())

    def deliver(self, body):
        self.events.publish_and_answer(self.exchange, body, (ACCEPTED_CONTENT_TYPE[self.fault_version], b""))
