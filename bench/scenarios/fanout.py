"""fanout: one WebSocket publisher to N subscribers of a multicast entity (issue 11).

    fanout-1, fanout-10, fanout-100   bench/node/fanout_pub.js publishes E events of 1 KB
                                      (``$hc/fanout?sb-hc-action=connect``, each message one
                                      event, with backpressure) -> relayd -> N HC listeners in
                                      one ``bench/node/fanout_sub.js`` process, which time
                                      each delivery against the publish timestamp in its body

Each round starts the subscribers afresh, waits until all are connected, then publishes.
"""

import statistics
import subprocess

from zope.interface import moduleProvides

from bench import nodejs
from bench import report as rst
from bench.harness import Case, Option
from bench.scenarios import IScenario

moduleProvides(IScenario)

NAME = "fanout"
TITLE = "Event fan-out (multicast)"
ORDER = 50
OPTIONS = (
    Option("--fanout-events", type=int, default=5000,
           help="fanout: events published per round (default 5000)"),
    Option("--fanout-size", type=int, default=1024, help="fanout: event size in bytes (default 1024)"),
)

ENTITY = "fanout"
SUBSCRIBERS = (1, 10, 100)
TARGET_SUBSCRIBERS = 100
DELIVERIES_TARGET = 100_000  # deliveries per second at TARGET_SUBSCRIBERS subscribers (issue 11)
CONTROL_QUEUE_MAX = 16 << 20  # per subscriber: room for a burst, so fast clients are not cut off
ENTITIES = nodejs.entity_config(ENTITY) + 'kind = "multicast"\nmax_listeners = %d\n' % max(SUBSCRIBERS)
LIMITS = "\n[limits]\ncontrol_queue_max = %d\n" % CONTROL_QUEUE_MAX
RUN_TIMEOUT = 300  # seconds for one round
READY_TIMEOUT = 60  # seconds for the subscribers to connect


def case_name(n):
    return "fanout-%d" % n


def run(harness, args):
    why = nodejs.ensure()
    if why:
        return {"skipped": why}
    relay = harness.relay(ENTITIES + LIMITS)
    entity = nodejs.Entity(relay, ENTITY)

    def fanout(n, events=args.fanout_events):
        return one_round(entity, n, events, args.fanout_size)

    fanout(TARGET_SUBSCRIBERS, 200)  # warm-up
    cases = {case_name(n): Case([relay], lambda n=n: fanout(n)) for n in SUBSCRIBERS}
    failures = []
    samples = harness.alternate(cases, "node", lambda s: "%.0f deliveries/s, p99 %.1f ms"
                                % (s["deliveries_per_s"], s["p99_ms"]), failures=failures)
    return {"settings": {"rounds": args.rounds, "events": args.fanout_events, "size": args.fanout_size,
                         "control_queue_max": CONTROL_QUEUE_MAX},
            "samples": samples, "failures": failures, "cpu_percent": harness.cpu_percent(),
            "relay_peak_rss": relay.rss_peak(), "versions": nodejs.versions()}


def one_round(entity, n, events, size):
    """Start ``n`` subscribers, publish ``events`` events, and the subscribers' JSON line (with
    the publisher's as ``publisher``)."""
    sub = subprocess.Popen(["node", nodejs.script("fanout_sub.js"), entity.listen_url, "--token=%s" % entity.token,
                            "--subscribers=%d" % n, "--events=%d" % events, "--timeout=%d" % RUN_TIMEOUT],
                           cwd=nodejs.NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = sub.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError("fanout_sub.js did not start: %s%s" % (line, sub.stderr.read()[-1000:]))
        publisher = nodejs.run_client("fanout_pub.js", entity.connect_url, "--events=%d" % events,
                                      "--size=%d" % size, token=entity.token, timeout=RUN_TIMEOUT)
        out, err = sub.communicate(timeout=RUN_TIMEOUT)
        result = nodejs.parse_result("fanout_sub.js", out, err)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    result["publisher"] = publisher
    return result


def figures(section):
    """{subscribers: (deliveries/s, p50 ms, p99 ms, relay CPU us per delivery)}, medians over
    the rounds."""
    out = {}
    for n in SUBSCRIBERS:
        samples = section["samples"].get(case_name(n))
        if not samples:
            continue
        cpu = statistics.median(s["cpu_seconds"]["relayd"] / s["deliveries"] * 1e6 for s in samples)
        out[n] = (rst.med(samples, "deliveries_per_s"), rst.med(samples, "p50_ms"), rst.med(samples, "p99_ms"), cpu)
    return out


def targets(section):
    fig = figures(section).get(TARGET_SUBSCRIBERS)
    if fig is None:
        return []
    rate, p50, p99, _ = fig
    return [rst.target("issue 11: >= {:,} deliveries/s at {} subscribers, 1 KB events".format(
        DELIVERIES_TARGET, TARGET_SUBSCRIBERS), "{:,.0f}/s (p50 {:.1f} ms, p99 {:.1f} ms)".format(rate, p50, p99),
        rate >= DELIVERIES_TARGET)]


def report(section):
    s = section["settings"]
    fig = figures(section)
    rows = [("%d" % n, "{:,.0f}".format(rate),
             rst.rng(section["samples"][case_name(n)], "deliveries_per_s", 1, "%.0f"),
             "%.1f ms" % p50, "%.1f ms" % p99, "%.1f us" % cpu)
            for n, (rate, p50, p99, cpu) in sorted(fig.items())]
    return [
        "%s  One publisher sends %d events of %d bytes per round over WebSocket"
        % (rst.measured(section), s["events"], s["size"]),
        "(``$hc/fanout?sb-hc-action=connect`` on a ``kind = \"multicast\"`` entity; each message one",
        "event; ``bench/node/fanout_pub.js`` keeps at most 64 KiB unsent in ``ws``), %d rounds.  The N"
        % s["rounds"],
        "subscribers are HC listeners in one ``bench/node/fanout_sub.js`` process (%s): each event"
        % rst.node_versions(section),
        "arrives as a ``request`` control message and its body; latency is from the publisher's",
        "timestamp in the body (taken when the event is handed to ``ws``) to its arrival.  Deliveries",
        "per second: all deliveries over the time from the first event published to the last delivered.",
        "The publisher is not paced, so the figures are at saturation and the latency includes the",
        "time an event waits in the relay's per-subscriber queues.",
        "The bench raises ``limits.control_queue_max`` to %d MiB so a burst does not cut off a"
        % (s["control_queue_max"] >> 20),
        "subscriber; every subscriber received every event in every round.",
        "",
        *rst.table(("Subscribers", "Deliveries/s", "Range", "p50 latency", "p99 latency",
                    "Relay CPU per delivery"), rows),
        "CPU (median share of one core during a round; ``node``: publisher and subscribers): "
        + "; ".join(rst.cpu_note(section["cpu_percent"], [case_name(n) for n in SUBSCRIBERS])) + ".",
        rst.rss_note(section),
        "",
        *rst.failure_notes(section),
    ]
