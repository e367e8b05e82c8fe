"""relayd settings: TOML file -> typed, validated settings.

Every error names the key and says what to fix, e.g.
``relayd.toml: hybrid_connections[1].max_listeners: must be an integer from 1 to 10000, got "x"``.
"""

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from relayd.endpoint_strings import DEFAULT_LISTEN, MAX_BACKLOG, parse_listen
from relayd import entity_fields
from relayd.cluster.settings import ClusterConfigError, parse_cluster
from relayd.limits import Limits
from relayd.wire import sas
from relayd.wire.names import validate_entity_path

DEFAULT_PUBLIC_URL = None
# In the data directory: the connection-string endpoint (``sb://host:port/[;UseTls=..]``) of the
# relay's first listening port, written at start; ``relayd key show`` prints it.
ENDPOINT_FILE = "endpoint"
DEFAULT_ENDPOINT = "sb://127.0.0.1:9090/"
# Event entities (docs/events.rst): their kinds, and the largest event (max_message), by default
# Azure Relay's 64 KB, at most 16 MiB (each event is held whole while it is handed out).
EVENT_KINDS = ("oneway", "multicast")
DEFAULT_MAX_EVENT = 65536
MAX_EVENT_LIMIT = 16 << 20


class ConfigError(Exception):
    """A bad configuration; the message names the key and the fix."""


@dataclass
class RuleSpec:
    name: str
    key: str
    rights: frozenset
    secondary_key: str | None = None

    def to_rule(self):
        return sas.Rule(self.name, self.key, self.rights, self.secondary_key)

    def __repr__(self):
        return "RuleSpec(name=%r, rights=%r)" % (self.name, sorted(self.rights))


@dataclass
class EntitySpec:
    path: str
    kind: str = "hybrid_connection"
    requires_client_authorization: bool = True
    max_listeners: int = 25
    response_timeout: float = 60.0
    rules: list = field(default_factory=list)
    max_message: int = DEFAULT_MAX_EVENT
    discovery: str = entity_fields.DISCOVERY[0]
    display_name: str | None = None
    user_metadata: str | None = None


@dataclass
class TcpPortSpec:
    listen: str
    mode: str = "port"
    entity: str | None = None
    allow_anonymous: bool = False
    max_via: int = 2048


@dataclass
class Settings:
    listen: list = field(default_factory=lambda: [DEFAULT_LISTEN])
    public_url: str | None = DEFAULT_PUBLIC_URL
    data_dir: str = ""
    create_on_listen: bool = False
    accept_timeout: float = 30.0
    rules: list = field(default_factory=list)
    entities: list = field(default_factory=list)
    tcp_ports: list = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    # [metrics] listen: a separate address serving /metrics without a token (None: only
    # /$relayd/metrics on the relay's port, with a Manage token)
    metrics_listen: str | None = None
    # [cluster]: several nodes as one namespace on Redis (relayd.cluster.settings); None: one process
    cluster: object = None
    source: str = "<defaults>"


def default_data_dir():
    env = os.environ.get("RELAYD_DATA_DIR")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "relayd")


