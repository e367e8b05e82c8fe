"""Publishing events over net.tcp (issue 11; docs/events.rst, "Publishing over net.tcp").

Wire protocol: a net.tcp client ([MC-NMF], a WCF one-way contract over NetTcpBinding,
SecurityMode.None, buffered transfer) whose Via names a ``kind = "oneway"`` or ``"multicast"``
entity.  The TCP door (:mod:`relayd.transports.tcp`) reads the preamble and checks the Send
token as for any entity, then hands the connection to a :class:`NetTcpPublisher`, which answers
the session itself:

* Mode must be Duplex or Simplex (else ``UnsupportedMode``); a oneway entity with no listener
  gets ``EndpointUnavailable`` at once.  After PreambleEnd the relay answers PreambleAck.
* Each SizedEnvelope (at most the entity's ``max_message`` bytes, else
  ``MaxMessageSizeExceededFault``) is one event; End is answered with End and the connection
  closes.  Any other record is a fault (:mod:`relayd.wire.nmf_session`).  PreambleEnd must
  come within the door's preamble deadline (``limits.open_handshake_timeout``), then each
  record within :data:`PUBLISHER_IDLE_TIMEOUT` seconds of the last one (else ``ServerTooBusy``).  A fault record is written, then the connection closes.
* Subscribers: at PreambleEnd the relay offers each listener of a multicast entity (one
  balanced listener of a oneway entity) a rendezvous (an ``accept`` whose ``connectHeaders``
  carry ``X-Relayd-Event``), as the TCP door does for a stream, and replays the session on
  each leg: the preamble (the Via without its token) and PreambleEnd as the first binary
  message, then each envelope record as it came, one binary message each, then End and the
  half-close marker (an empty message).  A ``relayd bridge -R`` in front of a WCF service
  therefore delivers every message unchanged.  What the service sends back (PreambleAck,
  End, a Fault) is read and dropped, at most :data:`READBACK_MAX` bytes per leg.
* In a cluster the subscribers on other nodes get the session too, each over a rendezvous leg
  to this node (:meth:`relayd.cluster.routing.Router.pinned`); a oneway session prefers a
  listener of this node.
* Listeners that connect during a session get the next session, not the rest of this one:
  envelopes of WCF's binary session encoding refer to strings sent in earlier ones.
* Each leg holds at most ``limits.leg_buffer`` bytes: queued until the listener accepts, or
  unwritten on its connection after.  A leg over that when the next event comes is cut (closed
  with 1008, :data:`LEG_BEHIND`, or its pending rendezvous cancelled) and counted; nobody waits
  for it.  A listener that rejects the offer or does not accept it in time (the SDK's
  ``subscribe`` and ``bridge -H`` reject streams) misses the session.  When the publisher ends
  (End, a fault, or its connection lost) each leg gets End and the half-close marker and is
  closed with 1000 if it is still open :data:`LEG_END_TIMEOUT` seconds later.
* Counts (published, deliveries, dropped, cut) are the entity kind's
  :class:`~relayd.transports.http.events.EventCounts`, shared with HTTP and WebSocket publishing.
  A oneway session whose listener's leg is gone answers its next event with ``EndpointUnavailable``.
"""

from twisted.logger import Logger

from relayd import pipe
from relayd.switchboard import SwitchboardError
from relayd.transports.http.events import ONEWAY
from relayd.transports.listener.control import SUBSCRIBER_BEHIND_CODE
from relayd.transports.listener.offers import AcceptOffer
from relayd.wire import hc, nmf, nmf_session

# Seconds a publisher may take to send its next whole record (WCF's default receiveTimeout).
PUBLISHER_IDLE_TIMEOUT = 600.0
# Seconds a subscriber's leg may stay open after the session's End was written to it.
LEG_END_TIMEOUT = 10.0
# Bytes a subscriber's service may send back on its leg before the relay closes it.
READBACK_MAX = 64 * 1024
PUBLISHING_MODES = (nmf.MODE_DUPLEX, nmf.MODE_SIMPLEX)
LEG_BEHIND = "subscriber fell behind: over limits.leg_buffer bytes of events unwritten; keep reading"
LEG_READBACK = "the subscriber sent more than %d bytes back on an event stream" % READBACK_MAX

# SubscriberLeg.send outcomes, and its states
SENT, GONE, CUT = "sent", "gone", "cut"
OPENING, OPEN, ENDING = "opening", "open", "ending"

