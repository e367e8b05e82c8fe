"""The cluster as a service of the relay: built by :class:`relayd.relay_service.RelayService`
when the config has ``[cluster]``, started before the doors and stopped after them.

It holds the Redis link, the bus, the registry and the namespace sync
(:mod:`relayd.cluster.store`), and the switchboard's :class:`ListenerGate`: a listener's
handshake waits (at most ``ADMIT_TIMEOUT``) for the registry to count the entity's listeners
cluster-wide.  While Redis is down (or does not answer in time, or fails) the cap is counted on
this node only, and the listener is registered once Redis is back.  :meth:`ClusterService.status` is the
``cluster`` member of ``GET /$relayd/status``.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from relayd.cluster.bus import Bus
from relayd.cluster.redis_link import UP, RedisDown, RedisLink
from relayd.cluster.registry import Registry
from relayd.cluster.store import NamespaceSync, RedisStore
from relayd.switchboard import TooManyListeners

ADMIT_TIMEOUT = 2.0  # seconds a listener's handshake waits for the registry; then the local count decides


class ListenerGate:
    """The switchboard's :attr:`~relayd.switchboard.Switchboard.gate` when clustered."""

    log = Logger()

    def __init__(self, registry, link, clock):
        self.registry, self.link, self.clock = registry, link, clock
        self.local_decisions = 0  # listeners admitted on the local count (Redis down or late)

    def admit(self, switchboard, path, channel, max_listeners):
        if max_listeners and switchboard.listener_count(path) >= max_listeners:
            switchboard.add_listener(path, channel, max_listeners)  # raises TooManyListeners
        listener = channel.listener_id
        if not self.link.up:
            return defer.maybeDeferred(self._locally, switchboard, path, channel, max_listeners)
        asked = self.registry.register(path, listener, max_listeners)
        asked.addTimeout(ADMIT_TIMEOUT, self.clock)

        def decided(admitted):
            if not admitted:
                raise TooManyListeners("entity '%s' already has %d listeners in the cluster, its maximum "
                                       "(max_listeners); close a listener or raise max_listeners"
                                       % (path, max_listeners))
            try:
                switchboard.add_listener(path, channel, max_listeners)
            except TooManyListeners:
                self.release(path, listener)
                raise

        def unanswered(failure):
            if not failure.check(RedisDown, defer.TimeoutError):
                self.log.failure("cluster: the registry failed; {path}'s cap counted on this node", failure,
                                 path=path)
            return self._locally(switchboard, path, channel, max_listeners)

        return asked.addCallbacks(decided, unanswered)

    def _locally(self, switchboard, path, channel, max_listeners):
        switchboard.add_listener(path, channel, max_listeners)
        self.local_decisions += 1
        self.registry.remember(path, channel.listener_id)

    def remote_count(self, path):
        """The entity's listeners on the other nodes (see Registry.remote_count)."""
        return self.registry.remote_count(path)

    def with_remote(self, counts):
        """``counts`` ({entity key: listeners here}) plus the other nodes' listeners."""
        counts = dict(counts)
        for key, n in self.registry.remote_counts().items():
            counts[key] = counts.get(key, 0) + n
        return counts

    def release(self, path, listener_id):
        d = self.registry.unregister(path, listener_id)
        d.addErrback(lambda f: self.registry.forget(path, listener_id))


class ClusterService(service.Service):
    log = Logger()

    def __init__(self, settings, reactor):
        self.settings = settings  # relayd.cluster.settings.ClusterSettings
        self.reactor = reactor
        self.link = RedisLink(reactor, settings.redis)
        self.bus = Bus(self.link, settings.node_id)
        self.registry = Registry(self.link, self.bus, reactor, settings.node_id, settings.node_url,
                                 settings.heartbeat, settings.expiry)
        self.store = RedisStore(self.link, self.bus, repr(settings.redis))
        self.gate = ListenerGate(self.registry, self.link, reactor)
        self.sync = None

    def attach(self, namespace, switchboard):
        """Keep ``namespace`` in step with Redis and gate ``switchboard``'s listeners."""
        self.sync = NamespaceSync(namespace, self.link, self.bus, self.reactor)
        namespace.read_through = self.sync.read_through  # a WebSocket handshake's miss reads Redis
        namespace.write = defer.maybeDeferred  # RedisStore's writes return their Deferreds
        switchboard.gate = self.gate

    def startService(self):
        super().startService()
        self.log.info("cluster: node {node} ({url}) on Redis {redis}", node=self.settings.node_id,
                      url=self.settings.node_url, redis=self.settings.redis)
        self.link.start()
        self.registry.start()

    def stopService(self):
        super().stopService()
        d = self.registry.stop()
        return d.addBoth(lambda _: self.link.stop())

    def status(self):
        """``{"node_id", "redis": "up"|"down", "since", "nodes", "rejoined"}`` for GET /$relayd/status."""
        return {"node_id": self.settings.node_id, "node_url": self.settings.node_url,
                "redis": self.link.state, "since": self.link.since,
                "nodes": len(self.registry.live_nodes) if self.link.state == UP else None,
                "bus_dropped": dict(self.bus.dropped),
                "rejoined": self.registry.rejoined}  # times this node's key had expired (a stopped process)
