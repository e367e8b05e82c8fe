"""cluster: relayd nodes on one Redis (issue 13), Node ``ws`` + bufferutil clients (bench/node).

Two deployments run side by side for the whole section, each with its own redis-server (started
here on a free loopback port, stopped by its pid) and ``relayd serve --workers N`` (N = 1 and
2: the all-cores mode of one host), every node with its own HC listeners (``peer.js hold`` on
``hold``, ``peer.js sink`` on ``stream``, connected to that node's own port):

    rate-1node, rate-2nodes      rendezvous/s: two rendezvous.js clients at once, each opening
                                 COUNT/2 HC senders with INFLIGHT/2 handshakes in flight and
                                 holding them, client i on node i mod N (as a load balancer spreads
                                 them); every rendezvous meets a listener of its own node
    stream-1node, stream-2nodes  aggregate throughput: two stream.js at once, MiB each, stream i
                                 on node i mod N
    setup-same, setup-cross      the 2-node deployment, entity ``solo`` with its one listener on
                                 node 0: senders one at a time (rendezvous.js, inflight 1) on
                                 node 0 (same node) or on node 1 (cross-node: node 1 asks node 0
                                 through Redis to offer the rendezvous, the leg comes to node 1)
"""

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys

from zope.interface import moduleProvides

from bench import nodejs
from bench import report as rst
from bench.harness import RELAY_CONFIG, Case, Option, Started, free_port, log
from bench.scenarios import IScenario

moduleProvides(IScenario)

NAME = "cluster"
TITLE = "Cluster: one node vs two, same-node vs cross-node rendezvous"
ORDER = 60
OPTIONS = (
    Option("--cluster-count", type=int, default=2000, help="cluster: rendezvous per round and deployment (default 2000)"),
    Option("--cluster-inflight", type=int, default=64, help="cluster: handshakes in flight (default 64)"),
    Option("--cluster-stream-mib", type=int, default=1024, help="cluster: MiB per stream, two streams (default 1024)"),
    Option("--cluster-setup-count", type=int, default=300, help="cluster: one-at-a-time rendezvous per setup case"),
)

CLIENTS = 2  # load generator processes per case, in every deployment
MESSAGE = 256 << 10
OPEN_TIMEOUT = 120
STREAM_TIMEOUT = 600
START_TIMEOUT = 60  # seconds for a deployment's nodes to serve, in the cluster
ENTITIES = "".join(nodejs.entity_config(path) for path in ("hold", "stream", "solo"))
CASES = ("rate-1node", "rate-2nodes", "stream-1node", "stream-2nodes", "setup-same", "setup-cross")


class Node:
    """One node's port: what nodejs.Entity needs."""

    def __init__(self, port):
        self.port = port


def consecutive_ports(count):
    for _ in range(100):
        base = free_port()
        if all(_free(base + i) for i in range(1, count)):
            return base
    raise RuntimeError("no %d consecutive free ports" % count)


def _free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def deploy(harness, name, workers):
    """redis-server + ``relayd serve --workers N`` + the listeners; (their Procs, the supervisor's
    first, the node ports)."""
    from tests.support.redis_server import RedisServer
    from tests.support.relay import relay_status
    from tests.support.waits import wait_until

    redis = RedisServer(os.path.join(harness.workdir, name + "-redis"))
    redis_proc = harness._add(Started("redis-server (%s)" % name, redis, redis.proc, lambda: ""))
    base, public = consecutive_ports(workers), free_port()
    config = RELAY_CONFIG.replace('"tcp:0:interface=127.0.0.1"', '"tcp:%d:interface=127.0.0.1"' % public)
    config = config.replace('data_dir = "data"', 'data_dir = "%s-data"' % name)
    config += '\n[cluster]\nredis = "%s"\nnode_url = "ws://127.0.0.1:%d"\n' % (redis.url, base) + ENTITIES
    path = harness.write("%s.toml" % name, config)
    proc = harness.start("relayd x%d (%s)" % (workers, name), [sys.executable, "-m", "relayd.cli", "serve", "--workers",
                                                              str(workers), "--config", path],
                         cwd=harness.workdir, ready=None)
    ports = [base + i for i in range(workers)]

    def serving(port):
        try:
            cluster = relay_status(Node(port), timeout=3)["cluster"]
        except OSError:
            return False
        return cluster["redis"] == "up" and cluster["nodes"] == workers

    for port in ports:
        if not wait_until(lambda: serving(port), START_TIMEOUT):
            raise RuntimeError("%s: node %d not serving within %d s:\n%s" % (name, port, START_TIMEOUT, proc.text()[-2000:]))
    peers = [nodejs.start_peer(harness, "peer.js %s (%s, node %d)" % (role, name, i), role,
                               nodejs.Entity(Node(port), entity))
             for i, port in enumerate(ports) for role, entity in (("hold", "hold"), ("sink", "stream"))]
    return [proc, redis_proc] + peers, ports


