"""Sender-node rendezvous: a sender on this node, its listener on another (issue 13 item 4).

Azure's gateway model: data never crosses between nodes.  A sender (WebSocket ``connect``, a TCP
or net.tcp door, an HTTP request) reaches node B; B has no listener of the entity, so its
switchboard (:meth:`relayd.switchboard.Switchboard.open_rendezvous`) asks :meth:`Router.candidates`
for the listeners the registry knows on other nodes, as :class:`RemoteListener` stand-ins, and
picks one at random, as it balances its own.  The stand-in builds the control message on B --
the rendezvous address on B's ``node_url`` with B's one-time key -- and sends it to the
listener's node A on the bus (:data:`OFFER`).  A writes it on that listener's control channel as
it is; the listener opens its rendezvous leg to B, and B's switchboard pairs and splices it as on
one node.  A relays no data byte; rejections (``sb-hc-statusCode``) reach B on the leg.

* B's view of the other nodes' listeners (``registry.remote``) is kept by bus notices, so a
  listener that has just connected on A may not be in it yet.  With no listener here and none in
  the view, B reads the entity's listeners from Redis once (:meth:`Router.look_up`, at most
  :data:`LOOKUP_TIMEOUT`; the senders of one entity waiting at the same time share one read) and
  offers to one found on a live node; none found, Redis down or no answer in time: the sender
  fails as with no listener.  The same when every listener in the view failed (it may hold one
  that left, its "offline" notice not come yet).  The offer waits for the read; the sender's
  rendezvous is pending (and counted) meanwhile.  Senders with a listener here or in the view
  that takes the offer never wait for Redis.

* A cannot (the listener is gone, or not taking offers): it answers :data:`OFFER_FAILED` and B
  offers the same message to another listener of another node, or fails the sender as one node
  does with no listener (404 for a WebSocket sender, 502 for an HTTP request).  A message to a
  node that is gone (Redis counts no receiver) or Redis down: the same at once.  A message lost
  otherwise: the sender's accept deadline (its rendezvous' timer on B), never a hang.
* HTTP requests: a small one goes whole in the offer (its body, at most the door's inline limit,
  base64 in the message; :meth:`RemoteListener.offer_raw`).  A remembers the request id for
  the entity's ``response_timeout`` (at most ``limits.max_pending_rendezvous`` ids) and sends the listener's
  ``response`` on its control channel, with the binary body after it, back to B
  (:data:`RESPONSE`); B answers its client through the HTTP door's exchange.  A large request or
  response uses a rendezvous leg to B, as on one node.
* Events across nodes: :mod:`relayd.cluster.events`.

:func:`install` wires it: the switchboard's ``router``, the HC door's response router.
"""

import random
import secrets
import weakref

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from relayd.cluster.events import ClusterEvents, b64, unb64
from relayd.cluster.registry import entity_key
from relayd.cluster.redis_link import COMMAND_TIMEOUT, RedisDown
from relayd.interfaces import IListenerChannel, IOffer, IResponseRouter
from relayd.switchboard import NoListener, SwitchboardError
from relayd.wire import hc

OFFER, OFFER_FAILED, RESPONSE = "offer", "offer_failed", "response"
RESPONSE_TOO_LARGE = 502  # the status B's client gets when a control-channel response cannot cross the bus
LOOKUP_TIMEOUT = COMMAND_TIMEOUT  # seconds a sender with no listener in view waits for Redis's list


