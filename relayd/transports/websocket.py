"""The Hybrid Connections WebSocket door (Autobahn): ``/$hc/{path}[/suffix]?sb-hc-action=...``.

Wire protocol (Azure Relay Hybrid Connections, relayd flavour): ``sb-hc-action`` names the
socket's role.

* ``listen`` -- a listener's control channel (:mod:`relayd.transports.listener.control`).
* ``accept`` / ``request`` with ``sb-hc-id=KEY`` -- a listener's rendezvous leg
  (:mod:`relayd.transports.listener.legs`).
* ``connect`` -- a sender, this module's door.  Needs a token with Send (``sb-hc-token`` or
  the ``ServiceBusAuthorization`` header) unless the entity allows anonymous senders.  The
  handshake stays open until a listener accepts (then 101, with the subprotocol the listener's
  leg chose if the sender offered it), rejects (the listener's status) or the accept deadline
  passes (504); past the pending-rendezvous caps it is refused at once with 503 and
  Retry-After.  The listener's ``accept`` message carries every header the sender sent
  (``connectHeaders``, without extensions and tokens), the path suffix and query, and the
  sender's address.  What the sender sends before its handshake completes is kept, up to
  ``PREOPEN_BUFFER_MAX`` bytes, then the relay stops reading it until then.
  On an event entity (``kind = "oneway"`` / ``"multicast"``) ``connect`` opens a publishing
  channel instead (:mod:`relayd.transports.events_ws`).

After pairing, frames are relayed as they arrive (see :mod:`relayd.pipe`).  Handshake
errors are HTTP 400/401/403/404/500 with a tracking id in the status description.
"""

from urllib.parse import unquote, urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from zope.interface import implementer

from relayd import access, pipe
from relayd.interfaces import IClosable
from relayd.logs import peer_host
from relayd.namespace import Entity
from relayd.switchboard import SwitchboardError
from relayd.transports.autobahn_server import (
    HANDSHAKE_LEFTOVERS, HANDSHAKE_REQUEST, ClockTimer, LeanServerProtocol, release,
)
from relayd.transports.events_ws import Publisher
from relayd.transports.listener.control import ControlChannel
from relayd.transports.listener.legs import RelayingLeg, RendezvousLeg, splice_sender
from relayd.transports.listener.offers import AcceptOffer
from relayd.transports.listener.roles import Denied, Role, authorize, param
from relayd.wire import sas, wsframe
from relayd.wire.hc import connect_headers, raw_headers, strip_sb_params

HC_PREFIX = "/$hc/"
ACTIONS = ("listen", "connect", "accept", "request")
# Bytes a sender may send before its handshake has completed (it waits for a listener);
# beyond this the relay stops reading it until the handshake ends.
PREOPEN_BUFFER_MAX = 64 * 1024


