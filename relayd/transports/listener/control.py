"""A listener's control channel: ``/$hc/{path}?sb-hc-action=listen[&sb-hc-id=ID]``.

Wire protocol (Azure Relay Hybrid Connections, relayd flavour):

* Needs a token with Listen (``sb-hc-token`` or the ``ServiceBusAuthorization`` header);
  the entity may be created on the first listen with a Manage token (``create_on_listen``).
  Past the entity's ``max_listeners`` the handshake is refused with 403.
* Relay -> listener: ``accept`` and ``request`` JSON text messages (:mod:`relayd.wire.hc`),
  each built by the door's offer (:mod:`relayd.transports.listener.offers`); a small HTTP
  request with a body is its ``request`` message followed by the body as one binary message.
* Listener -> relay: ``renewToken`` (a fresh token re-arms the expiry timer; a bad one closes
  with 1008) and ``response`` messages, each optionally followed by its body as one binary
  message, routed to the HTTP door (:class:`relayd.interfaces.IResponseRouter`).
* The channel closes with 1008 when the token expires unrenewed, or when the listener stops
  reading it (``limits.control_queue_max`` bytes queued for ``limits.control_stall_timeout``
  seconds); with 1001 when the entity is deleted.  Messages are limited to
  ``limits.control_message_max`` bytes; the relay pings it when idle.
* A subscriber (a listener of an event entity) has a bounded outgoing queue
  (:mod:`relayd.transports.listener.subscriber_queue`): past a small write window, what the
  relay sends it waits in order, counted in messages and bytes; one more than
  ``limits.subscriber_queue_messages`` or ``limits.subscriber_queue_bytes`` closes it at once
  with 1008 and a reason naming the limit (:meth:`ControlChannel.send_event`).
"""

from twisted.logger import Logger
from zope.interface import implementer

from relayd import access, connectivity, pipe
from relayd.config import EVENT_KINDS
from relayd.interfaces import IListenerChannel
from relayd.switchboard import SwitchboardError
from relayd.transports.listener.roles import Denied, Role, authorize, param
from relayd.transports.listener.subscriber_queue import (
    EVENT_WRITE_WINDOW, REASONS, SubscriberQueue, flusher, message_frames)
from relayd.wire import hc, sas

# What ControlChannel.send_event did with an event (relayd.transports.http.events).
EVENT_SENT, EVENT_NOT_SENT, SUBSCRIBER_CUT = "sent", "not sent", "cut"
# A subscriber that falls behind is closed with this code (docs/events.rst) and a reason from
# relayd.transports.listener.subscriber_queue.REASONS naming the limit it went over.
SUBSCRIBER_BEHIND_CODE = 1008


def _denied(failure):
    failure.trap(SwitchboardError)
    raise Denied(failure.value.status, failure.value.message)


