"""The cluster's series in ``GET /$relayd/metrics`` (registered on the relay's own
prometheus-client registry, :attr:`relayd.web.metrics.Metrics.registry`), read at scrape time:

* ``relayd_cluster_redis_up`` -- 1 while this node's link to Redis is up, else 0;
* ``relayd_cluster_nodes`` -- live nodes as of the last heartbeat (0 while Redis is down);
* ``relayd_cluster_bus_dropped_total{reason}`` -- node-to-node messages dropped on receipt.
"""

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from relayd.cluster.redis_link import UP


class ClusterCollector:
    def __init__(self, cluster):
        self.cluster = cluster  # relayd.cluster.service.ClusterService

    def describe(self):
        return []

    def collect(self):
        c = self.cluster
        up = c.link.state == UP
        yield GaugeMetricFamily("relayd_cluster_redis_up", "1 while this node reaches the cluster's Redis, else 0",
                                value=1 if up else 0)
        yield GaugeMetricFamily("relayd_cluster_nodes", "live relayd nodes in the cluster (last heartbeat)",
                                value=len(c.registry.live_nodes) if up else 0)
        dropped = CounterMetricFamily("relayd_cluster_bus_dropped", "node-to-node messages dropped on receipt",
                                      labels=["reason"])
        for reason, n in sorted(c.bus.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
