"""TCP front doors: net.tcp preamble mode ([MC-NMF]) and port-mapped mode.

Wire protocol:

* **Port-mapped** (``mode = "port"``): a TCP port bound to one entity.  No preamble: the
  connection is offered to a listener of the entity as soon as it arrives (the relay reads
  nothing from the client until a listener accepted), then bytes flow both ways.
* **Preamble** (``mode = "nettcp"``): the relay reads the [MC-NMF] preamble (Version, Mode,
  Via, encoding) with :mod:`relayd.wire.nmf`, routes by the Via's path to the
  entity (host part ignored), checks the Send token from the Via query (``?sb-hc-token=``)
  when the entity requires one, and on failure answers with the matching framing Fault
  record and closes.  On success the preamble bytes, unchanged, are the first bytes the
  listener receives, and then raw bytes are spliced both ways.

The listener side is the Hybrid Connections listener protocol: an ``accept`` message on the
control channel, a rendezvous WebSocket, TCP bytes as binary messages (one message per read).
An **empty binary message** is the half-close marker: the side that reads EOF from its TCP
peer sends one, and the side that receives one shuts down the write half of its TCP
connection.  Backpressure is TCP's own through :mod:`relayd.pipe`.  When the listener's leg
ends without the marker and without a normal close (1000) -- dropped, killed, 1001/1011 --
the TCP client's connection is reset (RST) rather than closed, so a truncated stream never
looks complete.

The connection goes through explicit states (:data:`TRANSITIONS`)::

    PREAMBLE --preamble read--> ROUTING --listener accepted--> PAIRED --one direction ended--> HALF_CLOSED
       (nettcp only)            (port mode starts here)

and any state goes to CLOSED (a fault or refusal, the client gone, the listener's leg ended).
Half-close itself is :class:`relayd.pipe.HalfClose`, shared with the bridge's tunnels.

A Via naming an event entity (``kind = "oneway"`` / ``"multicast"``) goes ROUTING --> PUBLISHING:
the relay answers the session itself (:mod:`relayd.transports.events_nettcp`).
"""

from urllib.parse import urlsplit

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from relayd import access, fastio, pipe, splice, states
from relayd.interfaces import ILeg
from relayd.logs import RateLimitedLog
from relayd.switchboard import SwitchboardError
from relayd.transports.events_nettcp import NetTcpPublisher
from relayd.transports.listener.offers import AcceptOffer
from relayd.wire import hc, nmf, nmf_preamble, sas

# The smallest preamble limit of a nettcp door (bytes); a door allows max_via + PREAMBLE_SLACK.
MIN_PREAMBLE = 8192
PREAMBLE_SLACK = 1024
# Bytes per read from the TCP client once paired; each read goes to the listener as one binary
# message, so this is also the largest message a listener gets from a TCP door.
READ_SIZE = 256 * 1024

# A refusal's HTTP equivalent, for the metrics' outcome (4xx client error, 5xx server error).
REFUSAL_STATUS = {"EndpointAccessDenied": 401, "EndpointUnavailable": 404, "ServerTooBusy": 503}

# connection states
CONNECTING, PREAMBLE, ROUTING, PAIRED, HALF_CLOSED, PUBLISHING, CLOSED = (
    "connecting", "preamble", "routing", "paired", "half-closed", "publishing", "closed")
TRANSITIONS = {
    CONNECTING: {PREAMBLE, ROUTING, CLOSED},
    PREAMBLE: {ROUTING, CLOSED},  # the preamble read (or a fault)
    ROUTING: {PAIRED, PUBLISHING, CLOSED},  # a listener accepted (or none did); an event entity
    PUBLISHING: {CLOSED},
    PAIRED: {HALF_CLOSED, CLOSED},  # one direction ended
    HALF_CLOSED: {HALF_CLOSED, CLOSED},  # the other direction ended too
    CLOSED: {CLOSED},
}