@implementer(IListenerChannel)
class ControlChannel(Role):
    """The ``listen`` role: registered with the switchboard as a listener of one entity."""

    _log = Logger()

    _token_timer = None
    _pressure = None
    _queue = None  # a subscriber's SubscriberQueue (event entities), from opened()

    def __init__(self, protocol, host, entity, listener_id):
        super().__init__(protocol)
        self.host = host  # the handshake's Host: renewToken is checked against the same hosts
        self.entity = entity
        self.entity_path = entity.path
        self.listener_id = listener_id

    @classmethod
    def listen(cls, protocol, request, entity, token):
        """Check the handshake, register the channel with the switchboard, arm the token timer."""
        f = protocol.factory
        host = request.headers.get("host")
        verified = authorize(f, host, entity, token, sas.LISTEN)
        channel = cls(protocol, host, entity, param(request, "sb-hc-id") or access.tracking_id())
        protocol.entity_path = entity.path
        protocol.maxMessagePayloadSize = f.limits.control_message_max
        protocol.maxFramePayloadSize = f.limits.control_message_max
        protocol.autoPingInterval = f.limits.control_ping_interval
        protocol.autoPingTimeout = f.limits.control_ping_timeout
        try:
            pending = f.switchboard.admit_listener(entity.path, channel, entity.max_listeners)
        except SwitchboardError as e:
            raise Denied(e.status, e.message)
        if pending is None:
            return channel._online(verified)
        # clustered: the registry counts the cap cluster-wide (relayd.cluster); a Deferred
        return pending.addCallbacks(lambda _: channel._admitted(verified), _denied)

    def _admitted(self, verified):
        protocol = self.protocol
        if protocol.state == protocol.STATE_CLOSED:  # gone while the registry decided
            self.factory.switchboard.remove_listener(self.entity_path, self)
            raise Denied(400, "the listener's connection closed during its handshake")
        return self._online(verified)

    def _online(self, verified):
        self._arm_token_timer(verified.expires)
        self.factory.namespace.grants.hold(self, self.entity, verified)  # closed if its rule or key is revoked
        self._log.info("listener {id} online on {path} from {peer}",
                       id=self.listener_id, path=self.entity_path, peer=self.protocol.peer)
        return self

    @property
    def factory(self):
        return self.protocol.factory

    @property
    def transport(self):
        return self.protocol.transport

    # -- token ------------------------------------------------------------------------------

    def _arm_token_timer(self, expires):
        if self._token_timer is not None and self._token_timer.active():
            self._token_timer.cancel()
        clock = self.factory.clock
        self._token_timer = clock.callLater(max(0.0, expires - clock.seconds()), self._token_expired)

    def _token_expired(self):
        self._token_timer = None
        self._log.info("listener {id} on {path}: token expired, closing", id=self.listener_id,
                       path=self.entity_path)
        self.factory.switchboard.report(connectivity.TOKEN_EXPIRED, self.entity_path, listener=self.listener_id)
        self.close(1008, "the listener's token expired; send renewToken before it does")

    # -- IListenerChannel -------------------------------------------------------------------

    def _can_offer(self):
        protocol = self.protocol
        if protocol.state != protocol.STATE_OPEN:
            return False
        # a subscriber's messages queue behind its events; other listeners take none when full
        return self._queue is not None or not (self._pressure is not None and self._pressure.paused)

    def offer(self, rendezvous):
        if not self._can_offer():
            return False
        offer = rendezvous.offer
        message = offer.message(self.factory.base_url(offer.host, offer.secure), rendezvous)
        if message is None:
            return True
        if self._queue is not None:
            return self._put(message_frames(message.encode("utf-8"))) is None
        self.protocol.sendMessage(message.encode("utf-8"), isBinary=False)
        return True

    def offer_raw(self, text, body):
        """Send a control message followed by its body as one binary message (HTTP requests)."""
        if not self._can_offer():
            return False
        if self._queue is not None:
            return self._put(message_frames(text.encode("utf-8"), body)) is None
        self.protocol.sendMessage(text.encode("utf-8"), isBinary=False)
        self.protocol.sendMessage(body, isBinary=True)
        return True

    def send_event(self, frames):
        """Write one event -- ``frames``, its ``request`` message and body as whole WebSocket
        frames (:func:`relayd.transports.http.events.event_frames`, the same bytes for every
        subscriber) -- or queue it behind what waits (EVENT_SENT), unless the channel is
        closing (EVENT_NOT_SENT) or the subscriber's queue is full: then the subscriber has
        fallen behind and is closed (SUBSCRIBER_CUT), so that no one waits for it."""
        protocol = self.protocol
        if protocol.state != protocol.STATE_OPEN or self._queue is None:
            return EVENT_NOT_SENT
        return EVENT_SENT if self._put(frames) is None else SUBSCRIBER_CUT

    def queued(self):
        """(messages, bytes) waiting in a subscriber's queue."""
        queue = self._queue
        return (0, 0) if queue is None else (queue.messages, queue.bytes)

    def _put(self, frames):
        """Queue or write ``frames``; over a bound, cut the subscriber and free its queue."""
        queue = self._queue
        limit = queue.put(frames)
        if limit is not None:
            self._log.info("subscriber {id} on {path} fell behind ({m} messages, {b} bytes queued; "
                           "limits.{limit} reached); closing it", id=self.listener_id, path=self.entity_path,
                           m=queue.messages, b=queue.bytes, limit=limit)
            self.close(SUBSCRIBER_BEHIND_CODE, REASONS[limit])  # frees the queue at once
        return limit

    def close(self, code, reason):
        if self._queue is not None:
            self._queue.flush()  # what was sent this turn goes before the close frame ...
            self._queue.clear()  # ... but nothing queued may follow it: what waits is dropped
        self.protocol.close(code, reason)

    # -- Role -------------------------------------------------------------------------------

    def opened(self):
        transport = self.transport
        limits = self.factory.limits
        if getattr(self.entity, "kind", None) in EVENT_KINDS:
            transport.bufferSize = EVENT_WRITE_WINDOW
            self._queue = SubscriberQueue(self.protocol.sendData, limits.subscriber_queue_messages,
                                          limits.subscriber_queue_bytes, flusher(self.factory.clock))
            self._pressure = pipe.pause_when_full(transport, SubscriberPressure(self, self._queue))
            return
        transport.bufferSize = limits.control_queue_max
        self._pressure = pipe.pause_when_full(transport, ControlChannelPressure(self))

    def message(self, payload, is_binary):
        router = self.factory.response_router
        if is_binary:
            if router is not None:
                router.control_binary(self, payload)
            return
        try:
            message = hc.decode(payload)
        except hc.MessageError as e:
            self._log.info("listener {id}: bad control message: {err}", id=self.listener_id, err=e)
            return
        if isinstance(message, hc.RenewToken):
            try:
                verified = authorize(self.factory, self.host, self.entity, message.token, sas.LISTEN)
            except Denied as e:
                self.close(1008, "renewToken rejected: %s" % e.message)
                return
            self._arm_token_timer(verified.expires)
            self.factory.namespace.grants.hold(self, self.entity, verified)
            return
        if router is not None:
            router.control_response(self, message)

    def lost(self):
        if self._token_timer is not None and self._token_timer.active():
            self._token_timer.cancel()
        self._token_timer = None
        pressure, self._pressure = self._pressure, None
        if pressure is not None:
            pressure.stopProducing()
        if self._queue is not None:
            self._queue.clear()
        self.factory.switchboard.remove_listener(self.entity_path, self)
        self._log.info("listener {id} offline on {path}", id=self.listener_id, path=self.entity_path)


