"""``GET /$relayd/metrics`` (Prometheus text format, prometheus-client) and ``GET /$relayd/healthz``
(issue 12 item 4).  See docs/operations.rst, "Metrics", for every series and its Azure Monitor name.

* :class:`RelayCollector` -- a custom collector over a dedicated ``CollectorRegistry`` (never the
  process-wide one): at scrape time it reads :mod:`relayd.traffic` (bytes counted as they flow,
  live connections, per-entity counters), the switchboard (listeners) and the event kinds'
  counts.  Per-entity series carry the label ``entity`` for existing entities only: a deleted
  entity's series go away with it, so the number of series stays bounded by the namespace.
* :class:`Metrics` -- the registry plus the rendezvous setup histogram (offer -> accept, fed by
  :meth:`relayd.switchboard.Switchboard.add_accept_observer`).
* :class:`MetricsPage` -- the resource: the exposition made on the reactor thread (prometheus
  client's own Twisted ``MetricsResource`` renders in a thread pool, which would read the
  relay's live state from another thread).  On the relay's port it sits behind the Manage token
  (the management API checks it); on the separate ``[metrics] listen`` address no token is asked.
* :class:`Health` -- 200 ``ok`` while the relay serves, 503 ``stopping`` once it stops; no token,
  no details.
"""

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from twisted.web import resource

from relayd import traffic

# The classic Prometheus text format (what generate_latest writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Rendezvous setup (offer -> the listener's accept leg), seconds.
SETUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOMES = (traffic.SUCCESS, traffic.CLIENT_ERROR, traffic.SERVER_ERROR)


class RelayCollector:
    """Reads the relay's state when scraped (see the module doc)."""

    def __init__(self, namespace, switchboard, counted, event_counts=None):
        self.namespace = namespace
        self.switchboard = switchboard
        self.traffic = counted  # the relay's relayd.traffic.Traffic
        self.event_counts = event_counts or (lambda: {})

    def describe(self):
        return []  # collected at scrape time only (not when registered)

    def collect(self):
        entities = {traffic.entity_key(e.path): e.path for e in self.namespace.entities()}
        counts = self.traffic.counts()
        for name, metric, azure in (
                ("relayd_listener_connections", traffic.LISTENER_CONNECTIONS, "ListenerConnections"),
                ("relayd_sender_connections", traffic.SENDER_CONNECTIONS, "SenderConnections")):
            by_outcome = CounterMetricFamily(name, "%s by outcome (Azure %s-Success/-ClientError/-ServerError)"
                                             % (metric.replace("_", " "), azure), labels=["entity", "outcome"])
            requests = CounterMetricFamily(name.replace("connections", "connection_requests"),
                                           "%s attempted (Azure %s-TotalRequests)" % (metric.replace("_", " "), azure),
                                           labels=["entity"])
            for key, path in entities.items():
                total = 0
                for outcome in OUTCOMES:
                    n = counts.get((metric, key, outcome), 0)
                    total += n
                    by_outcome.add_metric([path, outcome], n)
                requests.add_metric([path], total)
            yield by_outcome
            yield requests
        for name, metric, azure in (("relayd_listener_disconnects", traffic.LISTENER_DISCONNECTS, "ListenerDisconnects"),
                                    ("relayd_sender_disconnects", traffic.SENDER_DISCONNECTS, "SenderDisconnects")):
            family = CounterMetricFamily(name, "connections that ended (Azure %s)" % azure, labels=["entity"])
            for key, path in entities.items():
                family.add_metric([path], counts.get((metric, key, traffic.SUCCESS), 0))
            yield family
        live = self.traffic.live_by_entity()
        listeners = self.switchboard.listener_counts()
        active = GaugeMetricFamily("relayd_active_connections", "relayed connections open now (Azure ActiveConnections)",
                                   labels=["entity"])
        active_listeners = GaugeMetricFamily("relayd_active_listeners",
                                             "listener control channels open now (Azure ActiveListeners)", labels=["entity"])
        for key, path in entities.items():
            active.add_metric([path], live.get(key, 0))
            active_listeners.add_metric([path], listeners.get(key, 0))
        yield active
        yield active_listeners
        moved = CounterMetricFamily("relayd_bytes_transferred", "bytes relayed, counted as they flow (Azure "
                                    "BytesTransferred); up: sender to listener, down: back", labels=["entity", "direction"])
        per_entity = self.traffic.bytes_by_entity()
        for key, path in entities.items():
            up, down = per_entity.get(key, (0, 0))
            moved.add_metric([path, "up"], up)
            moved.add_metric([path, "down"], down)
        yield moved
        yield from self._doors()
        yield from self._http(counts)
        yield from self._events()

    def _doors(self):
        opened = CounterMetricFamily("relayd_door_connections", "relayed connections (or HTTP requests) opened, by door",
                                     labels=["door"])
        for door, n in sorted(self.traffic.opened_by_door().items()):
            opened.add_metric([door], n)
        yield opened
        open_now = GaugeMetricFamily("relayd_door_active_connections", "relayed connections open now, by door",
                                     labels=["door"])
        for door, n in sorted(self.traffic.totals()["connections_by_door"].items()):
            open_now.add_metric([door], n)
        yield open_now
        ended = CounterMetricFamily("relayd_connection_ends", "relayed connections ended, by door and close code or "
                                    "HTTP status (1006: dropped without a close frame)", labels=["door", "code", "outcome"])
        for (door, code), n in sorted(self.traffic.ended().items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            ended.add_metric([door, "none" if code is None else str(code), traffic.outcome_of(code)], n)
        yield ended

    def _http(self, counts):
        by_status = {}
        for (metric, _entity, status), n in counts.items():
            if metric == traffic.HTTP_REQUESTS:
                by_status[status] = by_status.get(status, 0) + n
        family = CounterMetricFamily("relayd_http_requests", "HTTP requests answered, by status (the listener's or the "
                                     "relay's)", labels=["status", "outcome"])
        for status, n in sorted(by_status.items()):
            family.add_metric([str(status), traffic.outcome_of(status)], n)
        yield family

    def _events(self):
        family = CounterMetricFamily("relayd_events", "events of oneway/multicast entities: published, delivered "
                                     "(one per subscriber reached), dropped, cut (slow subscribers closed)",
                                     labels=["kind", "outcome"])
        for kind, counted in sorted(self.event_counts().items()):
            for outcome, n in sorted(counted.items()):
                family.add_metric([kind, outcome], n)
        yield family


class Metrics:
    """The relay's metrics registry (see the module doc)."""

    def __init__(self, namespace, switchboard, counted, event_counts=None):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RelayCollector(namespace, switchboard, counted, event_counts))
        self.setup = Histogram("relayd_rendezvous_setup_seconds", "rendezvous setup: the offer to a listener until its "
                               "rendezvous leg accepted", buckets=SETUP_BUCKETS, registry=self.registry)
        switchboard.add_accept_observer(self.accepted)
        switchboard.add_observer(self.listener_event)
        self.traffic = counted

    def accepted(self, rendezvous, seconds):
        self.setup.observe(seconds)

    def listener_event(self, event, path, count):
        """Switchboard observer: a listener came online (a control channel accepted) or went."""
        if event == "online":
            self.traffic.count(traffic.LISTENER_CONNECTIONS, path, traffic.SUCCESS)
        elif event == "offline":
            self.traffic.count(traffic.LISTENER_DISCONNECTS, path)

    def exposition(self):
        return generate_latest(self.registry)