class _Reader:
    def __init__(self, source):
        self.source = source

    def fail(self, where, problem):
        raise ConfigError("%s: %s: %s" % (self.source, where, problem))

    def table(self, data, where, known):
        if not isinstance(data, dict):
            self.fail(where, "must be a table")
        for key in data:
            if key not in known:
                self.fail(
                    "%s.%s" % (where, key) if where else key,
                    "unknown key; expected one of: %s" % ", ".join(sorted(known)),
                )
        return data

    def string(self, data, key, where, default=None, required=False):
        if key not in data:
            if required:
                self.fail("%s.%s" % (where, key), "is required")
            return default
        value = data[key]
        if not isinstance(value, str) or not value:
            self.fail("%s.%s" % (where, key), "must be a non-empty string, got %r" % (value,))
        return value

    def boolean(self, data, key, where, default):
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.fail("%s.%s" % (where, key), "must be true or false, got %r" % (value,))
        return value

    def number(self, data, key, where, default, low, high, integer=False):
        value = data.get(key, default)
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            self.fail(
                "%s.%s" % (where, key),
                "must be %s from %s to %s, got %r"
                % ("an integer" if integer else "a number", low, high, value),
            )
        return value

    def rule(self, data, where):
        self.table(data, where, {"name", "key", "secondary_key", "rights"})
        name = self.string(data, "name", where, required=True)
        key = self.string(data, "key", where, required=True)
        if len(key) < 16:
            self.fail(where + ".key", "is too short; use at least 16 characters (relayd key new makes one)")
        secondary = self.string(data, "secondary_key", where)
        rights = data.get("rights", [])
        if not isinstance(rights, list) or not rights:
            self.fail(where + ".rights", 'must be a non-empty list such as ["Listen", "Send"]')
        try:
            rights = sas.normalize_rights(rights)
        except ValueError as e:
            self.fail(where + ".rights", str(e))
        return RuleSpec(name, key, rights, secondary)

    def rules(self, items, where):
        if not isinstance(items, list):
            self.fail(where, "must be an array of tables ([[%s]])" % where)
        specs = [self.rule(item, "%s[%d]" % (where, i)) for i, item in enumerate(items)]
        names = [r.name.lower() for r in specs]
        for name in names:
            if names.count(name) > 1:
                self.fail(where, "rule name %r is used twice" % name)
        return specs


def _listen_endpoint(value, where, reader):
    try:
        parse_listen(value)
    except ValueError as e:
        reader.fail(where, str(e))
    return value


