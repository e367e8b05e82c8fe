"""The relay's service tree: :class:`RelayService` (a ``MultiService``) wires the parts the doors
share -- the store and namespace, the switchboard, the WebSocket, HTTP and management factories,
one connection budget -- and holds a :class:`DoorService` per listening socket (the HTTP port and
each TCP door).  ``twistd relayd`` (:mod:`relayd.tap`) builds it once the options and the config
file have been read, so that a mistake there is reported before any of this is imported."""

import os

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, endpoints, reactor
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

import relayd
from relayd import config, endpoint_strings
from relayd.namespace import Namespace, SqliteStore
from relayd.store import StoreError
from relayd.store_writer import StoreWriter
from relayd.switchboard import Switchboard
from relayd.traffic import Traffic
from relayd.transports.front import ConnectionBudget, CountingFactory, FrontDoorFactory
from relayd.wire import nmf
from relayd.transports.tcp import TcpDoor
from relayd.transports.http.door import HttpDoor
from relayd.transports.websocket import HybridFactory
from relayd.web.metrics import Health, Metrics, MetricsPage, MetricsRoot
from relayd.web.site import make_site


def connection_endpoint(public_url, addr, tls):
    """The ``Endpoint=`` value of a connection string for clients of this relay:
    ``sb://host:port/``, plus ``;UseTls=true`` (TLS on a loopback host, where sb:// means plain)
    or ``;UseTls=false`` (plain on another host, where sb:// means TLS).  From ``public_url``
    when set, else from the listening address (0.0.0.0 / :: become the loopback address).
    None for a Unix socket."""
    import ipaddress
    from urllib.parse import urlsplit

    if public_url:
        parts = urlsplit(public_url)
        host = parts.hostname
        tls = parts.scheme in ("wss", "https")
        port = parts.port or (443 if tls else 80)
    else:
        host, port = getattr(addr, "host", None), getattr(addr, "port", None)
        if host is None or port is None:
            return None
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    netloc = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    endpoint = "sb://%s/" % netloc
    if tls and loopback:
        endpoint += ";UseTls=true"
    elif not tls and not loopback:
        endpoint += ";UseTls=false"
    return endpoint


class StartupError(Exception):
    """relayd cannot start (e.g. a listen address cannot be bound); the message says why.

    Raised from ``startService``: twistd then removes its pidfile, reports the failure to the
    parent of a daemon, and exits non-zero (``makeService`` prints the message, not a traceback)."""


def server_endpoint(reactor, description, default_backlog):
    """The server endpoint for a listen string, with its backlog (``default_backlog`` unless it
    sets one) and, for ``ssl:``, relayd's TLS context (see :func:`relayd.endpoint_strings.tls_options`).
    ValueError when a key or certificate file changed since the config was read."""
    spec = endpoint_strings.parse_listen(description)
    backlog = spec.backlog or default_backlog
    if spec.reuseport:  # shared with the other workers of relayd serve --workers
        from relayd.reuseport import ReusePortEndpoint

        tls = endpoint_strings.tls_options(spec) if spec.kind == "ssl" else None
        return ReusePortEndpoint(reactor, spec, backlog, tls)
    if spec.kind == "ssl":
        return endpoints.SSL4ServerEndpoint(reactor, spec.port, endpoint_strings.tls_options(spec),
                                            backlog=backlog, interface=spec.interface or "")
    return endpoints.serverFromString(reactor, spec.with_backlog(backlog))


