"""All cores of one host: ``relayd serve --workers N`` (issue 13 item 7).

The supervisor starts N worker processes, each ``relayd serve ... --worker I`` (that is
``twistd -n --pidfile= relayd ... --worker I``), all nodes of the one Redis cluster of the
config's ``[cluster]`` (required).  :func:`worker_settings` is what ``--worker I`` changes in a
worker's settings:

* every ``relay.listen`` and ``tcp_ports[].listen`` address gets ``reuseport=1``: the workers share
  the public ports and the kernel spreads first connections among them (:mod:`relayd.reuseport`);
* a listen address of its own, ``cluster.node_url``'s port + I (the first ``relay.listen``'s type,
  interface and TLS files), and ``node_url`` with that port: listeners open their rendezvous legs
  there, so a leg reaches the worker that holds the sender;
* ``node_id``: the default (host and port of its node_url), or the configured one + ``-I``;
* ``[metrics] listen``: its port + I.

The supervisor that starts, restarts and stops them is :mod:`relayd.supervisor`.
"""

import dataclasses
import os
from urllib.parse import urlsplit

from relayd import config, endpoint_strings
from relayd.cluster.settings import default_node_id

MAX_WORKERS = 256
NEEDS_CLUSTER = ("relayd serve --workers needs [cluster] in the config file: the workers are nodes of one "
                 "Redis cluster (redis, node_url: the first worker's own port; see docs/deployment.rst)")


def parse_count(value):
    """The N of ``--workers N``: a number from 1 to MAX_WORKERS, or ``auto`` (the usable cores)."""
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not value.isdigit() or not 1 <= int(value) <= MAX_WORKERS:
        raise ValueError("--workers must be a number from 1 to %d or auto (one per usable core), got %r"
                         % (MAX_WORKERS, value))
    return int(value)


def take_count(args):
    """``(N or None, the other arguments)`` from ``relayd serve`` arguments."""
    rest, count = [], None
    items = iter(args)
    for item in items:
        if item == "--workers" or item.startswith("--workers="):
            value = item.split("=", 1)[1] if "=" in item else next(items, None)
            if value is None:
                raise ValueError("--workers needs a value: a number of workers or auto")
            count = parse_count(value)
        else:
            rest.append(item)
    return count, rest


# -- a worker's settings -----------------------------------------------------------------------

def _escape(value):
    return str(value).replace("\\", "\\\\").replace(":", "\\:")


def _endpoint(spec, port=None, reuseport=False):
    """``spec``'s endpoint string with another port and with or without ``reuseport=1``."""
    fields = [spec.kind, str(spec.port if port is None else port)]
    if spec.interface is not None:
        fields.append("interface=" + _escape(spec.interface))
    if spec.backlog is not None:
        fields.append("backlog=%d" % spec.backlog)
    fields += ["%s=%s" % (key, _escape(value)) for key, value in spec.options.items() if key != "reuseport"]
    if reuseport:
        fields.append("reuseport=1")
    return ":".join(fields)


def _inet(description, where):
    spec = endpoint_strings.parse_listen(description)
    if spec.kind == "unix":
        raise config.ConfigError("%s: --workers needs tcp:, tcp6: or ssl: addresses (workers share a port; a "
                                 "Unix socket cannot be shared), got %r" % (where, description))
    if spec.port == 0:
        raise config.ConfigError("%s: --workers needs a fixed port the workers share, not port 0" % where)
    return spec


def worker_settings(settings, index):
    """The settings of worker ``index`` (0, 1, ...); ConfigError names the key to fix."""
    if not str(index).isdigit() or int(index) >= MAX_WORKERS:
        raise config.ConfigError("--worker must be a number from 0 to %d, got %r" % (MAX_WORKERS - 1, index))
    index = int(index)
    cluster = settings.cluster
    if cluster is None:
        raise config.ConfigError(NEEDS_CLUSTER)
    public = [_inet(d, "relay.listen[%d]" % i) for i, d in enumerate(settings.listen)]
    doors = [_inet(t.listen, "tcp_ports[%d].listen" % i) for i, t in enumerate(settings.tcp_ports)]
    parts = urlsplit(cluster.node_url)
    port = (parts.port or (443 if parts.scheme in ("wss", "https") else 80)) + index
    if port > 65535:
        raise config.ConfigError("cluster.node_url: worker %d's port %d is past 65535; choose a lower port"
                                 % (index, port))
    taken = {spec.port for spec in public + doors}
    if port in taken:
        raise config.ConfigError("cluster.node_url: worker %d's node port %d is also a shared listen port; the "
                                 "workers listen on node_url's port + 0..N-1, so give node_url a port outside "
                                 "relay.listen and tcp_ports" % (index, port))
    host = parts.hostname if ":" not in parts.hostname else "[%s]" % parts.hostname
    node_url = "%s://%s:%d" % (parts.scheme, host, port)
    explicit = cluster.node_id != default_node_id(cluster.node_url)
    node_id = "%s-%d" % (cluster.node_id, index) if explicit else default_node_id(node_url)
    changed = dict(
        listen=[_endpoint(spec, reuseport=True) for spec in public] + [_endpoint(public[0], port)],
        tcp_ports=[dataclasses.replace(t, listen=_endpoint(spec, reuseport=True))
                   for t, spec in zip(settings.tcp_ports, doors)],
        cluster=dataclasses.replace(cluster, node_url=node_url, node_id=node_id),
    )
    if settings.metrics_listen:
        spec = _inet(settings.metrics_listen, "metrics.listen")
        changed["metrics_listen"] = _endpoint(spec, spec.port + index)
    return dataclasses.replace(settings, **changed)
