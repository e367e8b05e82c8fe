"""Event entities: what the HTTP door does for ``kind = "oneway"`` and ``kind = "multicast"``
(issue 11; docs/events.rst), as a policy object (:class:`EventPolicy`, an
:class:`~relayd.transports.http.policy.IKindPolicy`).

Publishing over HTTP: ``POST http(s)://relay/{path}[/suffix][?query]`` with a body of at most
the entity's ``max_message`` bytes is one event.

* The Send right is checked from the request head, before any of the body is read (401/403
  at once); a declared length over ``max_message`` is 413 at once, a chunked body that grows
  past it is 413 when it does; any other method is 405.
* The event is encoded once, WebSocket framing included (:func:`event_frames`) -- the
  ``request`` control message HC listeners already take (method POST, the publisher's headers
  but the relay's token, ``body: true``), then the body as one binary message -- and the same
  bytes are written to the control channel of every
  listener of a ``multicast`` entity, or of one listener of a ``oneway`` entity (balanced by
  the switchboard, as HTTP requests are).
* The publisher is answered ``202 Accepted`` with ``X-Relayd-Delivered: N`` (the subscribers
  it was handed to) and ``{"delivered": N}``.  A multicast event no one was listening for is
  still 202 (delivered 0) and counted as dropped; a oneway event with no listener is 502.
* The relay neither waits for nor relays listeners' responses to events: a ``response`` for
  an event's id finds no exchange and is dropped by the door, its body too.
* A subscriber whose outgoing queue an event would take over ``limits.subscriber_queue_messages``
  or ``limits.subscriber_queue_bytes`` is closed (:data:`~relayd.transports.listener.control.
  SUBSCRIBER_BEHIND_CODE`) and counted; the publisher and the other subscribers do not wait.

A SOAP one-way envelope (a POST with a SOAP content type) is one event too, read and vetted
by the SOAP entities' rules and answered in SOAP (:mod:`relayd.transports.http.soap_events`).

Nothing is stored: an event goes to the listeners connected when it arrives (at most once),
in the order a publisher's connection sent them.
"""

from zope.interface import implementer

from relayd.transports.http.policy import IKindPolicy, IRequestPolicy
from relayd.transports.http.request import HttpError
from relayd.transports.http.soap import SoapPolicy, fault_for
from relayd.transports.http.soap_events import SoapEventRequest, is_soap_post
from relayd.transports.listener.control import EVENT_SENT, SUBSCRIBER_CUT
from relayd.wire import hc, wsframe

ONEWAY = "oneway"
MULTICAST = "multicast"
DELIVERED_HEADER = "X-Relayd-Delivered"


class EventCounts:
    """What an event kind has done since the relay started."""

    def __init__(self):
        self.published = 0  # events accepted from publishers
        self.deliveries = 0  # copies handed to subscribers' connections
        self.dropped = 0  # events no subscriber was connected for
        self.cut = 0  # subscribers closed because they fell behind


def event_headers(kind, headers):
    """The request headers of an event: the publisher's, with :data:`~relayd.wire.hc.EVENT_HEADER`
    set to the entity's ``kind`` (a publisher's own copy dropped), so listeners tell events apart."""
    marked = {name: value for name, value in headers.items() if name.lower() != hc.EVENT_HEADER.lower()}
    marked[hc.EVENT_HEADER] = kind
    return marked


def event_frames(message, body):
    """An event as the WebSocket frames a subscriber's control channel carries: the ``request``
    text message, then the body (if any) as one binary message.  Frames from the relay are not
    masked (and control channels negotiate no compression), so these bytes are the same for
    every subscriber: built once per event, written to each as they are."""
    frames = wsframe.encode_header(wsframe.TEXT, True, len(message)) + message
    if body:
        frames += wsframe.encode_header(wsframe.BINARY, True, len(body)) + body
    return frames