def parse(data, source="<config>"):
    """Turn a TOML document (already decoded) into :class:`Settings`."""
    r = _Reader(source)
    r.table(data, "", {"relay", "rules", "hybrid_connections", "limits", "tcp_ports", "metrics", "cluster"})
    relay = r.table(data.get("relay", {}), "relay",
                    {"listen", "public_url", "data_dir", "create_on_listen", "accept_timeout"})
    settings = Settings(source=source)
    listen = relay.get("listen", [DEFAULT_LISTEN])
    if isinstance(listen, str):
        listen = [listen]
    if not isinstance(listen, list) or not listen:
        r.fail("relay.listen", "must be a non-empty list of endpoint strings")
    settings.listen = [_listen_endpoint(v, "relay.listen[%d]" % i, r) for i, v in enumerate(listen)]
    public_url = r.string(relay, "public_url", "relay")
    if public_url is not None:
        parts = urlsplit(public_url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            r.fail("relay.public_url", "must be an absolute ws://, wss://, http:// or https:// URL, got %r" % public_url)
        if parts.query or parts.fragment:
            r.fail("relay.public_url", "must not have a query or fragment")
        settings.public_url = public_url.rstrip("/")
    settings.data_dir = r.string(relay, "data_dir", "relay", default_data_dir())
    settings.create_on_listen = r.boolean(relay, "create_on_listen", "relay", False)
    settings.accept_timeout = r.number(relay, "accept_timeout", "relay", 30.0, 1, 3600)
    settings.rules = r.rules(data.get("rules", []), "rules")
    metrics = r.table(data.get("metrics", {}), "metrics", {"listen"})
    if "listen" in metrics:
        settings.metrics_listen = _listen_endpoint(r.string(metrics, "listen", "metrics"), "metrics.listen", r)

    lim = r.table(data.get("limits", {}), "limits", set(Limits.__dataclass_fields__))
    defaults = Limits()
    settings.limits = Limits(
        control_message_max=r.number(lim, "control_message_max", "limits", defaults.control_message_max, 1024, 1 << 30, True),
        open_handshake_timeout=r.number(lim, "open_handshake_timeout", "limits", defaults.open_handshake_timeout, 0.1, 600),
        max_header_bytes=r.number(lim, "max_header_bytes", "limits", defaults.max_header_bytes, 1024, 1 << 20, True),
        max_connections=r.number(lim, "max_connections", "limits", defaults.max_connections, 0, 1 << 20, True),
        control_ping_interval=r.number(lim, "control_ping_interval", "limits", defaults.control_ping_interval, 2, 3600),
        control_ping_timeout=r.number(lim, "control_ping_timeout", "limits", defaults.control_ping_timeout, 2, 3600),
        leg_buffer=r.number(lim, "leg_buffer", "limits", defaults.leg_buffer, 4096, 64 << 20, True),
        http_max_body=r.number(lim, "http_max_body", "limits", defaults.http_max_body, 0, 1 << 40, True),
        soap_max_bytes=r.number(lim, "soap_max_bytes", "limits", defaults.soap_max_bytes, 1024, 256 << 20, True),
        listen_backlog=r.number(lim, "listen_backlog", "limits", defaults.listen_backlog, 1, MAX_BACKLOG, True),
        control_queue_max=r.number(lim, "control_queue_max", "limits", defaults.control_queue_max, 4096, 256 << 20, True),
        control_stall_timeout=r.number(lim, "control_stall_timeout", "limits", defaults.control_stall_timeout, 0.1, 3600),
        refusal_log_burst=r.number(lim, "refusal_log_burst", "limits", defaults.refusal_log_burst, 0, 1 << 20, True),
        refusal_log_interval=r.number(lim, "refusal_log_interval", "limits", defaults.refusal_log_interval, 0.1, 86400),
    )

    # HTTP door deadlines and the SOAP pre-authentication budget (kept apart from the call
    # above so that each limit's range is stated once, here).
    lm = settings.limits
    lm.http_keepalive_timeout = r.number(lim, "http_keepalive_timeout", "limits", defaults.http_keepalive_timeout, 0.1, 3600)
    lm.http_body_timeout = r.number(lim, "http_body_timeout", "limits", defaults.http_body_timeout, 0.1, 3600)
    lm.http_body_min_rate = r.number(lim, "http_body_min_rate", "limits", defaults.http_body_min_rate, 1, 1 << 30, True)
    lm.soap_unauthenticated_budget = r.number(lim, "soap_unauthenticated_budget", "limits",
                                              defaults.soap_unauthenticated_budget, 0, 1 << 34, True)
    lm.soap_unauthenticated_timeout = r.number(lim, "soap_unauthenticated_timeout", "limits",
                                               defaults.soap_unauthenticated_timeout, 0.1, 600)
    lm.max_pending_rendezvous_per_entity = r.number(lim, "max_pending_rendezvous_per_entity", "limits",
                                                    defaults.max_pending_rendezvous_per_entity, 1, 1 << 20, True)
    lm.max_pending_rendezvous = r.number(lim, "max_pending_rendezvous", "limits",
                                         defaults.max_pending_rendezvous, 1, 1 << 22, True)
    lm.rendezvous_retry_after = r.number(lim, "rendezvous_retry_after", "limits",
                                         defaults.rendezvous_retry_after, 1, 3600, True)
    lm.subscriber_queue_messages = r.number(lim, "subscriber_queue_messages", "limits",
                                            defaults.subscriber_queue_messages, 1, 1 << 20, True)
    lm.subscriber_queue_bytes = r.number(lim, "subscriber_queue_bytes", "limits",
                                         defaults.subscriber_queue_bytes, 4096, 1 << 30, True)
    lm.status_watchers = r.number(lim, "status_watchers", "limits", defaults.status_watchers, 0, 10000, True)
    lm.discovery_page_size = r.number(lim, "discovery_page_size", "limits", defaults.discovery_page_size,
                                      1, 100000, True)

    entities = data.get("hybrid_connections", [])
    if not isinstance(entities, list):
        r.fail("hybrid_connections", "must be an array of tables ([[hybrid_connections]])")
    seen = set()
    for i, item in enumerate(entities):
        where = "hybrid_connections[%d]" % i
        r.table(item, where, {"path", "kind", "requires_client_authorization", "max_listeners",
                              "response_timeout", "rules", "max_message", *entity_fields.FIELDS})
        described = {name: item.get(name, EntitySpec.discovery if name == "discovery" else None)
                     for name in entity_fields.FIELDS}
        for name, value in described.items():
            if entity_fields.problem(name, value):
                r.fail("%s.%s" % (where, name), entity_fields.problem(name, value))
        kind = r.string(item, "kind", where, "hybrid_connection")
        if kind not in ("hybrid_connection", "soap") + EVENT_KINDS:
            r.fail(where + ".kind", 'must be "hybrid_connection" (default), "soap" (SOAP/HTTP relay: '
                                    'SOAP faults, WSDL address rewriting), "oneway" (each event to one '
                                    'listener) or "multicast" (each event to every listener), got %r' % kind)
        if "max_message" in item and kind not in EVENT_KINDS:
            r.fail(where + ".max_message", 'applies only to kind = "oneway" or "multicast"; remove it '
                                           'or set the kind')
        path = r.string(item, "path", where, required=True)
        problem = validate_entity_path(path)
        if problem:
            r.fail(where + ".path", problem)
        if path.lower() in seen:
            r.fail(where + ".path", "entity %r is declared twice" % path)
        seen.add(path.lower())
        settings.entities.append(
            EntitySpec(
                path=path,
                kind=kind,
                requires_client_authorization=r.boolean(item, "requires_client_authorization", where, True),
                max_listeners=r.number(item, "max_listeners", where, 25, 1, 10000, True),
                response_timeout=r.number(item, "response_timeout", where, 60.0, 0.1, 3600),
                rules=r.rules(item.get("rules", []), where + ".rules"),
                max_message=r.number(item, "max_message", where, DEFAULT_MAX_EVENT, 1, MAX_EVENT_LIMIT, True),
                **described,
            )
        )
    ports = data.get("tcp_ports", [])
    if not isinstance(ports, list):
        r.fail("tcp_ports", "must be an array of tables ([[tcp_ports]])")
    for i, item in enumerate(ports):
        where = "tcp_ports[%d]" % i
        r.table(item, where, {"listen", "mode", "entity", "allow_anonymous", "max_via"})
        listen = _listen_endpoint(r.string(item, "listen", where, required=True), where + ".listen", r)
        mode = r.string(item, "mode", where, "port")
        if mode not in ("port", "nettcp"):
            r.fail(where + ".mode", 'must be "port" (one entity, any TCP protocol) or "nettcp" '
                                    '([MC-NMF] preamble, routed by Via), got %r' % mode)
        entity = r.string(item, "entity", where)
        if mode == "port":
            if entity is None:
                r.fail(where + ".entity", 'is required with mode = "port": the entity this port forwards to')
            if entity.lower() not in seen:
                r.fail(where + ".entity", "no [[hybrid_connections]] entry has path %r" % entity)
        elif entity is not None:
            r.fail(where + ".entity", 'is not used with mode = "nettcp" (the Via path picks the entity)')
        settings.tcp_ports.append(TcpPortSpec(
            listen=listen, mode=mode, entity=entity,
            allow_anonymous=r.boolean(item, "allow_anonymous", where, False),
            max_via=r.number(item, "max_via", where, 2048, 64, 65536, True),
        ))
    if "cluster" in data:
        try:
            settings.cluster = parse_cluster(data["cluster"], bool(settings.rules))
        except ClusterConfigError as e:
            r.fail(e.where, e.problem)
    return settings


def load(path):
    """Read and validate a TOML config file."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("%s: file not found" % source)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("%s: not valid TOML: %s" % (source, e))
    settings = parse(data, source)
    base = Path(path).resolve().parent
    if not os.path.isabs(settings.data_dir) and "data_dir" in data.get("relay", {}):
        settings.data_dir = str(base / settings.data_dir)
    return settings