@implementer(IListenerChannel)
class RemoteListener:
    """A listener of ``entity_path`` on node ``node_id``, as the switchboard of the sender's node
    sees it: one per candidate of one rendezvous (it binds to the rendezvous it is offered).
    ``node_id`` None: not known yet -- offered, it reads the registry first (:meth:`Router.look_up`)."""

    def __init__(self, router, entity_path, node_id, listener_id):
        self.router = router
        self.entity_path = entity_path
        self.node_id = node_id
        self.listener_id = listener_id
        self.rendezvous = None
        self.payload = None  # the last offer sent (offered again to the next listener on failure)
        self.tried = set()  # (node id, listener id) that could not take it
        self.pinned = False  # True: no other listener instead (Router.pinned)
        self.found = None  # what the registry read found (node_id None), the pool instead of the view

    def offer(self, rendezvous):
        if rendezvous.offer is None:  # nothing to build a control message from
            return False
        self.rendezvous = rendezvous
        self.router.pending[rendezvous.key] = self
        text = rendezvous.offer.message(self.router.node_url, rendezvous)
        if text is not None:  # None: a small request with a body goes later (offer_raw)
            self._send(text, None)
        if self.node_id is None:
            self.router.look_up(self)
        return True

    def offer_raw(self, text, body):
        if self.rendezvous is None or self.rendezvous.done:
            return False
        self._send(text, body)
        return True

    def _send(self, text, body):
        rv = self.rendezvous
        self.payload = {"entity": self.entity_path, "key": rv.key, "kind": rv.kind, "text": text, "body": b64(body)}
        if self.node_id is not None:  # else sent once the registry read found a listener
            self.router.send_offer(self)

    def close(self, code, reason):
        """Not this node's to close (its own node closes it)."""

    def rendezvous_ended(self, rendezvous):
        if self.router.pending.get(rendezvous.key) is self:
            del self.router.pending[rendezvous.key]
        self.router.lookups.get(entity_key(self.entity_path), {}).pop(self, None)

    def next_listener(self):
        """This one could not take the offer (or none was picked yet): the next on another node,
        or the sender fails."""
        rv = self.rendezvous
        if rv is None or rv.done:
            return
        if self.node_id is not None:
            self.tried.add((self.node_id, self.listener_id))
        pool = self.router.remote(self.entity_path) if self.found is None else self.found
        left = [] if self.pinned else [e for e in pool if e not in self.tried]
        if not left and self.found is None and not self.pinned and self.router.registry.up:
            return self.router.look_up(self)  # the view may be stale: Redis's list, once, before failing
        if not left:  # as one node answers with no listener: 404 to a sender, 502 to an HTTP request
            why = ("no listener of '%s' took it on any node of the cluster" if self.tried else
                   "no listener is connected to '%s' on any node of the cluster") % self.entity_path
            rv.fail(SwitchboardError(why, 502) if rv.kind == "request" else NoListener(why))
            return
        self.node_id, self.listener_id = self.router.rng.choice(sorted(left))
        if self.payload is not None:
            self.router.send_offer(self)


@implementer(IOffer)
class BuiltOffer:
    """On the listener's node: the control message the sender's node built, written as it is
    (through :meth:`~relayd.interfaces.IListenerChannel.offer`, which asks its offer for it)."""

    kind = "accept"
    host = None
    secure = False

    def __init__(self, text):
        self.text = text
        self.offer = self  # the channel reads ``rendezvous.offer``: this stands for both

    def message(self, base_url, rendezvous):
        return self.text