_log = Logger(namespace="relayd.transports.events_nettcp")


class SubscriberLeg:
    """One subscriber's copy of a publisher's session: a rendezvous leg to one listener, and
    the :class:`relayd.interfaces.ILeg` partner of that leg (what the service sends is dropped)."""

    def __init__(self, clock, path, limit):
        self.clock = clock
        self.path = path
        self.limit = limit  # bytes queued before the accept / unwritten after it
        self.state = OPENING
        self.queue, self.queued = [], 0
        self.rv = self.leg = self.watch = self.timer = None
        self.readback = 0
        self.partner = None

    def open(self, switchboard, offer, channel, first):
        """Offer ``channel`` the rendezvous; ``first`` (the preamble) goes first.  False when it
        cannot be offered."""
        try:
            self.rv = switchboard.open_rendezvous(self.path, offer, listener=channel)
        except SwitchboardError as e:
            _log.info("net.tcp events on {path}: a subscriber could not be offered the session: {err}",
                      path=self.path, err=e.message)
            self.state = GONE
            return False
        self.queue, self.queued = [first], len(first)
        self.rv.result.addCallbacks(self._paired, self._failed)
        return True

    def _paired(self, leg):
        self.rv = None
        if self.state == GONE:
            leg.close(1001, "the event stream ended before the subscriber accepted it")
            return
        leg.start_data_leg()
        leg.partner = self
        self.leg = leg
        self.watch = pipe.pause_when_full(leg.transport)  # paused: over limits.leg_buffer unwritten
        queue, self.queue, self.queued = self.queue, [], 0
        for data in queue:
            leg.send_message(data)
        if self.state == ENDING:
            self._arm_end()
        else:
            self.state = OPEN

    def _failed(self, failure):
        failure.trap(SwitchboardError)
        self.rv = None
        if self.state != GONE:
            _log.info("net.tcp events on {path}: a subscriber did not take the session: {err}",
                      path=self.path, err=failure.value.message)
        self._gone()

    def send(self, record):
        """Hand one record to the subscriber: SENT, GONE, or CUT (it fell behind: closed)."""
        if self.state == OPEN:
            if self.watch.paused:
                return self._cut()
            self.leg.send_message(record)
            return SENT
        if self.state == OPENING:
            if self.queued + len(record) > self.limit:
                return self._cut()
            self.queue.append(record)
            self.queued += len(record)
            return SENT
        return GONE

    def _cut(self):
        _log.info("net.tcp events on {path}: a subscriber fell behind (over {n} bytes); cutting it",
                  path=self.path, n=self.limit)
        leg, rv = self.leg, self.rv
        self._gone()
        if leg is not None:
            leg.close(SUBSCRIBER_BEHIND_CODE, LEG_BEHIND)
        elif rv is not None and not rv.done:
            rv.cancel()
        return CUT

    def end(self):
        """The publisher's session ended: End and the half-close marker, then close."""
        if self.state == OPENING:
            self.queue += [nmf.END, b""]
            self.state = ENDING
        elif self.state == OPEN:
            self.leg.send_message(nmf.END)
            self.leg.send_message(b"")
            self.state = ENDING
            self._arm_end()

    def _arm_end(self):
        self.timer = self.clock.callLater(LEG_END_TIMEOUT, self._end_timeout)

    def _end_timeout(self):
        self.timer = None
        leg = self.leg
        if leg is not None:
            leg.close(1000, "the event stream ended")

    def _gone(self):
        self.state = GONE
        self.queue, self.queued = [], 0
        self.leg = None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    # -- ILeg: what the subscriber's service sends (PreambleAck, End): read and dropped -------

    def begin_message(self, is_binary):
        pass

    def frame_begin(self, length):
        pass

    def frame_data(self, data):
        self.readback += len(data)
        if self.readback > READBACK_MAX and self.leg is not None:
            leg = self.leg
            self._gone()
            leg.close(1008, LEG_READBACK)

    def end_message(self):
        pass

    def send_message(self, data):
        self.frame_data(data)

    def close(self, code, reason):
        """The subscriber's leg ended."""
        self._gone()


