"""Publishing events over WebSocket (issue 11; docs/events.rst, "Publishing over WebSocket").

Wire protocol: ``sb-hc-action=connect`` on a ``kind = "oneway"`` or ``"multicast"`` entity
opens a publishing channel instead of a rendezvous.

* The handshake needs a token with Send (``sb-hc-token`` or the ``ServiceBusAuthorization``
  header: 401 without one, 403 with one that lacks Send) unless the entity allows anonymous
  senders, and completes at once (101): no listener is needed to open it.
* Every message the publisher sends is one event, handed to the same fan-out as an HTTP
  POST (:meth:`relayd.transports.http.events.EventPolicy.publish_event`), in the order the
  connection sent them.  Its content type is ``application/octet-stream`` for a binary
  message, ``text/plain; charset=utf-8`` for a text one.
* Autobahn assembles a message only up to the entity's ``max_message``; a larger one closes
  the connection with 1009 and a reason naming ``max_message``.
* An event for a ``oneway`` entity no listener is connected to closes the connection with
  :data:`NO_LISTENER_CODE` (1013, "try again later"); a multicast event nobody listens to is
  dropped (counted) and the channel stays open.
"""

from twisted.internet.interfaces import ISSLTransport

from relayd.transports.http.events import ONEWAY
from relayd.transports.listener.roles import Role, authorize
from relayd.wire import sas

# Close code for a oneway event no listener was connected to take (RFC 6455 "try again later").
NO_LISTENER_CODE = 1013
BINARY_TYPE = "application/octet-stream"
TEXT_TYPE = "text/plain; charset=utf-8"


class Publisher(Role):
    """The ``connect`` role on an event entity: each whole message is one event."""

    __slots__ = ("policy", "entity", "target", "base_url")

    def __init__(self, protocol, policy, entity, target, base_url):
        super().__init__(protocol)
        self.policy = policy
        self.entity = entity
        self.target = target  # the requestTarget subscribers see: /{path}{suffix}[?query]
        self.base_url = base_url

    @classmethod
    def connect(cls, protocol, request, entity, suffix, query, token, policy):
        """Check the handshake (Send, unless anonymous publishers are allowed) and bound what
        Autobahn assembles to the entity's ``max_message``.  Opens at once (returns the role)."""
        f = protocol.factory
        host = request.headers.get("host")
        if entity.requires_client_authorization:
            verified = authorize(f, host, entity, token, sas.SEND)
            f.namespace.grants.hold(protocol.transport, entity, verified)  # closed if its rule or key is revoked
        protocol.entity_path = entity.path
        protocol.maxMessagePayloadSize = entity.max_message
        protocol.maxFramePayloadSize = entity.max_message
        target = "/" + entity.path + (suffix or "") + ("?" + query if query else "")
        secure = ISSLTransport.providedBy(protocol.transport)
        return cls(protocol, policy, entity, target, f.base_url(host, secure))

    def too_big(self, size):
        return "the event (%d bytes so far) is larger than the entity's max_message of %d bytes" % (
            size, self.entity.max_message)

    def message(self, payload, is_binary):
        protocol = self.protocol
        if protocol.state != protocol.STATE_OPEN:
            return  # closing: later messages are not events any more
        headers = {"Content-Type": BINARY_TYPE if is_binary else TEXT_TYPE}
        delivered = self.policy.publish_event(protocol.factory.switchboard, self.base_url, self.entity.path,
                                              self.target, headers, payload)
        if not delivered and self.policy.kind == ONEWAY:
            reason = "no listener is connected to '%s' to take the event (events are not stored)" % (
                self.entity.path.encode("utf-8")[:40].decode("utf-8", "ignore"))
            protocol.close(NO_LISTENER_CODE, reason)  # RelayingLeg.close: Autobahn's sendClose refuses 1013
