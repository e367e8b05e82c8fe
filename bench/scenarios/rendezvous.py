"""rendezvous: many WebSocket connections set up with a fixed number of handshakes in flight
and then held open, Node ``ws`` + bufferutil on both ends.

    rendezvous-direct  rendezvous.js -> peer.js hold (a plain WebSocket server)
    rendezvous-relay   rendezvous.js -> relayd (HC senders to one entity) -> peer.js hold as
                       the HC listener, which opens a rendezvous leg for every accept message

Each relayed round starts a fresh relay and listener (so the RSS growth is that of a relay
that never held these connections before), warms them up with one batch of INFLIGHT
connections, and then measures: rendezvous per second while opening COUNT connections, and,
with all COUNT pairs held open, the relay's RSS growth per held relayed connection.
"""

import contextlib
import statistics
import subprocess
import time

import psutil
from zope.interface import moduleProvides

from bench import nodejs
from bench import report as rst
from bench.harness import Case, Option, log
from bench.scenarios import IScenario
from tests.support.waits import wait_until

moduleProvides(IScenario)

NAME = "rendezvous"
TITLE = "Rendezvous and held connections"
ORDER = 18
OPTIONS = (
    Option("--rendezvous-count", type=int, default=2000, help="rendezvous: connections per round (default 2000)"),
    Option("--rendezvous-inflight", type=int, default=64, help="rendezvous: handshakes in flight (default 64)"),
)

ENTITY = "hold"
ENTITIES = nodejs.entity_config(ENTITY)
OPEN_TIMEOUT = 120  # seconds for rendezvous.js to open all its connections
SETTLE_TIMEOUT = 30  # seconds for the holder to see every connection arrive or go
RATE_TARGET = 1500
RSS_TARGET = 6000  # bytes of relay RSS per held relayed connection (6 KB)


class Slot:
    """A process of the relayed case that is replaced every round (CpuMeter reads ``name`` and
    ``cpu()``)."""

    def __init__(self, name):
        self.name = name
        self.proc = None

    def cpu(self):
        return self.proc.cpu() if self.proc else None


def fds(proc):
    try:
        return psutil.Process(proc.p.pid).num_fds()
    except psutil.Error:
        return 0


