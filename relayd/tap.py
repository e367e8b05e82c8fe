"""``twistd relayd``: options and the one place that wires every part together."""

import os
import sys

from twisted.application import service
from twisted.internet import defer, endpoints, reactor
from twisted.logger import Logger
from twisted.python import usage

from relayd import config
from relayd.namespace import Namespace, SqliteStore
from relayd.switchboard import Switchboard
from relayd.transports.front import ConnectionBudget, CountingFactory, FrontDoorFactory
from relayd.wire import nmf
from relayd.transports.nettcp.door import TcpDoor
from relayd.transports.hybrid.http import HttpDoor
from relayd.transports.hybrid.websocket import HybridFactory
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


class Options(usage.Options):
    synopsis = "[--config relayd.toml] [--listen ENDPOINT ...] [--data-dir DIR]"
    longdesc = (
        "Run the relay.  With no options it listens on 127.0.0.1:9090, keeps its state in "
        "the default data directory and creates a namespace root key on first start "
        "(show it with: relayd key show)."
    )
    optParameters = [
        ["config", "c", None, "TOML configuration file (see docs/configuration.rst)"],
        ["data-dir", "d", None, "state directory (default: $RELAYD_DATA_DIR or ~/.local/share/relayd)"],
        ["public-url", None, None, "base URL clients use to reach the relay, e.g. wss://relay.example.com"],
    ]
    optFlags = [
        ["create-on-listen", None, "create an unknown hybrid connection when a listener with a Manage token listens on it"],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint):
        """Twisted server endpoint to listen on (repeatable), e.g. tcp:9090:interface=127.0.0.1"""
        self["listen"].append(endpoint)

    def postOptions(self):
        try:
            if self["config"]:
                settings = config.load(self["config"])
            else:
                settings = config.parse({}, "<defaults>")
            overrides = {}
            if self["listen"]:
                overrides["listen"] = self["listen"]
            if self["public-url"]:
                overrides["public_url"] = self["public-url"]
            if overrides:
                merged = config.parse({"relay": overrides}, "command line")
                for key in overrides:
                    setattr(settings, key, getattr(merged, key))
            if self["data-dir"]:
                settings.data_dir = self["data-dir"]
            if self["create-on-listen"]:
                settings.create_on_listen = True
        except config.ConfigError as e:
            # The message and status 1 here rather than a UsageError: twistd 24.3 (still supported) exits
            # with status 0 after a UsageError, and the option listing would bury the message.
            print("%s: %s" % (" ".join(sys.argv[0:2]), e), file=sys.stderr, flush=True)
            raise SystemExit(1)
        self.settings = settings


