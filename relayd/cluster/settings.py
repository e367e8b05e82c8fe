"""``[cluster]`` of the config file: several relayd nodes as one namespace on Redis.

Pure parsing (no Twisted, no Redis client), called by :func:`relayd.config.parse`::

    [cluster]
    redis = "redis://:PASSWORD@127.0.0.1:6379/0"   # or rediss:// (TLS); password optional
    node_url = "ws://10.0.0.5:9001"                 # this node's public base URL (rendezvous legs)
    node_id = "node-a"                              # default: from node_url's host and port
    heartbeat = 1.0                                 # seconds between heartbeats
    expiry = 3.0                                    # a node's entries vanish this long after its death

Without ``[cluster]`` nothing changes: one process with the embedded SQLite store.
"""

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SCHEMES = ("redis", "rediss")
DEFAULT_PORT = 6379
DEFAULT_HEARTBEAT = 1.0
DEFAULT_EXPIRY = 3.0
NODE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
KEYS = {"redis", "node_url", "node_id", "heartbeat", "expiry"}


@dataclass
class RedisAddress:
    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    password: str | None = None
    username: str | None = None
    tls: bool = False

    def __repr__(self):  # never the password (logs, error messages)
        return "RedisAddress(%s://%s:%d/%d%s)" % ("rediss" if self.tls else "redis", self.host, self.port,
                                                 self.db, ", with password" if self.password else "")


@dataclass
class ClusterSettings:
    redis: RedisAddress
    node_url: str
    node_id: str
    heartbeat: float = DEFAULT_HEARTBEAT
    expiry: float = DEFAULT_EXPIRY


class ClusterConfigError(ValueError):
    """``(where, problem)``: the key and what to fix."""

    def __init__(self, where, problem):
        super().__init__("%s: %s" % (where, problem))
        self.where, self.problem = where, problem


def parse_redis_url(url, where="cluster.redis"):
    """A :class:`RedisAddress` from ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://``."""
    if not isinstance(url, str) or not url:
        raise ClusterConfigError(where, "must be a redis://host:port/db URL, got %r" % (url,))
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ClusterConfigError(where, "must start with redis:// (plain) or rediss:// (TLS), got %r; "
                                        "Unix sockets and sentinels are not supported" % (parts.scheme + "://"))
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ClusterConfigError(where, "has a port that is not a number from 1 to 65535")
    if not parts.hostname:
        raise ClusterConfigError(where, "has no host; write redis://HOST:PORT/DB")
    db = parts.path.strip("/") or "0"
    if not db.isdigit() or int(db) > 65535:
        raise ClusterConfigError(where, "database %r is not a number; write redis://HOST:PORT/0" % db)
    if parts.query or parts.fragment:
        raise ClusterConfigError(where, "must not have a query or fragment")
    password = unquote(parts.password) if parts.password is not None else None
    username = unquote(parts.username) if parts.username else None
    return RedisAddress(parts.hostname, port, int(db), password or None, username, parts.scheme == "rediss")


def default_node_id(node_url):
    """Stable across restarts: the host and port of ``node_url`` (``10.0.0.5-9001``)."""
    parts = urlsplit(node_url)
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    return re.sub(r"[^A-Za-z0-9._-]", "-", "%s-%d" % (parts.hostname, port))


def parse_cluster(data, has_namespace_rules):
    """:class:`ClusterSettings` from the ``[cluster]`` table (a dict), or ClusterConfigError."""
    if not isinstance(data, dict):
        raise ClusterConfigError("cluster", "must be a table ([cluster])")
    for key in data:
        if key not in KEYS:
            raise ClusterConfigError("cluster.%s" % key, "unknown key; expected one of: %s" % ", ".join(sorted(KEYS)))
    if "redis" not in data:
        raise ClusterConfigError("cluster.redis", 'is required: the Redis every node shares, e.g. '
                                                  '"redis://127.0.0.1:6379/0"')
    redis = parse_redis_url(data["redis"])
    node_url = data.get("node_url")
    if node_url is None:
        raise ClusterConfigError("cluster.node_url", "is required when clustered: this node's own public base "
                                                     "URL (e.g. \"ws://10.0.0.5:9001\"), where listeners open "
                                                     "rendezvous legs to it")
    parts = urlsplit(node_url) if isinstance(node_url, str) else None
    if parts is None or parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise ClusterConfigError("cluster.node_url", "must be an absolute ws://, wss://, http:// or https:// URL, "
                                                     "got %r" % (node_url,))
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ClusterConfigError("cluster.node_url", "must be a base URL (scheme, host, port) without a path, "
                                                     "query or fragment")
    node_id = data.get("node_id", default_node_id(node_url))
    if not isinstance(node_id, str) or not NODE_ID_PATTERN.match(node_id):
        raise ClusterConfigError("cluster.node_id", "must be 1 to 64 letters, digits, '.', '_' or '-', got %r"
                                 % (node_id,))
    numbers = {}
    for key, default, low, high in (("heartbeat", DEFAULT_HEARTBEAT, 0.05, 60), ("expiry", DEFAULT_EXPIRY, 0.2, 600)):
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ClusterConfigError("cluster.%s" % key, "must be a number of seconds from %s to %s, got %r"
                                     % (low, high, value))
        numbers[key] = float(value)
    if numbers["expiry"] < 2 * numbers["heartbeat"]:
        raise ClusterConfigError("cluster.expiry", "must be at least twice cluster.heartbeat (%s s), or a node "
                                 "alive but one beat late would be taken for dead" % numbers["heartbeat"])
    if not has_namespace_rules:
        raise ClusterConfigError("rules", "a clustered relay needs the namespace's [[rules]] in the config file "
                                          "(the same file on every node): each node would otherwise generate "
                                          "its own root key")
    return ClusterSettings(redis, node_url.rstrip("/"), node_id, numbers["heartbeat"], numbers["expiry"])