class MetricsPage(resource.Resource):
    """The exposition, made on the reactor thread (GET and HEAD)."""

    isLeaf = True

    def __init__(self, metrics):
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        request.setHeader(b"cache-control", b"no-store")
        return self.metrics.exposition()

    def render(self, request):
        return _only_get(request) or self.render_GET(request)


def _only_get(request):
    """405 for a method other than GET and HEAD (its body), else None."""
    if request.method not in (b"GET", b"HEAD"):
        request.setResponseCode(405)
        request.setHeader(b"allow", b"GET, HEAD")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"use GET\n"
    return None


class Health(resource.Resource):
    """``/$relayd/healthz``: ``ok`` (200) while the relay serves, ``stopping`` (503) once it stops."""

    isLeaf = True
    stopping = False

    def render(self, request):
        refused = _only_get(request)  # a probe's answer means "serving": not for any method
        if refused:
            return refused
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if self.stopping:
            request.setResponseCode(503)
            return b"stopping\n"
        return b"ok\n"


class MetricsRoot(resource.Resource):
    """The root of the separate ``[metrics] listen`` address: ``/metrics`` and ``/$relayd/metrics``
    without a token, ``/healthz`` and ``/$relayd/healthz``; anything else 404."""

    def __init__(self, page, health):
        super().__init__()
        self.page = page
        self.health = health

    def getChild(self, name, request):
        path = request.path.split(b"?", 1)[0]
        if path in (b"/metrics", b"/$relayd/metrics"):
            return self.page
        if path in (b"/healthz", b"/$relayd/healthz"):
            return self.health
        return resource.NoResource("this address serves /metrics and /healthz")

    def render(self, request):
        return self.getChild(b"", request).render(request)