class RelayService(service.Service):
    log = Logger()

    def __init__(self, settings, reactor=reactor):
        self.settings = settings
        self.reactor = reactor
        self.ports = []
        self.tcp_ports = []
        self.store = SqliteStore(settings.data_dir)
        self.namespace = Namespace(self.store, settings)
        self.switchboard = Switchboard(reactor, accept_timeout=settings.accept_timeout, limits=settings.limits)
        self.namespace.on_removed(lambda entity: self.switchboard.close_entity(entity.path))
        self.hybrid = HybridFactory(self.namespace, self.switchboard, settings, reactor)
        self.site = make_site(self.namespace, self.switchboard, settings, reactor)
        self.http = HttpDoor(self.namespace, self.switchboard, self.hybrid, settings, reactor)
        # One connection budget (limits.max_connections) for the HTTP port and every TCP door.
        self.budget = ConnectionBudget(reactor, settings.limits.max_connections)
        self.front = FrontDoorFactory(
            self.hybrid, self.site, reactor, budget=self.budget,
            max_head=settings.limits.max_header_bytes,
            head_timeout=settings.limits.open_handshake_timeout,
            max_connections=settings.limits.max_connections,
            http_factory=self.http,
        )

    def startService(self):
        super().startService()
        s = self.settings
        if self.namespace.generated_root:
            self.log.info(
                "created the namespace root rule {rule} with a new random key in {path}; "
                "show it with: relayd key show --data-dir {dir}",
                rule=self.namespace.rules[0].name, path=self.store.path, dir=s.data_dir,
            )
        self.log.info("relayd: {n} entities, data in {dir}", n=len(self.namespace.entities()), dir=s.data_dir)
        for description in s.listen:
            self._listen(description, self.front, "relayd listening on")
        for spec in s.tcp_ports:
            door = TcpDoor(spec, self.namespace, self.switchboard, s, self.reactor, self.http_netloc)
            what = "relayd %s door (%s) listening on" % (
                spec.mode, spec.entity if spec.mode == "port" else "routed by Via")
            refusal = nmf.fault(nmf.SERVER_TOO_BUSY) if spec.mode == "nettcp" else b""
            counted = CountingFactory(self.budget, door, "TCP door %s" % spec.listen, refusal)
            self._listen(spec.listen, counted, what, tcp_door=True)

    def endpoint(self, description):
        """The server endpoint for a listen string, with the configured backlog and, for ``ssl:``,
        relayd's TLS context (see :func:`relayd.config.tls_options`)."""
        spec = config.parse_listen(description)
        backlog = spec.backlog or self.settings.limits.listen_backlog
        if spec.kind == "ssl":
            return endpoints.SSL4ServerEndpoint(self.reactor, spec.port, config.tls_options(spec),
                                                backlog=backlog, interface=spec.interface or "")
        return endpoints.serverFromString(self.reactor, spec.with_backlog(backlog))

    def _listen(self, description, factory, what, tcp_door=False):
        try:
            d = self.endpoint(description).listen(factory)
        except ValueError as e:  # a key or certificate file changed since the config was read
            d = defer.fail(e)
        failed = []
        d.addCallbacks(self._listening, failed.append, callbackArgs=(what, tcp_door, description))
        if failed:  # every supported endpoint type listens synchronously
            message = "cannot listen on %s: %s" % (description, failed[0].getErrorMessage())
            self.log.error("relayd {message}", message=message)
            for port in self.ports + self.tcp_ports:
                port.stopListening()
            raise StartupError(message)
        d.addErrback(self._listen_failed, description)

    def http_netloc(self):
        """host:port senders and listeners use for the HTTP/WebSocket port."""
        if self.settings.public_url:
            from urllib.parse import urlsplit

            return urlsplit(self.settings.public_url).netloc
        for port in self.ports:
            addr = port.getHost()
            return "%s:%d" % (addr.host, addr.port)
        return "localhost"

    def _listening(self, port, what, tcp_door, description):
        (self.tcp_ports if tcp_door else self.ports).append(port)
        addr = port.getHost()
        self.log.info("{what} {host}:{port}", what=what, host=getattr(addr, "host", addr),
                      port=getattr(addr, "port", ""))
        if not tcp_door and not self.endpoint_recorded:
            endpoint = connection_endpoint(self.settings.public_url, addr,
                                           config.parse_listen(description).kind == "ssl")
            if endpoint is not None:
                self._record_endpoint(endpoint)

    endpoint_recorded = False

    def _record_endpoint(self, endpoint):
        """Tell ``relayd key show`` where this relay listens (data_dir/endpoint)."""
        path = os.path.join(self.settings.data_dir, config.ENDPOINT_FILE)
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write(endpoint + "\n")
            os.replace(path + ".tmp", path)
            self.endpoint_recorded = True
        except OSError as e:
            self.log.warn("cannot record the relay's endpoint in {path}: {error}", path=path, error=e)

    def _listen_failed(self, failure, description):
        self.log.error("relayd cannot listen on {endpoint}: {error}", endpoint=description,
                       error=failure.getErrorMessage())
        if self.reactor.running:
            self.reactor.stop()

    def stopService(self):
        super().stopService()
        for path, _count in list(self.switchboard.listener_counts().items()):
            self.switchboard.close_entity(path, 1001, "the relay is shutting down")
        ports, self.ports = self.ports + self.tcp_ports, []
        self.tcp_ports = []
        from twisted.internet import defer
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])


def _report_startup_errors():
    """Uncaught StartupError (twistd re-raises what startService raised): the message on stderr
    instead of a traceback; the exit status stays 1."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, StartupError):
            print("relayd: %s" % value, file=sys.__stderr__, flush=True)
        else:
            previous(kind, value, tb)

    sys.excepthook = hook


def makeService(options):
    _report_startup_errors()
    return RelayService(options.settings)