class ControlChannelPressure(pipe.PauseReading):
    """The producer on a control channel's transport.  While more than
    ``limits.control_queue_max`` bytes wait to be written to the listener (it is not reading),
    the relay stops reading the channel (its pings would only queue more pongs), offers it no
    senders (the switchboard balances to other listeners or fails the sender at once) and, if
    it stays so for ``limits.control_stall_timeout`` seconds, closes it with 1008."""

    def __init__(self, channel):
        super().__init__(None, channel.transport)
        self.channel = channel
        self.timer = None

    def pauseProducing(self):
        super().pauseProducing()
        channel = self.channel
        if channel is not None and self.timer is None:
            self.timer = channel.factory.clock.callLater(
                channel.factory.limits.control_stall_timeout, self._stalled)

    def resumeProducing(self):
        super().resumeProducing()
        self._cancel()

    def _cancel(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _stalled(self):
        self.timer = None
        channel = self.channel
        if channel is None:
            return
        limits = channel.factory.limits
        channel._log.info(
            "listener {id} on {path} has not read its control channel for {t} s ({n} bytes queued); closing it",
            id=channel.listener_id, path=channel.entity_path, t=limits.control_stall_timeout,
            n=limits.control_queue_max)
        channel.close(1008, "the listener did not read its control channel for %g s; a listener must "
                            "keep reading it" % limits.control_stall_timeout)

    def stopProducing(self):
        self._cancel()
        self.channel = None
        super().stopProducing()


class SubscriberPressure(ControlChannelPressure):
    """The producer on a subscriber's transport (its ``bufferSize`` is
    :data:`~relayd.transports.listener.subscriber_queue.EVENT_WRITE_WINDOW`): over it, the
    channel queues what it sends (and reads no more, as any control channel); once the
    transport has written everything, the queue is written in order."""

    def __init__(self, channel, queue):
        super().__init__(channel)
        self.queue = queue

    def pauseProducing(self):
        super().pauseProducing()
        self.queue.block()

    def resumeProducing(self):
        super().resumeProducing()
        channel = self.channel
        if channel is None:
            return
        protocol = channel.protocol
        if protocol.state == protocol.STATE_OPEN:
            self.queue.unblock()
        else:
            self.queue.clear()  # closing (e.g. the subscriber sent a close frame): nothing more goes