def hold(url, token, count, inflight, holder, legs_per_connection, relay=None):
    """Open ``count`` connections with rendezvous.js, wait until ``holder`` (the process that
    ends them: the relay, or the direct peer) has all of them, read ``relay``'s RSS, release
    them and wait until ``holder`` has let them go.  The client's result, plus
    ``rss_held``/``relay_cpu_s`` when there is a relay."""
    base_fds = fds(holder)
    cpu0 = relay.cpu() if relay else None
    cmd = ["node", nodejs.script("rendezvous.js"), url, "--count=%d" % count, "--inflight=%d" % inflight,
           "--timeout=%d" % OPEN_TIMEOUT]
    if token:
        cmd.append("--token=%s" % token)
    client = subprocess.Popen(cmd, cwd=nodejs.NODE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + OPEN_TIMEOUT + 10
        while time.monotonic() < deadline:
            line = client.stdout.readline()
            if not line or line.strip() == "HELD":
                break
            lines.append(line)
        stderr = "" if client.poll() is None else client.stderr.read()
        result = nodejs.parse_result("rendezvous.js", "".join(lines), stderr)
        if relay:
            result["relay_cpu_s"] = relay.cpu() - cpu0
        want = base_fds + legs_per_connection * count
        if not wait_until(lambda: fds(holder) >= want, SETTLE_TIMEOUT):
            raise RuntimeError("%s holds %d descriptors, expected %d with every connection open"
                               % (holder.name, fds(holder), want))
        if relay:
            result["rss_held"] = relay.rss()
        client.stdin.close()
        client.wait(SETTLE_TIMEOUT)
        if not wait_until(lambda: fds(holder) <= base_fds + 2, SETTLE_TIMEOUT):
            log("rendezvous: %s still holds %d descriptors (had %d before)" % (holder.name, fds(holder), base_fds))
        return result
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


def run(harness, args):
    why = nodejs.ensure()
    if why:
        return {"skipped": why}
    count, inflight = args.rendezvous_count, args.rendezvous_inflight
    direct_peer = nodejs.start_peer(harness, "peer.js hold", "hold")
    direct_url = "ws://127.0.0.1:%d/" % direct_peer.port
    hold(direct_url, None, inflight, inflight, direct_peer, 1)  # warm-up
    relay_slot, listener_slot = Slot("relayd"), Slot("peer.js hold (HC listener)")
    current = {}

    @contextlib.contextmanager
    def fresh_relay():
        relay = harness.relay(ENTITIES)
        entity = nodejs.Entity(relay, ENTITY)
        listener = nodejs.start_peer(harness, "peer.js hold (HC listener)", "hold", entity)
        try:
            hold(entity.connect_url, entity.token, inflight, inflight, relay, 2)  # warm-up
            relay_slot.proc, listener_slot.proc = relay, listener
            current.update(relay=relay, entity=entity, rss_before=relay.rss())
            yield
        finally:
            relay_slot.proc = listener_slot.proc = None
            harness.stop(listener)
            harness.stop(relay)

    def relayed():
        relay, entity = current["relay"], current["entity"]
        result = hold(entity.connect_url, entity.token, count, inflight, relay, 2, relay=relay)
        result["rss_before"] = current["rss_before"]
        result["rss_per_connection"] = (result["rss_held"] - result["rss_before"]) / count
        return result

    cases = {
        "rendezvous-direct": Case([direct_peer], lambda: hold(direct_url, None, count, inflight, direct_peer, 1)),
        "rendezvous-relay": Case([relay_slot, listener_slot], relayed, setup=fresh_relay),
    }

    def show(s):
        text = "%.0f/s, p99 %.1f ms" % (s["per_s"], s["p99_ms"])
        if "rss_per_connection" in s:
            text += ", %.1f KB RSS per held connection" % (s["rss_per_connection"] / 1000)
        return text

    failures = []
    samples = harness.alternate(cases, "rendezvous.js", show, failures=failures)
    return {"settings": {"rounds": args.rounds, "count": count, "inflight": inflight},
            "samples": samples, "failures": failures, "cpu_percent": harness.cpu_percent(),
            "versions": nodejs.versions()}


def figures(section):
    samples = section["samples"]
    relayed = samples["rendezvous-relay"]
    return (rst.med(samples["rendezvous-direct"], "per_s"), rst.med(relayed, "per_s"),
            rst.med(relayed, "rss_per_connection"),
            statistics.median(1e3 * s["relay_cpu_s"] / s["count"] for s in relayed))


def targets(section):
    _, rate, rss, _ = figures(section)
    n = section["settings"]["count"]
    return [
        rst.target(">= %d rendezvous/s with %d handshakes in flight" % (RATE_TARGET, section["settings"]["inflight"]),
                   "%.0f/s" % rate, rate >= RATE_TARGET),
        rst.target("%d held relayed connections at <= %.0f KB relay RSS each" % (n, RSS_TARGET / 1000),
                   "%.1f KB" % (rss / 1000), rss <= RSS_TARGET),
    ]


def report(section):
    s = section["settings"]
    samples = section["samples"]
    direct, rate, rss, cpu_ms = figures(section)
    relayed = samples["rendezvous-relay"]
    rows = [
        ("direct WebSocket, Node to Node (baseline)", "%.0f" % direct,
         rst.rng(samples["rendezvous-direct"], "per_s", 1, "%.0f"),
         "%.1f ms" % rst.med(samples["rendezvous-direct"], "p50_ms"),
         "%.1f ms" % rst.med(samples["rendezvous-direct"], "p99_ms"), "", ""),
        ("through relayd (sender, accept message, listener's leg)", "%.0f" % rate, rst.rng(relayed, "per_s", 1, "%.0f"),
         "%.1f ms" % rst.med(relayed, "p50_ms"), "%.1f ms" % rst.med(relayed, "p99_ms"), "%.2f ms" % cpu_ms,
         "%.1f KB" % (rss / 1000)),
    ]
    return [
        "%s  ``bench/node/rendezvous.js`` opens %d WebSocket connections, %d handshakes in flight,"
        % (rst.measured(section), s["count"], s["inflight"]),
        "and holds them all open; %d rounds (Node ``ws`` with ``bufferutil``, %s).  Direct: to"
        % (s["rounds"], rst.node_versions(section)),
        "``bench/node/peer.js hold``'s own WebSocket server.  Through relayd: every connection is an HC",
        "sender with a SAS token; relayd sends an accept message on the listener's control channel,",
        "peer.js (the same program, as the HC listener) opens the rendezvous leg, and the sender's",
        "handshake completes when the pair is joined.  Every relayed round has a fresh relay and",
        "listener, warmed up with one batch of %d connections; *RSS per held connection* is the"
        % s["inflight"],
        "relay's RSS with all %d pairs open minus its RSS before the round, divided by %d"
        % (s["count"], s["count"]),
        "(KB = 1,000 bytes).  Handshake times are from the TCP connect to ``open``.",
        "",
        *rst.table(("Path", "Rendezvous/s", "Range", "Handshake p50", "p99", "Relay CPU each",
                    "RSS per held connection"), rows),
        "CPU (median share of one core during a round, opening, holding and closing): "
        + "; ".join(rst.cpu_note(section["cpu_percent"], ("rendezvous-direct", "rendezvous-relay"))) + ".",
        "",
        *rst.failure_notes(section),
    ]
