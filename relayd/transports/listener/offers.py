"""Offers: what a front door asks a listener to do for one sender (:class:`IOffer`).

A door hands an offer to :meth:`relayd.switchboard.Switchboard.open_rendezvous`; the chosen
listener's control channel asks it for its control message (:mod:`relayd.wire.hc`), with the
rendezvous address built on the relay's base URL and the one-time rendezvous key:

* :class:`AcceptOffer` -- a sender waits for a WebSocket rendezvous (the WebSocket sender door,
  the TCP doors): ``{"accept": {"address": ...&sb-hc-action=accept&sb-hc-id=KEY, "id",
  "connectHeaders", "remoteEndpoint"}}``.
* :class:`RequestOffer` -- an HTTP request waits for a listener (the HTTP door):
  ``{"request": {"address": ...&sb-hc-action=request&sb-hc-id=KEY, "id", ...}}``, either the
  whole bodiless request, only the address (the listener fetches the request over its
  rendezvous leg), or nothing yet (the request goes later with its body, ``offer_raw``).
"""

from zope.interface import implementer

from relayd.interfaces import IOffer
from relayd.wire import hc


@implementer(IOffer)
class AcceptOffer:
    """A sender waiting for a WebSocket rendezvous.  ``headers``: the ``connectHeaders``;
    ``suffix``/``query``: what the sender's address had after the entity path; ``peer``: its
    address (an IAddress with host/port), or None."""

    kind = "accept"

    def __init__(self, host, secure, headers, suffix="", query="", peer=None):
        self.host = host
        self.secure = secure
        self.headers = headers
        self.suffix = suffix
        self.query = query
        self.peer = peer

    def message(self, base_url, rendezvous):
        address = hc.rendezvous_address(
            base_url, rendezvous.entity_path, self.suffix, self.query, "accept", rendezvous.key)
        peer = self.peer
        return hc.encode_accept(
            address, rendezvous.id, self.headers,
            getattr(peer, "host", None), getattr(peer, "port", None),
        )


@implementer(IOffer)
class RequestOffer:
    """An HTTP request waiting for a listener.  ``head``: ``(request_target, method,
    headers)`` when the whole (bodiless) request goes with the offer; None for a request
    message with only the address, or -- with ``announce=False`` -- for no message at all yet.
    ``address`` holds the rendezvous address once the message is built."""

    kind = "request"
    address = None

    def __init__(self, host, secure, head=None, announce=True):
        self.host = host
        self.secure = secure
        self.head = head
        self.announce = announce

    def message(self, base_url, rendezvous):
        self.address = hc.rendezvous_address(
            base_url, rendezvous.entity_path, "", "", "request", rendezvous.key)
        if self.head is not None:
            target, method, headers = self.head
            return hc.encode_request(self.address, rendezvous.key, target, method, headers, False)
        if not self.announce:
            return None
        return hc.encode_request(self.address, rendezvous.key)