class NetTcpPublisher:
    """One net.tcp publisher connection on an event entity (module docstring).  ``protocol`` is
    the TCP door's protocol (its ``transport``, ``fault(name, detail)``, ``door``)."""

    def __init__(self, protocol, entity, policy, preamble, head):
        self.protocol = protocol
        self.door = door = protocol.door
        self.entity = entity
        self.policy = policy
        self.preamble = preamble
        self.head = head  # the preamble as subscribers get it (the Via without the token)
        self.reader = nmf_session.SessionReader(entity.max_message)
        self.legs = []
        self.done = False
        # until PreambleEnd the door's preamble deadline, then PUBLISHER_IDLE_TIMEOUT per record
        self.timer = door.clock.callLater(door.preamble_timeout, self._idle)
        self._untrack = door.switchboard.track(entity.path, self)

    def start(self):
        """Refuse what cannot be published, else read what followed the preamble."""
        if self.preamble.mode not in PUBLISHING_MODES:
            return self.fault(nmf.UNSUPPORTED_MODE, "publish with a buffered (not streamed) one-way "
                                                    "contract: the session mode must be Duplex or Simplex")
        if self.policy.kind == ONEWAY and not self.door.switchboard.listener_count(self.entity.path):
            return self.fault(nmf.ENDPOINT_UNAVAILABLE, "no listener is connected to the oneway entity '%s'"
                              % self.entity.path)
        self.data(self.preamble.rest)
        if not self.done:
            self.protocol.transport.resumeProducing()

    def data(self, data):
        if self.done:
            return
        try:
            records = self.reader.feed(data)
        except nmf.NmfFault as e:
            return self.fault(e.name, e.detail)
        for kind, record in records:
            self.timer.reset(PUBLISHER_IDLE_TIMEOUT)
            if kind == nmf_session.ENVELOPE:
                self._event(record)
            elif kind == nmf_session.PREAMBLE_END:
                self._open_legs(self.head + record)
            else:  # End: answered with End, then the connection closes
                self.protocol.transport.write(nmf.END)
                self.finish()
                pipe.close_after_flush(self.protocol.transport)
            if self.done:
                return

    def _open_legs(self, first):
        door, path = self.door, self.entity.path
        headers = {"X-Relayd-Transport": "nettcp", "X-Relayd-Via": self.preamble.via.split("?", 1)[0],
                   hc.EVENT_HEADER: self.policy.kind}
        offer = AcceptOffer(door.http_netloc(), False, headers, peer=self.protocol.peer)
        limit = door.limits.leg_buffer

        def attempt(channel):
            leg = SubscriberLeg(door.clock, path, limit)
            if leg.open(door.switchboard, offer, channel, first):
                self.legs.append(leg)
                return True
            return False

        router = getattr(door.switchboard, "router", None)  # clustered: subscribers on other nodes too
        remote = router.pinned(path) if router is not None else []
        if self.policy.kind == ONEWAY:  # one of this node's listeners, else one of another node's
            if door.switchboard.choose(path, attempt) is None and not any(map(attempt, remote)):
                return self.fault(nmf.ENDPOINT_UNAVAILABLE, "no listener of the oneway entity '%s' took the "
                                                            "session" % path)
        else:
            for channel in door.switchboard.listeners(path) + remote:
                attempt(channel)
        self.protocol.transport.write(nmf.PREAMBLE_ACK)

    def _event(self, record):
        counts = self.policy.counts
        counts.published += 1
        delivered = 0
        for leg in self.legs:
            outcome = leg.send(record)
            if outcome == SENT:
                delivered += 1
            elif outcome == CUT:
                counts.cut += 1
        self.legs = [leg for leg in self.legs if leg.state != GONE]
        counts.deliveries += delivered
        if not delivered:
            counts.dropped += 1
            if self.policy.kind == ONEWAY:
                self.fault(nmf.ENDPOINT_UNAVAILABLE, "the listener of the oneway entity '%s' is gone; the "
                                                     "event was not delivered" % self.entity.path)

    def fault(self, name, detail):
        if not self.done:
            self.finish()
            self.protocol.fault(name, detail)

    def _idle(self):
        self.timer = None
        self.fault(nmf.SERVER_TOO_BUSY, "the publisher's next record did not arrive in time")

    def finish(self):
        """The session is over (End, a fault, the connection lost): end every subscriber's leg."""
        if self.done:
            return
        self.done = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self._untrack()
        legs, self.legs = self.legs, []
        for leg in legs:
            leg.end()

    def close(self, code, reason):
        """IClosable: the entity was deleted or disabled."""
        self.fault(nmf.ENDPOINT_UNAVAILABLE, reason)