@implementer(IKindPolicy)
class EventPolicy:
    """The rules of one event kind (``oneway`` or ``multicast``), one per HTTP door."""

    def __init__(self, kind):
        if kind not in (ONEWAY, MULTICAST):
            raise ValueError("an event kind is %r or %r, not %r" % (ONEWAY, MULTICAST, kind))
        self.kind = kind
        self.counts = EventCounts()

    def for_request(self, exchange, query):
        soap = exchange.door.policies.get(SoapPolicy.kind)
        if soap is not None and is_soap_post(exchange.head):
            return SoapEventRequest(soap, exchange, query, self)
        return EventRequest(self, exchange)

    def fault_version(self, head):
        return None  # an unknown path: SoapPolicy answers SOAP posts with faults, the rest is JSON

    def fault(self, version, status, message, addressing):
        """Errors to a SOAP publisher (:class:`SoapEventRequest`) are faults in its version."""
        return fault_for(version, status, message, addressing)

    def publish(self, exchange, body):
        """Hand the event (the request ``exchange``, its ``body`` read whole) to the entity's
        subscribers; returns to how many."""
        door = exchange.door
        host = exchange.lowered.get("host", [None])[0]
        return self.publish_event(door.switchboard, door.hybrid.base_url(host, exchange.client.secure),
                                  exchange.entity.path, exchange.request_target, exchange.forward_headers, body)

    def publish_and_answer(self, exchange, body, accepted=None):
        """Publish ``body`` as :meth:`publish` does and answer the publisher: 502 when a oneway
        entity had no listener, else ``202 Accepted`` with :data:`DELIVERED_HEADER` and the
        body ``accepted`` -- a ``(content_type, bytes)`` pair, by default ``{"delivered": N}``."""
        delivered = self.publish(exchange, body)
        if not delivered and self.kind == ONEWAY:
            exchange.answer_error(502, "no listener is connected to '%s' to take the event; it was not "
                                       "delivered (events are not stored)" % exchange.entity.path)
            return
        content_type, reply = accepted or ("application/json", b'{"delivered":%d}' % delivered)
        exchange.answer(202, content_type, reply, headers=((DELIVERED_HEADER, "%d" % delivered),))

    def publish_event(self, switchboard, base_url, path, target, headers, body):
        """Encode one event (a POST of ``body`` to ``target`` with ``headers``, as listeners of
        the entity at ``path`` see it) and :meth:`deliver` it.  Shared by the HTTP door and
        WebSocket publishers (:mod:`relayd.transports.events_ws`)."""
        key = switchboard.new_key()
        address = hc.rendezvous_address(base_url, path, "", "", "request", key)
        message = hc.encode_request(address, key, target, "POST", event_headers(self.kind, headers),
                                    bool(body)).encode("utf-8")
        return self.deliver(switchboard, path, event_frames(message, body))

    def deliver(self, switchboard, path, frames):
        """Write one event, ``frames`` (:func:`event_frames`), to the subscribers of the entity at
        ``path``: all of them (multicast) or one picked by ``switchboard.choose`` (oneway); in a
        cluster (``switchboard.router``) those of every node (:mod:`relayd.cluster.events`).
        Returns to how many it was handed; counts what happened."""
        counts = self.counts
        counts.published += 1
        router = getattr(switchboard, "router", None)
        if router is not None and self.kind == ONEWAY:
            delivered = router.events.oneway(self, path, frames)
        else:
            delivered = self.hand_here(switchboard, path, frames)
            if router is not None:
                delivered += router.events.multicast(self.kind, path, frames)
        counts.deliveries += delivered
        if not delivered:
            counts.dropped += 1
        return delivered

    def hand_here(self, switchboard, path, frames, listener_id=None):
        """Write ``frames`` to this node's subscribers of ``path``: all (multicast) or one (oneway:
        ``listener_id`` when it is here, else one picked by ``switchboard.choose``); returns how many."""
        counts = self.counts

        def hand(channel):
            outcome = channel.send_event(frames)
            if outcome == SUBSCRIBER_CUT:
                counts.cut += 1
            return outcome == EVENT_SENT

        if self.kind == MULTICAST:
            return sum(hand(channel) for channel in switchboard.listeners(path))
        chosen = [c for c in switchboard.listeners(path) if c.listener_id == listener_id] if listener_id else ()
        if chosen and hand(chosen[0]):
            return 1
        return 1 if switchboard.choose(path, hand) is not None else 0


@implementer(IRequestPolicy)
class EventRequest:
    """One publishing request: its body read whole, then published."""

    fault_version = None
    rewrites = False
    max_rewritten = 0

    def __init__(self, policy, exchange):
        self.policy = policy
        self.exchange = exchange
        self.collecting = False
        self.parts = []
        self.size = 0

    def reads_body_first(self):
        return True

    def collect(self, length):
        ex = self.exchange
        ex.authorize(None)  # the Send right, before any of the body is read
        if ex.method != "POST":
            raise HttpError(405, "an event entity ('%s') takes only POST: each POST publishes one event"
                            % ex.entity.path, close=ex.body_pending(), headers=(("Allow", "POST"),))
        limit = ex.entity.max_message
        if length is not None and length > limit:
            raise HttpError(413, "the event (%d bytes) is larger than the entity's max_message of %d bytes"
                            % (length, limit), close=True)
        self.collecting = True
        if not ex.body_pending():
            self.complete()

    def data(self, data):
        self.size += len(data)
        limit = self.exchange.entity.max_message
        if self.size > limit:
            self.collecting = False
            self.parts = []
            self.exchange.refuse_and_close(
                413, "the event is larger than the entity's max_message of %d bytes" % limit)
            return
        self.parts.append(data)

    def complete(self):
        self.collecting = False
        body, self.parts = b"".join(self.parts), []
        self.policy.publish_and_answer(self.exchange, body)

    def rewrite(self, payload, headers):
        return payload

    def addressing(self):
        return {}

    def release(self):
        self.parts = []
        self.exchange = None