class Sender(Role):
    """The ``connect`` role: waits in its handshake for a listener, then splices with its leg."""

    __slots__ = ("rendezvous", "accept_leg", "_preopen_held")

    relays = True

    def __init__(self, protocol):
        super().__init__(protocol)
        self.rendezvous = None
        self.accept_leg = None
        self._preopen_held = False

    def connect(self, request, entity, suffix, token):
        """Ask the switchboard for a listener.  Returns the Deferred that completes the
        handshake (with the subprotocol the listener's leg chose) or refuses it."""
        protocol = self.protocol
        f = protocol.factory
        dropped_authorization = False
        if entity.requires_client_authorization:
            verified = authorize(f, request.headers.get("host"), entity, token, sas.SEND)
            f.namespace.grants.hold(protocol.transport, entity, verified)  # closed if its rule or key is revoked
            dropped_authorization = not (
                param(request, "sb-hc-token") or "servicebusauthorization" in request.headers
            )
        protocol.entity_path = entity.path  # no payload limits: the factory's 0 (no limit) applies
        transport = protocol.transport
        offer = AcceptOffer(
            request.headers.get("host"), ISSLTransport.providedBy(transport),
            connect_headers(raw_headers(protocol.http_request_data), dropped_authorization),
            suffix, urlsplit(protocol.http_request_uri).query, transport.getPeer(),
        )
        release(protocol, HANDSHAKE_REQUEST)  # it may wait long for a listener: keep only the offer
        # The accept deadline (switchboard) bounds this handshake from here on.
        if protocol.openHandshakeTimeoutCall is not None:
            protocol.openHandshakeTimeoutCall.cancel()
            protocol.openHandshakeTimeoutCall = None
        try:
            rv = f.switchboard.open_rendezvous(entity.path, offer, param(request, "sb-hc-id"))
        except SwitchboardError as e:
            if e.retry_after is not None:  # 503: too many senders waiting (see failHandshake)
                protocol._deny_headers = [("Retry-After", "%d" % e.retry_after)]
            raise Denied(e.status, e.message)
        self.rendezvous = rv
        offered = list(request.protocols)

        def paired(leg):
            self.rendezvous = None
            self.accept_leg = leg
            chosen = leg.selected_protocol
            return chosen if chosen in offered else None

        def failed(failure):
            self.rendezvous = None
            failure.trap(SwitchboardError)
            e = failure.value
            raise ConnectionDeny(e.status, access.with_tracking(e.message))

        return rv.result.addCallbacks(paired, failed)

    def received_before_open(self, data):
        if self.rendezvous is None:
            return False
        # Waiting for a listener: what the sender sends now is processed once the handshake
        # completes (Autobahn does that from its buffer).  Keep it, bounded.
        protocol = self.protocol
        protocol.data += data
        if len(protocol.data) > PREOPEN_BUFFER_MAX and not self._preopen_held:
            self._preopen_held = True
            pipe.hold_reading(protocol.transport, pipe.HELD_BY_HANDSHAKE)
        return True

    def opened(self):
        protocol = self.protocol
        if self._preopen_held:
            self._preopen_held = False
            pipe.release_reading(protocol.transport, pipe.HELD_BY_HANDSHAKE)
        leg, self.accept_leg = self.accept_leg, None
        splice_sender(protocol, leg)  # both become relayd.splice data legs

    def lost(self):
        leg, self.accept_leg = self.accept_leg, None
        if leg is not None:
            # paired, but this connection ended before its handshake completed (it failed
            # after pairing, or the sender went away): the listener's leg would stay open
            # unpaired for ever
            leg.close(wsframe.CLOSE_GOING_AWAY, "the sender went away before its connection was opened")
        rv, self.rendezvous = self.rendezvous, None
        if rv is not None and not rv.done:
            rv.cancel()


_handshake_log = Logger(namespace="relayd.transports.websocket.HybridProtocol")


