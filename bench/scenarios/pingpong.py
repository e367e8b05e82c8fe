"""pingpong: 64-byte messages one at a time, Node ``ws`` + bufferutil on both ends.

    pingpong-direct  pingpong.js -> peer.js echo (a plain WebSocket server)
    pingpong-relay   pingpong.js -> relayd -> peer.js echo (the same process, as an HC listener)

The figure is what relayd adds to a round trip: relayed percentile minus direct percentile.
"""

from zope.interface import moduleProvides

from bench import nodejs
from bench import report as rst
from bench.harness import Case, Option
from bench.scenarios import IScenario

moduleProvides(IScenario)

NAME = "pingpong"
TITLE = "64-byte ping-pong"
ORDER = 15
OPTIONS = (
    Option("--pingpong-count", type=int, default=10000, help="pingpong: timed round trips per round (default 10000)"),
    Option("--pingpong-size", type=int, default=64, help="pingpong: message bytes (default 64)"),
)

ENTITY = "echo"
ENTITIES = nodejs.entity_config(ENTITY)
WARMUP = 1000  # untimed round trips before the timed ones
TIMEOUT = 300
P50_TARGET_US = 50
P99_TARGET_US = 300


def run(harness, args):
    why = nodejs.ensure()
    if why:
        return {"skipped": why}
    relay = harness.relay(ENTITIES)
    entity = nodejs.Entity(relay, ENTITY)
    peer = nodejs.start_peer(harness, "peer.js echo", "echo", entity)
    direct_url = "ws://127.0.0.1:%d/" % peer.port

    def pingpong(url, token=None):
        return nodejs.run_client("pingpong.js", url, "--count=%d" % args.pingpong_count,
                                 "--size=%d" % args.pingpong_size, "--warmup=%d" % WARMUP,
                                 token=token, timeout=TIMEOUT)

    cases = {
        "pingpong-direct": Case([peer], lambda: pingpong(direct_url)),
        "pingpong-relay": Case([relay, peer], lambda: pingpong(entity.connect_url, entity.token)),
    }
    failures = []
    samples = harness.alternate(cases, "pingpong.js",
                                lambda s: "p50 %.0f us, p99 %.0f us" % (s["p50_us"], s["p99_us"]), failures=failures)
    return {"settings": {"rounds": args.rounds, "count": args.pingpong_count, "size": args.pingpong_size,
                         "warmup": WARMUP},
            "samples": samples, "failures": failures, "cpu_percent": harness.cpu_percent(),
            "relay_peak_rss": relay.rss_peak(), "versions": nodejs.versions()}


def added(section, key):
    """What relayd adds at percentile ``key``: median relayed minus median direct (µs)."""
    samples = section["samples"]
    return rst.med(samples["pingpong-relay"], key) - rst.med(samples["pingpong-direct"], key)


def targets(section):
    p50, p99 = added(section, "p50_us"), added(section, "p99_us")
    return [
        rst.target("ping-pong adds <= %d µs at p50" % P50_TARGET_US, "+%.0f µs" % p50, p50 <= P50_TARGET_US),
        rst.target("ping-pong adds <= %d µs at p99" % P99_TARGET_US, "+%.0f µs" % p99, p99 <= P99_TARGET_US),
    ]


def report(section):
    s = section["settings"]
    samples = section["samples"]
    rows = []
    for name, label in (("pingpong-direct", "direct WebSocket, Node to Node (baseline)"),
                        ("pingpong-relay", "through relayd (HC sender -> HC listener)")):
        rows.append((label, *("%.0f µs" % rst.med(samples[name], k) for k in ("p50_us", "p90_us", "p99_us")),
                     rst.rng(samples[name], "p50_us", 1, "%.0f")))
    rows.append(("added by relayd", "+%.0f µs" % added(section, "p50_us"), "+%.0f µs" % added(section, "p90_us"),
                 "+%.0f µs" % added(section, "p99_us"), ""))
    return [
        "%s  ``bench/node/pingpong.js`` sends a %d-byte binary message, waits for it to come back"
        % (rst.measured(section), s["size"]),
        "from ``bench/node/peer.js echo``, checks it, and sends the next: %d untimed round trips, then"
        % s["warmup"],
        "%d timed ones per round, %d rounds (Node ``ws`` with ``bufferutil``, %s).  Direct and"
        % (s["count"], s["rounds"], rst.node_versions(section)),
        "through relayd use the same two processes.  Round-trip percentiles are per round; the table",
        "shows their medians over the rounds, and what relayd adds is relayed minus direct.",
        "",
        *rst.table(("Path", "p50", "p90", "p99", "p50 range (µs)"), rows),
        "CPU (median share of one core during a round): "
        + "; ".join(rst.cpu_note(section["cpu_percent"], ("pingpong-direct", "pingpong-relay"))) + ".",
        rst.rss_note(section),
        "",
        *rst.failure_notes(section),
    ]