class DoorService(StreamServerEndpointService):
    """One listening socket of the relay -- the HTTP port or a TCP door -- as a service.

    It binds in ``startService``, not in ``privilegedStartService``: under ``twistd --uid`` the
    relay binds as the user it runs as, so a port that user may not bind is a start-up error
    too.  A socket that cannot be bound raises :class:`StartupError` from ``startService``
    (every supported endpoint type listens synchronously); a later failure is logged and stops
    the reactor.  ``port`` is the bound :class:`~twisted.internet.interfaces.IListeningPort`
    (None until then), and :meth:`whenListening` a Deferred that fires with it.
    """

    log = Logger()

    def __init__(self, reactor, description, default_backlog, factory, what):
        super().__init__(None, factory)  # the endpoint is made at start: TLS files are read then
        self.reactor = reactor
        self.description = description
        self.default_backlog = default_backlog
        self.what = what  # the log line's start: "relayd listening on", "relayd port door (x) listening on"
        self.port = None
        self._outcome = None  # the port, or the Failure to bind it, once known
        self._waiters = []

    def whenListening(self):
        """A Deferred that fires with the listening port (at once when already bound), or fails
        with the reason it could not be bound."""
        d = defer.Deferred()
        if self._outcome is None:
            self._waiters.append(d)
        else:
            self._fire(d)
        return d

    def privilegedStartService(self):
        service.Service.privilegedStartService(self)  # no bind here: see the class docstring

    def startService(self):
        service.Service.startService(self)
        try:
            self.endpoint = server_endpoint(self.reactor, self.description, self.default_backlog)
            self._waitingForPort = self.endpoint.listen(self.factory)
        except ValueError as e:  # a key or certificate file changed since the config was read
            self._waitingForPort = defer.fail(e)
        failed = []
        self._waitingForPort.addCallbacks(self._listening, failed.append)
        if failed:
            message = "cannot listen on %s: %s" % (self.description, failed[0].getErrorMessage())
            self.log.error("relayd {message}", message=message)
            self._settle(Failure(StartupError(message)))
            raise StartupError(message)
        self._waitingForPort.addErrback(self._listen_failed)

    def _listening(self, port):
        self.port = port
        addr = port.getHost()
        self.log.info("{what} {host}:{port}", what=self.what, host=getattr(addr, "host", addr),
                      port=getattr(addr, "port", ""))
        self._settle(port)
        return port

    def _listen_failed(self, failure):
        self.log.error("relayd cannot listen on {endpoint}: {error}", endpoint=self.description,
                       error=failure.getErrorMessage())
        self._settle(failure)
        if self.reactor.running:
            self.reactor.stop()

    def _settle(self, outcome):
        self._outcome = outcome
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            self._fire(d)

    def _fire(self, d):
        if isinstance(self._outcome, Failure):
            d.errback(self._outcome)
        else:
            d.callback(self._outcome)

    def stopService(self):
        self.port = self._outcome = None
        if self._waitingForPort is None:  # never started (a door before it could not listen)
            service.Service.stopService(self)
            return defer.succeed(None)
        return super().stopService()


