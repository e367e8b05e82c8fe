"""Several relayd nodes as one namespace on Redis (issue 13).

* :mod:`relayd.cluster.settings` -- ``[cluster]`` of the config file (pure);
* :mod:`relayd.cluster.redis_link` -- the only module that imports the Redis client (txredisapi):
  a command connection and a pub/sub connection, reconnected with backoff, up/down state;
* :mod:`relayd.cluster.bus` -- node-to-node messages over pub/sub (a channel per node, one broadcast);
* :mod:`relayd.cluster.registry` -- node heartbeats and the cluster-wide listener registry (the
  per-entity cap enforced atomically by a Lua script);
* :mod:`relayd.cluster.store` -- entities and rules in Redis, every change applied on every node;
* :mod:`relayd.cluster.service` -- the twisted Service the relay starts before its doors.
"""