class Router:
    """Both ends of a cross-node rendezvous on one node (see the module's docstring)."""

    log = Logger()

    def __init__(self, bus, registry, switchboard, clock, node_url, rng=None):
        self.bus, self.registry, self.switchboard, self.clock = bus, registry, switchboard, clock
        self.node_url = node_url
        self.rng = rng or random.Random(secrets.randbits(64))
        self.pending = {}  # rendezvous key -> RemoteListener: this node's senders offered elsewhere
        self.forwarded = {}  # request id -> (sender's node, entity key, timer): responses to send back
        self.awaiting = weakref.WeakKeyDictionary()  # control channel -> (node, response): its body next
        self.max_forwarded = switchboard.max_pending or 8192
        self.door = None  # the HTTP door (its exchanges by request id), from install()
        self.events = None  # relayd.cluster.events.ClusterEvents, from install()
        self.lookups = {}  # entity key -> {stand-in: None} waiting for its registry read (look_up)
        # offers sent, offers a listener's node could not place, offers placed here, responses back
        # here, registry reads for listeners not in the view
        self.counts = {"offered": 0, "offer_failed": 0, "taken": 0, "responses": 0, "lookups": 0}
        bus.on(OFFER, self._offer)
        bus.on(OFFER_FAILED, self._offer_failed)
        bus.on(RESPONSE, self._response)

    def status(self):
        """``routing`` in ``GET /$relayd/status``: what crossed nodes since the start."""
        events = self.events
        return dict(self.counts, pending_offers=len(self.pending), forwarded_requests=len(self.forwarded),
                    events_sent=events.sent if events else 0, events_received=events.received if events else 0,
                    events_lost=events.lost if events else 0)

    # -- the sender's node ---------------------------------------------------------------------

    def remote(self, path):
        """The entity's listeners on other live nodes: sorted ``(node id, listener id)``."""
        live = self.registry.live_nodes
        return sorted(e for e in self.registry.remote.get(entity_key(path), ()) if not live or e[0] in live)

    def _known(self, path):
        return [RemoteListener(self, path, node, listener) for node, listener in self.remote(path)]

    def candidates(self, path):
        """Stand-ins for the switchboard, one per listener on another node; none in the view (and
        Redis up): one that reads the registry when offered (:meth:`look_up`)."""
        return self._known(path) or ([RemoteListener(self, path, None, None)] if self.registry.up else [])

    def pinned(self, path):
        """Stand-ins for ``open_rendezvous(listener=...)``: each for its own listener only (a
        net.tcp event session replayed to every subscriber); one that cannot take it fails."""
        stand_ins = self._known(path)
        for stand_in in stand_ins:
            stand_in.pinned = True
        return stand_ins

    def look_up(self, stand_in):
        """Read the entity's listeners from Redis for ``stand_in`` (one read per entity at a time),
        then offer to one on another live node, or fail its sender (:meth:`RemoteListener.next_listener`)."""
        key = entity_key(stand_in.entity_path)
        waiting = self.lookups.get(key)
        if waiting is not None:
            waiting[stand_in] = None
            return
        self.lookups[key] = {stand_in: None}
        self.counts["lookups"] += 1
        d = defer.maybeDeferred(self.registry.listeners, stand_in.entity_path)
        d.addTimeout(LOOKUP_TIMEOUT, self.clock)
        d.addErrback(self._unread, stand_in.entity_path)
        d.addCallback(self._looked_up, key)
        d.addErrback(self.log.failure, "cluster: offering after a registry read failed")

    def _unread(self, failure, path):
        if not failure.check(RedisDown, defer.TimeoutError):
            self.log.failure("cluster: reading the listeners of {path} failed", failure, path=path)
        return []

    def _looked_up(self, entries, key):
        live, here = self.registry.live_nodes, self.registry.node_id
        found = sorted(e for e in entries if e[0] != here and (not live or e[0] in live))
        for stand_in in self.lookups.pop(key, {}):
            stand_in.found = found
            stand_in.next_listener()

    def send_offer(self, stand_in):
        payload = dict(stand_in.payload, listener=stand_in.listener_id)
        node, key = stand_in.node_id, payload["key"]
        self.counts["offered"] += 1
        try:
            d = self.bus.send(node, OFFER, payload)
        except ValueError as e:  # over the bus's MAX_MESSAGE
            self.log.warn("cluster: an offer for {path} cannot cross nodes: {e}", path=stand_in.entity_path, e=e)
            stand_in.tried.update(self.remote(stand_in.entity_path))
            return stand_in.next_listener()

        def sent(receivers):
            if not receivers:  # that node is gone
                self._failed(key, node, stand_in.listener_id)

        def lost(failure):
            failure.trap(RedisDown)
            self._failed(key, node, stand_in.listener_id)

        d.addCallbacks(sent, lost).addErrback(self.log.failure, "cluster: offering failed")

    def _failed(self, key, node, listener):
        stand_in = self.pending.get(key)
        if stand_in is not None and (stand_in.node_id, stand_in.listener_id) == (node, listener):
            self.counts["offer_failed"] += 1
            stand_in.next_listener()

    def _offer_failed(self, payload, from_node):
        key, listener = payload.get("key"), payload.get("listener")
        if isinstance(key, str) and isinstance(listener, str):
            self._failed(key, from_node, listener)

    def _response(self, payload, from_node):
        """A listener on ``from_node`` answered an HTTP request of this node on its control channel."""
        key, text = payload.get("key"), payload.get("text")
        exchange = self.door.exchanges.get(key) if self.door is not None and isinstance(key, str) else None
        if exchange is None or exchange.responding or not isinstance(text, str):
            return  # ended or answered meanwhile (e.g. its deadline passed): dropped, as on one node
        try:
            response = hc.decode(text)
            body = unb64(payload.get("body"))
        except (hc.MessageError, ValueError, TypeError):
            self.bus.dropped["malformed"] += 1
            return
        self.counts["responses"] += 1
        exchange.response_start(response, via_control=True)
        if response.body:
            exchange.response_body_whole(body)

    # -- the listener's node -------------------------------------------------------------------

    def _local(self, path, listener_id):
        for channel in self.switchboard.listeners(path):
            if channel.listener_id == listener_id:
                return channel
        return None

    def _offer(self, payload, from_node):
        path, key, listener, text = (payload.get(k) for k in ("entity", "key", "listener", "text"))
        if not all(isinstance(v, str) for v in (path, key, listener, text)):
            self.bus.dropped["malformed"] += 1
            return
        channel = self._local(path, listener)
        try:
            body = payload.get("body")
            taken = channel is not None and (channel.offer(BuiltOffer(text)) if body is None
                                             else channel.offer_raw(text, unb64(body)))
        except (ValueError, TypeError):
            taken = False
        if not taken:
            self.bus.send(from_node, OFFER_FAILED, {"key": key, "listener": listener}).addErrback(lambda f: None)
            return
        self.counts["taken"] += 1
        if payload.get("kind") == "request":
            self._remember(key, from_node, path)

    def _remember(self, key, node, path):
        """Until the entity's response deadline (the sender's node keeps the same one)."""
        if len(self.forwarded) >= self.max_forwarded:  # the oldest goes: its sender times out on its node
            self._forget(next(iter(self.forwarded)))
        entity = self.door.namespace.resolve(path)[0] if self.door is not None else None
        wait = getattr(entity, "response_timeout", None) or self.switchboard.accept_timeout
        timer = self.clock.callLater(wait, self.forwarded.pop, key, None)
        self.forwarded[key] = (node, entity_key(path), timer)

    def _forget(self, key):
        entry = self.forwarded.pop(key, None)
        if entry is not None and entry[2].active():
            entry[2].cancel()
        return entry

    def response(self, channel, response):
        """The HTTP door found no exchange for ``response``: True when it answers a request of
        another node (sent back now, or once its body -- the channel's next binary -- came)."""
        entry = self.forwarded.get(response.request_id)
        if entry is None or entry[1] != entity_key(channel.entity_path):
            return False
        node = self._forget(response.request_id)[0]
        if response.body:
            self.awaiting[channel] = (node, response)
        else:
            self._send_response(node, response, None)
        return True

    def body(self, channel, payload):
        """A binary message no exchange of this node waited for: a forwarded response's body?"""
        waiting = self.awaiting.pop(channel, None)
        if waiting is not None:
            self._send_response(waiting[0], waiting[1], payload)

    def _send_response(self, node, r, body):
        text = hc.encode_response(r.request_id, r.status_code, r.status_description, r.response_headers, r.body)
        try:
            d = self.bus.send(node, RESPONSE, {"key": r.request_id, "text": text, "body": b64(body)})
        except ValueError:
            text = hc.encode_response(r.request_id, RESPONSE_TOO_LARGE, "Response Too Large For The Cluster Bus")
            d = self.bus.send(node, RESPONSE, {"key": r.request_id, "text": text, "body": None})
            self.log.warn("cluster: a response to {node} was too large for the bus; the listener must answer "
                          "large responses over the request's rendezvous address", node=node)
        d.addErrback(lambda f: None)  # lost: the client's response deadline on its node


@implementer(IResponseRouter)
class ForwardingResponses:
    """The HC door's response router when clustered: the HTTP door's, then the router's for the
    responses to requests of other nodes (which the door would drop)."""

    def __init__(self, door, router):
        self.door, self.router = door, router

    def control_response(self, channel, response):
        if response.request_id in self.door.exchanges or not self.router.response(channel, response):
            self.door.control_response(channel, response)

    def control_binary(self, channel, payload):
        if channel in self.router.awaiting:
            self.router.body(channel, payload)
        else:
            self.door.control_binary(channel, payload)


def install(cluster, switchboard, http_door):
    """Route senders and events across the cluster's nodes (relayd.relay_service, when clustered)."""
    router = Router(cluster.bus, cluster.registry, switchboard, cluster.reactor, cluster.settings.node_url)
    router.door = http_door
    router.events = ClusterEvents(cluster.bus, router, switchboard, http_door.policies)
    switchboard.router = router
    http_door.hybrid.set_response_router(ForwardingResponses(http_door, router))
    return router