class RelayService(service.MultiService):
    """The relay: a :class:`DoorService` per listening socket (``relay.listen``: the HTTP
    port; ``tcp_ports``: the TCP doors) around the parts they share.  :meth:`whenListening`
    fires with the bound ports once every door listens."""

    log = Logger()

    def __init__(self, settings, reactor=reactor):
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        self.cluster = None  # [cluster]: the namespace and listener registry in Redis (relayd.cluster)
        if settings.cluster is not None:
            from relayd.cluster.service import ClusterService

            self.cluster = ClusterService(settings.cluster, reactor)  # started first, stopped last
            self.store = self.cluster.store
            os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)  # the endpoint file (no SQLite store)
        else:
            try:
                self.store = SqliteStore(settings.data_dir)
            except StoreError as e:
                raise StartupError(str(e))
        self.namespace = Namespace(self.store, settings, reactor)
        self.writer = StoreWriter(self.store, reactor)  # not a child: started first, stopped after the doors
        self.namespace.write = self.writer.run
        self.switchboard = Switchboard(reactor, accept_timeout=settings.accept_timeout, limits=settings.limits)
        self.namespace.on_removed(lambda entity: self.switchboard.close_entity(entity.path))
        if self.cluster is not None:
            self.cluster.attach(self.namespace, self.switchboard)
        self.hybrid = HybridFactory(self.namespace, self.switchboard, settings, reactor)
        self.site = make_site(self.namespace, self.switchboard, settings, reactor)
        self.http = HttpDoor(self.namespace, self.switchboard, self.hybrid, settings, reactor,
                             answers=self.site.discovery)
        self.site.management.status_extras["events"] = self.http.event_counts
        # what is relayed now, counted as it flows (relayd.traffic); version and uptime in the status
        self.traffic = Traffic(reactor)
        self.started = reactor.seconds()
        self.hybrid.traffic = self.http.traffic = self.traffic
        self.namespace.on_removed(lambda entity: self.traffic.forget(entity.path))
        self.site.management.status_extras.update(
            traffic=self.traffic.totals, version=lambda: relayd.__version__,
            uptime=lambda: round(reactor.seconds() - self.started, 3))
        if self.cluster is not None:
            self.site.management.status_extras["cluster"] = self.cluster.status
            from relayd.cluster.routing import install  # senders and events across nodes
            self.site.management.status_extras["routing"] = install(self.cluster, self.switchboard, self.http).status
        # GET /$relayd/metrics (Manage token) and /$relayd/healthz (none): relayd.web.metrics
        self.metrics = Metrics(self.namespace, self.switchboard, self.traffic, self.http.event_counts)
        self.health = Health()
        self.site.management.managed["metrics"] = MetricsPage(self.metrics)
        self.site.management.open_paths["/$relayd/healthz"] = self.health
        if self.cluster is not None:  # relayd_cluster_redis_up, relayd_cluster_nodes, ...
            from relayd.cluster.metrics import ClusterCollector

            self.metrics.registry.register(ClusterCollector(self.cluster))
        # One connection budget (limits.max_connections) for the HTTP port and every TCP door.
        self.budget = ConnectionBudget(reactor, settings.limits.max_connections)
        self.front = FrontDoorFactory(
            self.hybrid, self.site, reactor, budget=self.budget,
            max_head=settings.limits.max_header_bytes,
            head_timeout=settings.limits.open_handshake_timeout,
            max_connections=settings.limits.max_connections,
            http_factory=self.http,
        )
        backlog = settings.limits.listen_backlog
        self.http_doors = [DoorService(reactor, description, backlog, self.front, "relayd listening on")
                           for description in settings.listen]
        self.tcp_doors = []
        for spec in settings.tcp_ports:
            door = TcpDoor(spec, self.namespace, self.switchboard, settings, reactor, self.http_netloc,
                           event_policies=self.hybrid.event_policies)
            door.traffic = self.traffic
            what = "relayd %s door (%s) listening on" % (
                spec.mode, spec.entity if spec.mode == "port" else "routed by Via")
            refusal = nmf.fault(nmf.SERVER_TOO_BUSY) if spec.mode == "nettcp" else b""
            counted = CountingFactory(self.budget, door, "TCP door %s" % spec.listen, refusal)
            self.tcp_doors.append(DoorService(reactor, spec.listen, backlog, counted, what))
        self.metrics_doors = []  # [metrics] listen: /metrics without a token
        if settings.metrics_listen:
            metrics_site = server.Site(MetricsRoot(MetricsPage(self.metrics), self.health))
            metrics_site.noisy = False
            self.metrics_doors.append(DoorService(reactor, settings.metrics_listen, backlog, metrics_site,
                                                  "relayd metrics listening on"))
        for door in self.http_doors + self.tcp_doors + self.metrics_doors:
            door.setServiceParent(self)

    @property
    def ports(self):
        """The bound ports of the HTTP/WebSocket listen addresses, in ``relay.listen`` order."""
        return [door.port for door in self.http_doors if door.port is not None]

    @property
    def tcp_ports(self):
        """The bound ports of the TCP doors, in ``tcp_ports`` order."""
        return [door.port for door in self.tcp_doors if door.port is not None]

    def whenListening(self):
        """A Deferred that fires with every bound port (HTTP ports first, then the TCP doors)
        once all doors listen, or fails (:class:`~twisted.internet.defer.FirstError`) when one
        cannot."""
        return defer.gatherResults([door.whenListening() for door in self], consumeErrors=True)

    def startService(self):
        s = self.settings
        if self.namespace.generated_root:
            self.log.info(
                "created the namespace root rule {rule} with a new random key in {path}; "
                "show it with: relayd key show --data-dir {dir}",
                rule=self.namespace.rules[0].name, path=self.store.path, dir=s.data_dir,
            )
        self.log.info("relayd: {n} entities, data in {dir}", n=len(self.namespace.entities()), dir=s.data_dir)
        if self.cluster is not None:
            self.cluster.startService()
        self.writer.startService()
        try:
            super().startService()
        except StartupError:
            for door in self:
                if door.port is not None:
                    door.port.stopListening()
            self._stop_writer(None)
            raise
        for door in self.http_doors:
            door.whenListening().addCallbacks(self._record_endpoint_of, self._not_listening,
                                              callbackArgs=(door,))

    def http_netloc(self):
        """host:port senders and listeners use for the HTTP/WebSocket port."""
        if self.settings.public_url:
            from urllib.parse import urlsplit

            return urlsplit(self.settings.public_url).netloc
        for port in self.ports:
            addr = port.getHost()
            return "%s:%d" % (addr.host, addr.port)
        return "localhost"

    endpoint_recorded = False

    def _record_endpoint_of(self, port, door):
        """Tell ``relayd key show`` where this relay listens (data_dir/endpoint): the first
        HTTP port with a connection-string endpoint (not a Unix socket)."""
        if self.endpoint_recorded:
            return
        endpoint = connection_endpoint(self.settings.public_url, port.getHost(),
                                       endpoint_strings.parse_listen(door.description).kind == "ssl")
        if endpoint is None:
            return
        path = os.path.join(self.settings.data_dir, config.ENDPOINT_FILE)
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write(endpoint + "\n")
            os.replace(path + ".tmp", path)
            self.endpoint_recorded = True
        except OSError as e:
            self.log.warn("cannot record the relay's endpoint in {path}: {error}", path=path, error=e)

    def _not_listening(self, failure):
        """A door that failed to listen after start has logged it and stopped the reactor."""

    def stopService(self):
        self.health.stopping = True  # /$relayd/healthz: 503 from now on
        for path, _count in list(self.switchboard.listener_counts().items()):
            self.switchboard.close_entity(path, 1001, "the relay is shutting down")
        stopped = defer.maybeDeferred(super().stopService)
        return stopped.addBoth(self._stop_writer)

    def _stop_writer(self, result):
        """After the doors: the queued store writes finish, then the store closes."""
        if self.writer.running:
            self.writer.stopService()
        if self.cluster is not None and self.cluster.running:
            return defer.maybeDeferred(self.cluster.stopService).addBoth(lambda _: result)
        return result