@contextlib.contextmanager
def clients_running():
    """A list for the client processes of one load; any still running at the end are killed."""
    clients = []
    try:
        yield clients
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()


def rendezvous(targets, count, inflight):
    """rendezvous.js clients at once, one per (port, entity) of ``targets``, ``count`` and
    ``inflight`` split among them; held until all are open, then released.  The combined result."""
    with clients_running() as clients:
        for port, path in targets:
            entity = nodejs.Entity(Node(port), path)
            clients.append(subprocess.Popen(
                ["node", nodejs.script("rendezvous.js"), entity.connect_url, "--count=%d" % (count // len(targets)),
                 "--inflight=%d" % max(1, inflight // len(targets)), "--timeout=%d" % OPEN_TIMEOUT,
                 "--token=%s" % entity.token],
                cwd=nodejs.NODE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for client in clients:
            lines = []
            while True:
                line = client.stdout.readline()
                if not line or line.strip() == "HELD":
                    break
                lines.append(line)
            results.append(nodejs.parse_result("rendezvous.js", "".join(lines),
                                               "" if client.poll() is None else client.stderr.read()))
        for client in clients:
            client.stdin.close()
            client.wait(OPEN_TIMEOUT)
        return combine(results, "count", "per_s")


def streams(ports, nbytes):
    """stream.js clients at once, one per port; the combined result."""
    with clients_running() as clients:
        for port in ports:
            entity = nodejs.Entity(Node(port), "stream")
            clients.append(subprocess.Popen(
                ["node", nodejs.script("stream.js"), entity.connect_url, "--bytes=%d" % nbytes,
                 "--message=%d" % MESSAGE, "--timeout=%d" % STREAM_TIMEOUT, "--token=%s" % entity.token],
                cwd=nodejs.NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for client in clients:
            out, err = client.communicate(timeout=STREAM_TIMEOUT + 10)
            results.append(nodejs.parse_result("stream.js", out, err))
        return combine(results, "bytes", "mb_per_s")


def combine(results, amount, rate):
    """Clients that ran at once: their ``amount`` summed over the longest one's seconds (the
    aggregate ``rate``: per second, or MB/s for bytes), the handshake times' worst p50/p99."""
    total = sum(r[amount] for r in results)
    seconds = max(r["seconds"] for r in results)
    out = {amount: total, "seconds": seconds, rate: total / seconds / (1e6 if amount == "bytes" else 1),
           "clients": results}
    if all("p50_ms" in r for r in results):
        out.update(p50_ms=max(r["p50_ms"] for r in results), p99_ms=max(r["p99_ms"] for r in results))
    return out


def run(harness, args):
    why = nodejs.ensure()
    if why:
        return {"skipped": why}
    if not shutil.which("redis-server"):
        return {"skipped": "redis-server is not installed (apt-get install redis-server)"}
    routing = importlib.util.find_spec("relayd.cluster.routing") is not None
    load_start = os.getloadavg()
    one, ports1 = deploy(harness, "one", 1)
    two, ports2 = deploy(harness, "two", 2)
    solo = nodejs.start_peer(harness, "peer.js hold (two, solo)", "hold", nodejs.Entity(Node(ports2[0]), "solo"))
    count, inflight, nbytes = args.cluster_count, args.cluster_inflight, args.cluster_stream_mib << 20
    setup = args.cluster_setup_count

    def spread(ports, path):
        return [(ports[i % len(ports)], path) for i in range(CLIENTS)]

    cases = {
        "rate-1node": Case(one, lambda: rendezvous(spread(ports1, "hold"), count, inflight)),
        "rate-2nodes": Case(two, lambda: rendezvous(spread(ports2, "hold"), count, inflight)),
        "stream-1node": Case(one, lambda: streams([ports1[0]] * CLIENTS, nbytes)),
        "stream-2nodes": Case(two, lambda: streams([ports2[i % 2] for i in range(CLIENTS)], nbytes)),
        "setup-same": Case(two[:2] + [solo], lambda: rendezvous([(ports2[0], "solo")], setup, 1)),
        "setup-cross": Case(two[:2] + [solo], lambda: rendezvous([(ports2[1], "solo")], setup, 1)),
    }
    if not routing:
        log("cluster: relayd/cluster/routing.py is absent: no cross-node case")
        del cases["setup-cross"]
    log("cluster: warm-up (code, buffers, Redis connections)")
    for ports in (ports1, ports2):
        rendezvous(spread(ports, "hold"), 2 * inflight, inflight)
        streams([ports[i % len(ports)] for i in range(CLIENTS)], 16 << 20)
    rendezvous([(ports2[0], "solo")], 20, 1)
    if routing:
        rendezvous([(ports2[1], "solo")], 20, 1)

    def show(s):
        if "mb_per_s" in s:
            return "%.0f MB/s" % s["mb_per_s"]
        return "%.0f/s, p50 %.2f ms, p99 %.2f ms" % (s["per_s"], s["p50_ms"], s["p99_ms"])

    failures = []
    samples = harness.alternate(cases, "node clients", show, failures=failures)
    return {"settings": {"rounds": args.rounds, "cores": os.cpu_count(), "count": count, "inflight": inflight, "clients": CLIENTS,
                         "stream_mib": args.cluster_stream_mib, "message_kib": MESSAGE >> 10, "setup_count": setup},
            "samples": samples, "failures": failures, "cpu_percent": harness.cpu_percent(),
            "versions": nodejs.versions(), "routing": routing,
            "loadavg": [round(x, 2) for x in load_start + os.getloadavg()]}


def figures(section):
    """Medians over the rounds: rendezvous/s and aggregate MB/s of 1 and 2 nodes with their ratios,
    and the setup latency p50/p99 (ms) same-node and cross-node (None without the cross case)."""
    samples = section["samples"]
    out = {
        "rate": (rst.med(samples["rate-1node"], "per_s"), rst.med(samples["rate-2nodes"], "per_s")),
        "mb_per_s": (rst.med(samples["stream-1node"], "mb_per_s"), rst.med(samples["stream-2nodes"], "mb_per_s")),
        "same": (rst.med(samples["setup-same"], "p50_ms"), rst.med(samples["setup-same"], "p99_ms")),
        "cross": None,
    }
    out["rate_ratio"] = out["rate"][1] / out["rate"][0]
    out["mb_ratio"] = out["mb_per_s"][1] / out["mb_per_s"][0]
    if samples.get("setup-cross"):
        out["cross"] = (rst.med(samples["setup-cross"], "p50_ms"), rst.med(samples["setup-cross"], "p99_ms"))
    return out


def targets(section):
    return []  # issue 13 asks for these figures, with no target


def report(section):
    s = section["settings"]
    samples = section["samples"]
    f = figures(section)
    cpu = section["cpu_percent"]

    def relay_cpu(case):
        return "%.0f%%" % sum(v for k, v in cpu.get(case, {}).items() if k.startswith(("relayd", "redis")))

    rows = [
        ("1 node", "%.0f" % f["rate"][0], rst.rng(samples["rate-1node"], "per_s", 1, "%.0f"),
         "%.1f ms" % rst.med(samples["rate-1node"], "p99_ms"), relay_cpu("rate-1node"),
         "%.0f MB/s" % f["mb_per_s"][0], rst.rng(samples["stream-1node"], "mb_per_s", 1, "%.0f"),
         relay_cpu("stream-1node")),
        ("2 nodes", "%.0f" % f["rate"][1], rst.rng(samples["rate-2nodes"], "per_s", 1, "%.0f"),
         "%.1f ms" % rst.med(samples["rate-2nodes"], "p99_ms"), relay_cpu("rate-2nodes"),
         "%.0f MB/s" % f["mb_per_s"][1], rst.rng(samples["stream-2nodes"], "mb_per_s", 1, "%.0f"),
         relay_cpu("stream-2nodes")),
        ("2 nodes / 1 node", "%.2fx" % f["rate_ratio"], "", "", "", "%.2fx" % f["mb_ratio"], "", ""),
    ]
    setup_rows = [("same node (sender and listener on node 0)", "%.2f ms" % f["same"][0],
                   rst.rng(samples["setup-same"], "p50_ms", 1, "%.2f"), "%.2f ms" % f["same"][1], "")]
    if f["cross"]:
        setup_rows.append(("cross-node (sender on node 1, listener on node 0)", "%.2f ms" % f["cross"][0],
                           rst.rng(samples["setup-cross"], "p50_ms", 1, "%.2f"), "%.2f ms" % f["cross"][1],
                           "%+.2f ms p50, %+.2f ms p99" % (f["cross"][0] - f["same"][0], f["cross"][1] - f["same"][1])))
    return [
        "%s  Two deployments side by side, each with its own redis-server on loopback and"
        % rst.measured(section),
        "``relayd serve --workers N`` (N = 1, 2) sharing a port, every node with its own listeners",
        "(``bench/node/peer.js``) on its own node port; %d rounds, cases alternating (Node ``ws`` with"
        % s["rounds"],
        "``bufferutil``, %s).  Rendezvous/s: %d ``rendezvous.js`` clients at once open %d HC senders"
        % (rst.node_versions(section), s["clients"], s["count"]),
        "in all (%d handshakes in flight in all) and hold them; client i goes to node i mod N, as a"
        % s["inflight"],
        "load balancer would spread them, and meets a listener of its own node.  Throughput: %d"
        % s["clients"],
        "``stream.js`` at once, %d MiB each in %d KiB messages, stream i on node i mod N, the bytes of"
        % (s["stream_mib"], s["message_kib"]),
        "both over the longer one's time.  Relay CPU is the relayd processes' and redis-server's share",
        "of one core.  This machine has %d cores, shared by the nodes with the load generators and"
        % s.get("cores", 2),
        "listeners (every process measured in ``rate-2nodes`` used %.0f%% of the %d%% there are) and"
        % (sum(cpu.get("rate-2nodes", {}).values()), 100 * s.get("cores", 2)),
        "with other work.%s" % (
            "  Load average (1, 5, 15 min) at the section's start: %.2f, %.2f, %.2f; at its end: %.2f, %.2f,"
            " %.2f (other work on the machine)." % tuple(section["loadavg"]) if section.get("loadavg") else ""),
        "",
        *rst.table(("Deployment", "Rendezvous/s", "Range", "Handshake p99", "Relay CPU", "Aggregate stream",
                    "Range (MB/s)", "Relay CPU"), rows),
        "Rendezvous setup, one at a time (``rendezvous.js`` with one handshake in flight, %d per round),"
        % s["setup_count"],
        "on the 2-node deployment's entity ``solo``, whose one listener is on node 0: from the",
        "sender's TCP connect to its ``open`` (the accept message reaching the listener, its leg",
        "joining).  Cross-node: node 1 offers the rendezvous to node 0 through Redis pub/sub, node 0",
        "writes it on the listener's control channel, the leg comes to node 1; no data byte crosses",
        "between the nodes.%s" % ("" if f["cross"] else "  (No cross-node case: relayd/cluster/routing.py was absent.)"),
        "",
        *rst.table(("Rendezvous", "Setup p50", "Range (ms)", "p99", "Cross-node cost"), setup_rows),
        "CPU (median share of one core during a round; ``relayd xN`` counts its workers): "
        + "; ".join(rst.cpu_note(cpu, CASES)) + ".",
        "",
        *rst.failure_notes(section),
    ]