def strip_token(via):
    """The Via without its ``sb-hc-token`` query parameter."""
    base, sep, query = via.partition("?")
    query = hc.strip_sb_params(query)
    return base + ("?" + query if query else "")


@implementer(ILeg, IHalfCloseableProtocol)
class TcpDoorProtocol(Protocol):
    _log = Logger()

    partner = None
    pause_reader = None
    publisher = None  # an events_nettcp.NetTcpPublisher in PUBLISHING
    state = CONNECTING
    conn = None  # the relayd.traffic.Connection once paired (bytes counted as they flow)
    routed_entity = None  # the entity's path once resolved: a refusal is counted for it (metrics)

    def __init__(self, door):
        self.door = door
        self.rv = None
        self.parser = None
        self.pending = []
        self._msg_len = 0
        self._timer = None
        self.half_close = None
        self._io = None  # fastio.DirectIO once paired, on a plain TCP socket

    def _to(self, state):
        self.state = states.step(TRANSITIONS, "TCP door", self.state, state)

    @property
    def closed(self):
        return self.state == CLOSED

    # -- connection ------------------------------------------------------------------------

    def connectionMade(self):
        self.peer = self.transport.getPeer()
        self.half_close = pipe.HalfClose(self.transport)
        pipe.no_delay(self.transport)
        if self.door.mode == "nettcp":
            self._to(PREAMBLE)
            self.parser = nmf_preamble.PreambleParser(max_via=self.door.max_via,
                                                      max_preamble=max(MIN_PREAMBLE, self.door.max_via + PREAMBLE_SLACK))
            self._timer = self.door.clock.callLater(self.door.preamble_timeout, self._preamble_timeout)
        else:
            self._to(ROUTING)
            self.transport.pauseProducing()
            self._route(self.door.entity_path, None, b"")

    def _preamble_timeout(self):
        self._timer = None
        self.fault("ServerTooBusy", "the net.tcp preamble did not arrive in time")

    def dataReceived(self, data):
        if self.state in (PAIRED, HALF_CLOSED):
            if self.conn is not None:
                self.conn.up.n += len(data)
            self.partner.send_message(data)
        elif self.state == ROUTING:
            # waiting for a listener: hold what arrives (reading is paused, so little can)
            self.pending.append(data)
        elif self.state == PREAMBLE:
            self._preamble_data(data)
        elif self.state == PUBLISHING:
            self.publisher.data(data)

    def _preamble_data(self, data):
        try:
            preamble = self.parser.feed(data)
        except nmf.NmfFault as e:
            self.fault(e.name, e.detail)
            return
        if preamble is None:
            return
        self.parser = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._to(ROUTING)
        self.transport.pauseProducing()
        token = nmf.via_query_token(preamble.via)
        raw = preamble.raw
        if token is not None:  # the relay's token stays at the relay
            raw = nmf.rewrite_via(raw, strip_token(preamble.via))
        self.preamble, self.head = preamble, raw
        self._route(nmf.via_path(preamble.via), token, raw + preamble.rest, via=preamble.via)

    def fault(self, name, detail):
        tracking = access.tracking_id()
        self.door.refusals.emit(("net.tcp " + name, getattr(self.peer, "host", "-")),  # a storm: one line
                                "net.tcp from {peer}: fault {name}: {detail} (tracking {tracking})",
                                peer=self.peer, name=name, detail=detail, tracking=tracking)
        self._to(CLOSED)
        self.transport.write(nmf.fault(name))
        self.transport.loseConnection()

    def _refuse(self, name, detail):
        if self.routed_entity is not None and self.door.traffic is not None:
            self.door.traffic.refused(False, self.routed_entity, REFUSAL_STATUS.get(name, 500))
        if self.door.mode == "nettcp":
            self.fault(name, detail)
        else:
            self.door.refusals.emit(("TCP port %s refused" % self.door.port_label, getattr(self.peer, "host", "-")),
                                    "TCP port {port} from {peer}: refused: {detail}", port=self.door.port_label,
                                    peer=self.peer, detail=detail)
            self._to(CLOSED)
            self.transport.loseConnection()

    # -- routing -----------------------------------------------------------------------------

    def _route(self, path, token, first_bytes, via=None):
        door = self.door
        entity, _ = door.namespace.resolve(path or "")
        if entity is None:
            return self._refuse("EndpointNotFound", "no entity at %r" % (path,))
        self.routed_entity = entity.path
        if entity.requires_client_authorization and not door.allow_anonymous:
            try:
                via_host = urlsplit(via).netloc if via else None  # the host the client addressed
                verified = access.authorize(door.namespace, entity, token, sas.SEND,
                                            access.candidate_hosts(via_host, door.public_host), door.clock.seconds())
            except sas.AuthError as e:
                return self._refuse("EndpointAccessDenied", str(e))
            door.namespace.grants.hold(self, entity, verified)  # revoked with its rule or key: revoke()
        policy = door.event_policies.get(entity.kind)
        if policy is not None:  # an event entity: the relay answers the publisher itself
            if door.mode != "nettcp":
                return self._refuse("EndpointUnavailable", "%s entity '%s' takes publishers, not port-mapped "
                                    "streams" % (entity.kind, entity.path))
            self._to(PUBLISHING)
            self.publisher = NetTcpPublisher(self, entity, policy, self.preamble, self.head)
            return self.publisher.start()
        headers = {"X-Relayd-Transport": door.mode}
        if via:
            headers["X-Relayd-Via"] = via.split("?", 1)[0]
        try:
            self.rv = door.switchboard.open_rendezvous(
                entity.path, AcceptOffer(door.http_netloc(), False, headers, peer=self.peer))
        except SwitchboardError as e:
            name = "EndpointUnavailable" if e.status == 404 else "ServerTooBusy"
            return self._refuse(name, e.message)
        self.entity_path = entity.path
        self.first_bytes = first_bytes
        self.rv.result.addCallbacks(self._paired, self._failed)

    def _paired(self, leg):
        self.rv = None
        if self.closed:
            leg.close(1001, "the TCP client went away")
            return
        self._to(PAIRED)
        if self.door.traffic is not None:
            self.conn = self.door.traffic.open(self.door.mode, self.entity_path, self.peer, leg.tracking)
            leg.count_into(self.conn, self.conn.down)
            self.conn.up.n += len(self.first_bytes) + sum(map(len, self.pending))
        leg.start_data_leg()
        pipe.splice(self, leg)
        # from here reads go to the leg as views of fastio's reusable buffer (which the leg
        # writes or copies at once), and what the leg forwards is written straight to the socket
        raw = splice.socket_transport(self.transport)
        if raw is not None:
            self._io = fastio.attach(raw, self.dataReceived, READ_SIZE)
        if self.first_bytes:
            leg.send_message(self.first_bytes)
        for data in self.pending:
            leg.send_message(data)
        self.first_bytes, self.pending = b"", []
        self.transport.resumeProducing()

    def _failed(self, failure):
        failure.trap(SwitchboardError)
        self.rv = None
        if not self.closed:
            self._refuse("EndpointUnavailable", failure.value.message)

    def revoke(self, code, reason):
        """access.Grants: the rule or key that signed the Send token was deleted or regenerated.
        While the relay speaks NMF with the client (waiting for a listener, publishing events) it
        gets the ``EndpointAccessDenied`` fault; once paired (the stream is the service's, a fault
        record would be corrupt data) its connection is reset and the listener's leg closed."""
        if self.state == PUBLISHING:
            return self.publisher.fault(nmf.ENDPOINT_ACCESS_DENIED, reason)
        if self.state == ROUTING:
            return self.fault(nmf.ENDPOINT_ACCESS_DENIED, reason)
        partner = self.partner
        if partner is None:
            return
        self._log.info("TCP {mode} door {port} from {peer}: {reason}; resetting the connection",
                       mode=self.door.mode, port=self.door.port_label, peer=self.peer, reason=reason)
        pipe.unsplice(self)
        partner.close(code, reason)
        self._to(CLOSED)
        if self.conn is not None:
            self.conn.set_status(code)
        pipe.reset(self.transport)

    # -- half-close (pipe.HalfClose) -----------------------------------------------------------

    def readConnectionLost(self):
        if self.state in (PAIRED, HALF_CLOSED):
            self._to(HALF_CLOSED)
            self.partner.send_message(b"")  # half-close marker
            self.half_close.read_ended()
        else:
            pipe.close_after_flush(self.transport)  # EOF before a listener took the stream

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self._to(CLOSED)
        self._io = None
        if self.conn is not None:
            self.conn.close(1000)  # unless the listener's leg ended it with its own code first
        if self.publisher is not None:
            self.publisher.finish()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        rv, self.rv = self.rv, None
        if rv is not None and not rv.done:
            rv.cancel()
        partner = self.partner
        if partner is not None:
            pipe.unsplice(self)
            partner.close(1000, "the TCP client closed the connection")

    # -- ILeg: what the listener's WebSocket leg sends us -------------------------------------

    takes_views = True  # frame_data may get a view of a read buffer: written or copied at once

    def _write(self, data):
        if self._io is not None:
            self._io.write(data)
        else:
            self.transport.write(bytes(data) if type(data) is memoryview else data)

    def begin_message(self, is_binary):
        self._msg_len = 0

    def frame_begin(self, length):
        pass

    def frame_data(self, data):
        self._msg_len += len(data)
        self._write(data)

    def end_message(self):
        if self._msg_len == 0 and self.state in (PAIRED, HALF_CLOSED):
            self._to(HALF_CLOSED)
            self.half_close.marker_received()

    def send_message(self, data):
        self._write(data)

    def close(self, code, reason):
        """The listener's leg ended.  After its half-close marker, or with a normal close
        (1000, or a close frame without a code), the client gets a FIN once what is queued
        is written.  Any other end while the stream was still open (the leg's TCP connection
        dropped without a close frame, i.e. 1006; the listener killed; 1001, 1011, ...)
        means bytes were lost: the client gets a reset (RST), never a clean end of stream."""
        self._to(CLOSED)
        self.partner = None
        if self.conn is not None:
            self.conn.set_status(code)
        if not self.half_close.far_end_closed(code):
            self._log.info("TCP {mode} door {port} from {peer}: the listener's side ended abnormally mid-stream "
                           "({code} {reason}); resetting the TCP connection", mode=self.door.mode,
                           port=self.door.port_label, peer=self.peer, code=code, reason=reason or "")


class TcpDoor(Factory):
    """One configured TCP front door (a listening port)."""

    traffic = None  # the relay's relayd.traffic.Traffic (set by the relay service)

    def __init__(self, spec, namespace, switchboard, settings, clock, http_netloc, event_policies=None):
        self.mode = spec.mode
        self.entity_path = spec.entity
        self.allow_anonymous = spec.allow_anonymous
        self.port_label = spec.listen
        self.max_via = spec.max_via
        self.preamble_timeout = settings.limits.open_handshake_timeout
        self.limits = settings.limits
        self.event_policies = event_policies or {}  # kind -> EventPolicy, shared with the HTTP door
        self.namespace = namespace
        self.switchboard = switchboard
        self.clock = clock
        self.http_netloc = http_netloc
        public = urlsplit(settings.public_url) if settings.public_url else None
        self.public_host = public.hostname if public else None
        self.refusals = RateLimitedLog(TcpDoorProtocol._log, clock, self.limits.refusal_log_burst,
                                       self.limits.refusal_log_interval)

    def stopFactory(self):
        self.refusals.stop()

    def buildProtocol(self, addr):
        p = TcpDoorProtocol(self)
        p.factory = self
        return p
