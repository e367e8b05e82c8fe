"""What the relay is carrying now: one record per relayed connection (or HTTP request), its bytes
counted as they flow, and running totals of the ones that ended (issue 12 items 4 and 7).

* :class:`Flow` -- one direction's byte counter.  A data path holds the :class:`Flow` of the
  direction it reads and adds each chunk's length to it (``flow.n += len(chunk)``): one integer
  add per read, nothing allocated.  ``up`` is what the sender (client) sends towards the
  listener, ``down`` what the listener sends back.
* :class:`Connection` -- entity, door, peer, start time, the two flows, status (HTTP status,
  WebSocket close code; the first one set wins) and tracking id.  :meth:`Connection.close` ends
  it once: its bytes go into the totals, the record leaves the registry (nothing of it is kept)
  and the end line is logged (:func:`relayd.logs.log_end`).
* :class:`Traffic` -- the registry of live connections plus totals of closed ones, so
  :meth:`Traffic.totals` (bytes each way, live connections by door) is exact at any moment and
  costs one pass over the live connections, and per-entity counters for the metrics
  (:mod:`relayd.metrics`): :meth:`Traffic.count` (an outcome per entity, e.g. a sender
  connection that succeeded), bytes per entity, ends per door and status.  Entities are keyed
  by their lower-cased path; :meth:`Traffic.forget` drops a deleted entity's counts.

No socket code: the doors call in (see docs/operations.rst, "Metrics").
"""

from relayd import logs

# Connection outcomes, as Azure counts them (ListenerConnections-Success/-ClientError/-ServerError).
SUCCESS, CLIENT_ERROR, SERVER_ERROR = "success", "client_error", "server_error"
# WebSocket close codes that end a connection normally (no code is a normal end too).
NORMAL_CLOSE_CODES = frozenset({None, 1000, 1001, 1005})
# The status of a WebSocket leg whose TCP connection ended without a close frame (RFC 6455 7.1.5).
ABNORMAL_CLOSE = 1006


# Per-entity counters (Traffic.count): a sender connection (or HTTP request) made or refused, a
# sender's connection ended, a listener's control channel made or refused, one that ended.
SENDER_CONNECTIONS, SENDER_DISCONNECTS = "sender_connections", "sender_disconnects"
LISTENER_CONNECTIONS, LISTENER_DISCONNECTS = "listener_connections", "listener_disconnects"
HTTP_REQUESTS = "http_requests"  # its outcome is the HTTP status


def outcome_of(status):
    """An HTTP status or a WebSocket close code as Azure's outcome: success, client_error or
    server_error.  HTTP: < 400 success, 4xx client error, else server error.  WebSocket: a normal
    close (1000, 1001, none) is success, 1011/1014/1006 (the relay or the far end broke) a server
    error, other codes (policy, size, protocol errors: the sender's doing) client errors."""
    if status in NORMAL_CLOSE_CODES or not isinstance(status, int):
        return SUCCESS
    if status < 400:
        return SUCCESS
    if status < 500:
        return CLIENT_ERROR
    if status < 1000:
        return SERVER_ERROR
    return SERVER_ERROR if status in (1006, 1011, 1012, 1013, 1014) else CLIENT_ERROR


def entity_key(path):
    return (path or "").strip("/").lower()


class Flow:
    """Bytes read so far in one direction of one connection."""

    __slots__ = ("n",)

    def __init__(self):
        self.n = 0


class Connection:
    """One relayed connection or HTTP request, live (see the module doc)."""

    __slots__ = ("registry", "door", "entity", "peer", "started", "up", "down", "status", "tracking",
                 "closed", "__weakref__")

    def __init__(self, registry, door, entity, peer, started, tracking):
        self.registry = registry
        self.door = door
        self.entity = entity
        self.peer = peer
        self.started = started
        self.up = Flow()
        self.down = Flow()
        self.status = None
        self.tracking = tracking
        self.closed = False

    def set_status(self, status):
        """Record how it ended (the first status or close code given is kept)."""
        if self.status is None:
            self.status = status

    def close(self, status=None):
        """End it (once): bytes into the totals, the record out of the registry, the end line."""
        if not self.closed:
            self.registry._close(self, status)

    def describe(self, now):
        return {"door": self.door, "entity": self.entity, "peer": self.peer,
                "bytes_up": self.up.n, "bytes_down": self.down.n,
                "duration": round(max(0.0, now - self.started), 3), "tracking": self.tracking}


