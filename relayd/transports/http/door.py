"""The HTTP door's factory: the exchanges in flight, the entity kinds' policies, and the
response router that takes listeners' answers off their control channels.

A small request is answered on a control channel: ``{"response": {...}}`` with
``body: true`` is followed by ONE binary message on the same channel -- the response body.
Any control channel of the request's entity may answer (hyco-https answers on its newest
channel after a reconnect).  An answer for an unknown or finished request is dropped,
its body too.
"""

import weakref

from zope.interface import implementer

from relayd.interfaces import IResponseRouter
from relayd.logs import RateLimitedLog
from relayd.transports.http.connection import HttpRelayProtocol
from relayd.transports.http.events import MULTICAST, ONEWAY, EventPolicy
from relayd.transports.http.responses import log
from relayd.transports.http.soap import SoapPolicy


@implementer(IResponseRouter)
class HttpDoor:
    """Shared state of the HTTP relaying door; owns the exchanges in flight by request id."""

    def __init__(self, namespace, switchboard, hybrid_factory, settings, clock, policies=None, answers=None):
        self.namespace = namespace
        self.switchboard = switchboard
        self.hybrid = hybrid_factory
        self.settings = settings
        self.limits = settings.limits
        self.clock = clock
        self.exchanges = {}
        # what the relay answers itself (discovery feed, runtime information): relayd.web.discovery
        self.answers = answers
        self.refusals = RateLimitedLog(log, clock, self.limits.refusal_log_burst, self.limits.refusal_log_interval)
        self._discard_next_binary = set()
        # control channel -> the exchange whose response body is its next binary message
        self._awaiting_body = weakref.WeakKeyDictionary()
        # entity kind -> IKindPolicy (what the kind changes in relaying); by default SOAP's
        # and the event kinds'
        if policies is None:
            policies = [SoapPolicy(settings.limits, clock), EventPolicy(ONEWAY), EventPolicy(MULTICAST)]
        self.policies = {p.kind: p for p in policies}
        # WebSocket publishers share the event kinds' fan-out and counts
        hybrid_factory.event_policies = {k: p for k, p in self.policies.items() if isinstance(p, EventPolicy)}
        hybrid_factory.set_response_router(self)

    def event_counts(self):
        """What each event kind did since the relay started (for ``GET /$relayd/status``)."""
        return {kind: dict(vars(policy.counts)) for kind, policy in self.policies.items()
                if isinstance(policy, EventPolicy)}

    def buildProtocol(self, addr):
        p = HttpRelayProtocol(self)
        p.factory = self
        return p

    # -- responses over a listener's control channel ----------------------------------------

    def control_response(self, channel, response):
        # Any control channel of the request's entity may answer: hyco-https answers on its
        # newest channel after a reconnect, not necessarily the one the request came in on.
        exchange = self.exchanges.get(response.request_id)
        if exchange is None or exchange.entity.path.lower() != channel.entity_path.lower():
            if response.body:
                self._discard_next_binary.add(channel)
            return
        exchange.response_start(response, via_control=True)
        if response.body:
            self._awaiting_body[channel] = exchange

    def control_binary(self, channel, payload):
        if channel in self._discard_next_binary:
            self._discard_next_binary.discard(channel)
            return
        exchange = self._awaiting_body.pop(channel, None)
        if exchange is None:
            return  # e.g. the empty binary message some listeners send after body:false
        exchange.response_body_whole(payload)

    def forget_awaiting(self, exchange):
        """``exchange`` ended: a body that still comes for it on a control channel is dropped."""
        for channel, waiting in list(self._awaiting_body.items()):
            if waiting is exchange:
                del self._awaiting_body[channel]