@implementer(IClosable)
class HybridProtocol(RelayingLeg, LeanServerProtocol, WebSocketServerProtocol):
    """One WebSocket on the HC door.  Autobahn builds one class for every socket; onConnect
    routes the handshake to the socket's :class:`~relayd.transports.listener.roles.Role`
    (ControlChannel, Sender or RendezvousLeg), which gets the connection's events from then
    on.  The protocol itself is the data leg a door splices (RelayingLeg)."""

    _log = Logger()

    role = None

    # -- handshake ----------------------------------------------------------------------

    def onConnect(self, request, read_through=True):
        try:
            subprotocol = self._route(request, read_through)
            # a Logger without a source: an event must not keep the protocol alive (Twisted buffers
            # events until logging begins; tests/integration/test_http_door_gc.py)
            _handshake_log.debug("HC handshake on {path} from {peer} accepted", path=request.path, peer=self.peer)
            return subprotocol
        except Denied as e:
            self._deny(e, request)
        except Exception:
            self._log.failure("HC handshake failed unexpectedly")
            raise ConnectionDeny(500, access.with_tracking("internal error in the relay"))

    def _denied_later(self, failure, request):
        if failure.check(Denied):
            self._deny(failure.value, request)
        return failure  # a sender's own refusals (ConnectionDeny) go on to Autobahn as before

    def _deny(self, e, request):
        """Log and count a refused handshake: ConnectionDeny with the status and a tracking id."""
        tracking = access.tracking_id()
        action = request.params.get("sb-hc-action", ["?"])[0]
        self._refusal_logged = True
        self.factory.refusals.refused(
            ("HC " + action[:20], e.status, peer_host(self.peer)),
            "HC {action} on {path} from {peer} denied: {status} {message} (tracking {tracking})",
            action=action, path=request.path,
            peer=self.peer, status=e.status, message=e.message, tracking=tracking,
        )
        raise ConnectionDeny(e.status, access.with_tracking(e.message, tracking))

    _deny_headers = None
    _refusal_logged = False
    _counted = None  # (listener?, entity path) once routed: a refusal is counted (relayd.traffic)

    def failHandshake(self, reason, code=400, responseHeaders=None):
        """Autobahn's refusal of a handshake (ConnectionDeny carries no headers): adds the
        headers a refusal needs, e.g. Retry-After with a 503."""
        if self._deny_headers:
            responseHeaders = list(responseHeaders or ()) + self._deny_headers
        # Logged once, rate-limited (a storm of refusals must not flood the log), instead of
        # Autobahn's two lines per refusal.
        if not self._refusal_logged:
            self.factory.refusals.refused(("HC handshake", code, peer_host(self.peer)),
                                          "HC handshake from {peer} refused: {code} {reason}",
                                          peer=self.peer, code=code, reason=access.one_line(reason, 200))
        if self._counted is not None and self.factory.traffic is not None:
            self.factory.traffic.refused(*self._counted, status=code)
        self.wasNotCleanReason = reason
        self.sendHttpErrorResponse(code, reason, responseHeaders)
        self.wasClean = True  # an orderly refusal: no "dropping connection" warning
        self.dropConnection(abort=False)

    def _take_role(self, role):
        self.role = role
        self.relays = role.relays

    def _route(self, request, read_through=True):
        f = self.factory
        path = unquote(request.path)
        if not path.startswith(HC_PREFIX):
            raise Denied(404, "WebSocket paths start with /$hc/ followed by the hybrid connection path")
        rel = path[len(HC_PREFIX):]
        action = (param(request, "sb-hc-action") or "").lower()
        if action not in ACTIONS:
            raise Denied(400, "sb-hc-action must be listen, connect or accept, got %r" % action)
        if action in ("accept", "request"):
            role, subprotocol = RendezvousLeg.arrive(self, request, action)
            self._take_role(role)
            return subprotocol
        entity, suffix = f.namespace.resolve(rel)
        reader = f.namespace.read_through if read_through else None
        if entity is None and reader is not None:  # clustered: made on another node a moment ago?
            # the request is held only until the read's answer, not through the routing after it
            return reader(rel).addCallback(lambda _: self.onConnect(request, read_through=False))
        token = sas.extract_token(param(request, "sb-hc-token"), request.headers)
        if entity is None and action == "listen" and f.namespace.create_on_listen and rel:
            entity = self._create_on_listen(rel, token, request)
            suffix = ""
        if entity is None:
            raise Denied(404, "no hybrid connection at '%s'" % rel.strip("/"))
        self._counted = (action == "listen", entity.path)
        if action == "listen":
            channel = ControlChannel.listen(self, request, entity, token)
            if isinstance(channel, defer.Deferred):  # clustered: the registry decides (relayd.cluster)
                # only here does the errback hold the request: a waiting sender's Deferred must not
                # (its ConnectionRequest is let go once routed: tests/integration/test_rendezvous_memory.py)
                return channel.addCallback(self._take_role).addErrback(self._denied_later, request)
            self._take_role(channel)
            return None
        policy = f.event_policies.get(entity.kind)
        if policy is not None:  # an event entity: a publishing channel (events_ws), no rendezvous
            query = strip_sb_params(urlsplit(self.http_request_uri).query)
            self._take_role(Publisher.connect(self, request, entity, suffix, query, token, policy))
            return None
        sender = Sender(self)
        self._take_role(sender)
        return sender.connect(request, entity, suffix, token)

    def _create_on_listen(self, rel, token, request):
        path = rel.strip("/")
        candidate = Entity(path)
        verified = authorize(self.factory, request.headers.get("host"), candidate, token, sas.MANAGE)
        self._log.info("creating hybrid connection {path} on first listen (rule {rule})",
                       path=path, rule=verified.rule.name)
        try:
            return self.factory.namespace.add(candidate)
        except Exception as e:
            raise Denied(400, str(e))

    # -- events, handed to the role -------------------------------------------------------

    def dataReceived(self, data):
        if self.state == self.STATE_CONNECTING and self.role is not None and self.role.received_before_open(data):
            return
        super().dataReceived(data)

    def onOpen(self):
        # Autobahn reads none of the handshake once open (it has sent the 101 and only frames
        # follow); the role took what it needs in onConnect.
        release(self, HANDSHAKE_LEFTOVERS)
        self.role.opened()

    def _max_message_size_exceeded(self, msg_size, max_msg_size, reason):
        # Autobahn's (private) hook for a message over maxMessagePayloadSize: a publisher's
        # close reason names the entity's max_message (pinned by
        # tests/integration/test_events_websocket.py::test_oversize_event_closes_1009_others_unaffected)
        too_big = getattr(self.role, "too_big", None)
        super()._max_message_size_exceeded(msg_size, max_msg_size, too_big(msg_size) if too_big else reason)

    def onMessage(self, payload, isBinary):
        self.role.message(payload, isBinary)

    def connectionLost(self, reason):
        try:
            if self.role is not None:
                self.role.lost()
            self._leg_lost()
        finally:
            super().connectionLost(reason)
            self._break_cycles()

    def _break_cycles(self):
        """Drop the references that tie a closed protocol into cycles, so its memory (and its
        transport's) returns at once instead of at the next full garbage collection."""
        self.partner = None
        self._on_lost = None
        self.role = None
        # Autobahn resolves is_closed with the protocol itself: protocol -> Deferred -> protocol.
        self.is_closed = defer.succeed(None)
        self.is_open = defer.succeed(None)
        # Timers Autobahn leaves armed after the TCP connection is gone hold the protocol (a
        # bound method) until they fire, and are held by it.
        for name in ("closeHandshakeTimeoutCall", "serverConnectionDropTimeoutCall"):
            call = getattr(self, name, None)
            if call is not None:
                try:
                    call.cancel()
                except Exception:
                    pass
                setattr(self, name, None)