def peer_text(peer):
    """A peer address (an IAddress or a string) as "host:port"."""
    host = getattr(peer, "host", None)
    if host is not None:
        port = getattr(peer, "port", None)
        return ("[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)) if port is not None else host
    return str(peer) if peer is not None else "-"


class Traffic:
    """Live connections and the totals of closed ones (see the module doc).  ``clock``: an
    ``IReactorTime``; ``log_end``: called with a closed connection's end-line fields (None: no
    line)."""

    def __init__(self, clock, log_end=logs.log_end):
        self.clock = clock
        self.log_end = log_end
        self._live = {}  # Connection -> None (insertion order, O(1) removal)
        self.closed_up = 0  # bytes of closed connections, each way
        self.closed_down = 0
        self._closed_bytes = {}  # entity key -> [up, down] of its closed connections
        self._opened = {}  # door -> connections opened
        self._ended = {}  # (door, status) -> connections ended with that status or close code
        self._counts = {}  # (metric, entity key, outcome) -> count

    # -- connections ---------------------------------------------------------------------------

    def open(self, door, entity, peer, tracking=None):
        """A new live connection through ``door`` to ``entity`` (path) from ``peer``."""
        conn = Connection(self, door, entity_key(entity), peer_text(peer), self.clock.seconds(), tracking)
        self._live[conn] = None
        self._opened[door] = self._opened.get(door, 0) + 1
        self.count(SENDER_CONNECTIONS, conn.entity, SUCCESS)
        return conn

    def _close(self, conn, status):
        conn.closed = True
        conn.set_status(status)
        self._live.pop(conn, None)
        up, down = conn.up.n, conn.down.n
        self.closed_up += up
        self.closed_down += down
        per = self._closed_bytes.get(conn.entity)
        if per is None:
            per = self._closed_bytes[conn.entity] = [0, 0]
        per[0] += up
        per[1] += down
        key = (conn.door, conn.status)
        self._ended[key] = self._ended.get(key, 0) + 1
        self.count(SENDER_DISCONNECTS, conn.entity)
        conn.registry = None  # nothing of it is kept here; its Flows go with it
        if self.log_end is not None:
            self.log_end(conn.door, conn.entity, conn.peer, "-" if conn.status is None else conn.status,
                         up, down, max(0.0, self.clock.seconds() - conn.started), conn.tracking or "-")

    def live(self):
        """The live connections (a snapshot list)."""
        return list(self._live)

    def describe_live(self, limit=100):
        """The first ``limit`` live connections as dicts (for a status page)."""
        now = self.clock.seconds()
        out = []
        for conn in self._live:
            if len(out) >= limit:
                break
            out.append(conn.describe(now))
        return out

    def totals(self):
        """Bytes relayed each way so far (closed + live, exact now) and live connections by door."""
        up, down = self.closed_up, self.closed_down
        by_door = {}
        for conn in self._live:
            up += conn.up.n
            down += conn.down.n
            by_door[conn.door] = by_door.get(conn.door, 0) + 1
        return {"bytes_up": up, "bytes_down": down, "connections": len(self._live),
                "connections_by_door": by_door}

    def bytes_by_entity(self):
        """{entity key: [bytes up, bytes down]} over closed and live connections."""
        out = {k: list(v) for k, v in self._closed_bytes.items()}
        for conn in self._live:
            per = out.get(conn.entity)
            if per is None:
                per = out[conn.entity] = [0, 0]
            per[0] += conn.up.n
            per[1] += conn.down.n
        return out

    def live_by_entity(self):
        """{entity key: live connections}."""
        out = {}
        for conn in self._live:
            out[conn.entity] = out.get(conn.entity, 0) + 1
        return out

    def opened_by_door(self):
        return dict(self._opened)

    def ended(self):
        """{(door, status): connections ended so}."""
        return dict(self._ended)

    # -- per-entity counters ---------------------------------------------------------------------

    def count(self, metric, entity, outcome=SUCCESS):
        """One more ``metric`` event (e.g. "sender_connections") of ``entity`` with ``outcome``."""
        key = (metric, entity_key(entity), outcome)
        self._counts[key] = self._counts.get(key, 0) + 1

    def refused(self, listener, entity, status):
        """A listener's (``listener`` true) or a sender's connection to ``entity`` refused with ``status``."""
        self.count(LISTENER_CONNECTIONS if listener else SENDER_CONNECTIONS, entity, outcome_of(status))

    def counts(self):
        """{(metric, entity key, outcome): count}."""
        return dict(self._counts)

    def forget(self, entity):
        """A deleted entity: its counts and bytes go (its series disappear from the metrics)."""
        key = entity_key(entity)
        self._closed_bytes.pop(key, None)
        for k in [k for k in self._counts if k[1] == key]:
            del self._counts[k]
