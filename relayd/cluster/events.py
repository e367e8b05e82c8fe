"""Events across nodes (issue 13 item 5): an event published on any node reaches the subscribers
of every node.

* ``multicast``: the publishing node writes the event to its own subscribers and sends its
  encoded frames (:func:`relayd.transports.http.events.event_frames`, base64) once to each other
  node the registry knows subscribers of the entity on -- only to those (:data:`EVENT`).  Each
  node writes them to its local subscribers through their bounded queues, as its own events.
  Redis delivers one node's messages to another in the order they were sent, so a publisher's
  events keep their order on every node.
* ``oneway``: one listener cluster-wide, picked at random over this node's and the other nodes'
  listeners; a remote pick gets the event with its listener id (its node gives it to another of
  its listeners if that one is gone meanwhile).
* ``X-Relayd-Delivered`` (what :meth:`EventPolicy.deliver` returns) counts the local subscribers
  the event was handed to plus the other nodes' subscribers as the registry knows them when the
  event is published (1 for a oneway event sent to another node): the other nodes' own outcomes
  (a subscriber cut, one gone meanwhile) are counted there, not reported back.
* An event is sent at most once: a node that is gone, Redis down, or an event over the bus's
  ``MAX_MESSAGE`` (larger than an entity's default ``max_message``) reaches only this node's
  subscribers; counted in :attr:`ClusterEvents.lost`.
"""

import base64

from twisted.logger import Logger

EVENT = "event"


def b64(data):
    """Bytes as text in a bus message (None stays None)."""
    return None if data is None else base64.b64encode(data).decode("ascii")


def unb64(text):
    """ValueError on text that is not base64."""
    return b"" if not text else base64.b64decode(text.encode("ascii"), validate=True)


class ClusterEvents:
    log = Logger()

    def __init__(self, bus, router, switchboard, policies):
        self.bus, self.router, self.switchboard = bus, router, switchboard
        self.policies = policies  # entity kind -> EventPolicy (the HTTP door's)
        self.sent = 0  # event messages sent to other nodes
        self.received = 0
        self.lost = 0  # not sent (too large, Redis down, node gone)
        bus.on(EVENT, self._received)

    def _send(self, node, payload):
        """Send one event to ``node``: False when it is known at once not to go (too large, Redis
        down, no such node), else True (a later failure is only counted)."""
        try:
            d = self.bus.send(node, EVENT, payload)
        except ValueError as e:
            self.lost += 1
            self.log.warn("cluster: an event of {path} cannot cross nodes: {e}", path=payload["entity"], e=e)
            return False
        going = [True]

        def counted(receivers):
            if not receivers:
                self.lost += 1
                going[0] = False

        d.addCallbacks(counted, lambda failure: counted(0))
        if going[0]:
            self.sent += 1
        return going[0]

    def multicast(self, kind, path, frames):
        """Send the event to every other node with subscribers of ``path``; returns how many
        subscribers those nodes have (the registry's view)."""
        by_node = {}
        for node, _listener in self.router.remote(path):
            by_node[node] = by_node.get(node, 0) + 1
        if not by_node:
            return 0
        encoded = b64(frames)
        return sum(n for node, n in sorted(by_node.items())
                   if self._send(node, {"entity": path, "kind": kind, "frames": encoded}))

    def oneway(self, policy, path, frames):
        """Hand the event to one listener cluster-wide; 1 when it was (or was sent to its node), else 0."""
        here = len(self.switchboard.listeners(path))
        remote = self.router.remote(path)
        if not here and not remote:
            return 0
        if self.router.rng.randrange(here + len(remote)) < here and policy.hand_here(self.switchboard, path, frames):
            return 1
        for node, listener in self.router.rng.sample(remote, len(remote)):
            if self._send(node, {"entity": path, "kind": policy.kind, "frames": b64(frames), "listener": listener}):
                return 1
        return policy.hand_here(self.switchboard, path, frames)

    def _received(self, payload, from_node):
        path, kind, frames = payload.get("entity"), payload.get("kind"), payload.get("frames")
        policy = self.policies.get(kind)
        listener = payload.get("listener")
        if not isinstance(path, str) or policy is None or not isinstance(frames, str):
            self.bus.dropped["malformed"] += 1
            return
        try:
            frames = unb64(frames)
        except ValueError:
            self.bus.dropped["malformed"] += 1
            return
        self.received += 1
        policy.hand_here(self.switchboard, path, frames, listener if isinstance(listener, str) else None)