class HybridFactory(WebSocketServerFactory):
    """Shared state of the HC door: namespace, switchboard, settings.

    Its protocol reads Autobahn's settings from it, and Autobahn's timers run on its clock
    (see :mod:`relayd.transports.autobahn_server`)."""

    protocol = HybridProtocol

    def __init__(self, namespace, switchboard, settings, clock):
        super().__init__(url=None, server="relayd", reactor=clock)
        self._batched_timer = ClockTimer(clock)
        self.namespace = namespace
        self.switchboard = switchboard
        self.settings = settings
        self.limits = settings.limits
        self.public_url = settings.public_url
        # clustered: rendezvous legs go to this node's own address, not to a shared one (a load
        # balancer, relayd serve --workers' port) that could hand them to another node
        self.node_url = settings.cluster.node_url if getattr(settings, "cluster", None) else None
        self.clock = clock
        self.refusals = access.RefusalLog(HybridProtocol._log, clock, self.limits.refusal_log_burst,
                                          self.limits.refusal_log_interval)
        self.response_router = None  # IResponseRouter: see set_response_router
        self.traffic = None  # the relay's relayd.traffic.Traffic (set by the relay service)
        self.event_policies = {}  # entity kind -> EventPolicy, set by the HTTP door: publishers' fan-out
        self.setProtocolOptions(
            perMessageCompressionAccept=lambda offers: None,
            openHandshakeTimeout=self.limits.open_handshake_timeout,
            closeHandshakeTimeout=5,
            maxConnections=self.limits.max_connections,
            utf8validateIncoming=True,
            failByDrop=False,
            autoFragmentSize=0,
            # data legs relay messages of any size; a control channel sets its own limits
            maxMessagePayloadSize=0,
            maxFramePayloadSize=0,
        )

    def stopFactory(self):
        self.refusals.stop()
        super().stopFactory()

    def base_url(self, host, secure=False):
        if self.node_url:
            return self.node_url
        if self.public_url:
            return self.public_url
        return "%s://%s" % ("wss" if secure else "ws", host or "localhost")

    def set_response_router(self, router):
        """Send what listeners answer on their control channels (``response`` messages and
        the binary bodies after them) to ``router`` (an IResponseRouter: the HTTP door)."""
        self.response_router = router
