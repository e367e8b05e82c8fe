"""fanout: one WebSocket publisher to N subscribers of a multicast entity (issue 11).

    fanout-1, fanout-10, fanout-100   bench/node/fanout_pub.js publishes E events of 1 KB
                                      (``$hc/fanout?sb-hc-action=connect``, each message one
                                      event, with backpressure) -> relayd -> N HC listeners in
                                      one ``bench/node/fanout_sub.js`` process, which time
                                      each delivery against the publish timestamp in its body
    fanout-paced-R                    the same to 100 subscribers, paced at R events/s
                                      (``fanout_pub.js --rate``): publish-to-delivery latency
                                      without the queueing of the unpaced runs, while R x 100
                                      deliveries/s stay below saturation

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
    Option("--fanout-rates", default="200,1000",
           help="fanout: events per second of the paced runs to 100 subscribers (default 200,1000)"),
    Option("--fanout-paced-seconds", type=int, default=3,
           help="fanout: seconds of publishing per round of a paced run (default 3)"),
)

ENTITY = "fanout"
SUBSCRIBERS = (1, 10, 100)
TARGET_SUBSCRIBERS = 100
DELIVERIES_TARGET = 100_000  # deliveries per second at TARGET_SUBSCRIBERS subscribers (issue 11)
PACED_SUBSCRIBERS = 100
# Per subscriber: room for a whole unpaced round, so that fast clients are not cut off
QUEUE_BYTES = 16 << 20
QUEUE_MESSAGES = 1 << 16
ENTITIES = nodejs.entity_config(ENTITY) + 'kind = "multicast"\nmax_listeners = %d\n' % max(SUBSCRIBERS)
LIMITS = "\n[limits]\nsubscriber_queue_bytes = %d\nsubscriber_queue_messages = %d\n" % (QUEUE_BYTES, QUEUE_MESSAGES)
RUN_TIMEOUT = 300  # seconds for one round
READY_TIMEOUT = 60  # seconds for the subscribers to connect


def case_name(n):
    return "fanout-%d" % n


def paced_name(rate):
    return "fanout-paced-%d" % rate


def run(harness, args):
    why = nodejs.ensure()
    if why:
        return {"skipped": why}
    relay = harness.relay(ENTITIES + LIMITS)
    entity = nodejs.Entity(relay, ENTITY)

    def fanout(n, events=args.fanout_events, rate=0):
        return one_round(entity, n, events, args.fanout_size, rate)

    fanout(TARGET_SUBSCRIBERS, 200)  # warm-up
    cases = {case_name(n): Case([relay], lambda n=n: fanout(n)) for n in SUBSCRIBERS}
    rates = [int(r) for r in args.fanout_rates.split(",") if r.strip()]
    for rate in rates:
        cases[paced_name(rate)] = Case([relay], lambda rate=rate: fanout(
            PACED_SUBSCRIBERS, rate * args.fanout_paced_seconds, rate))
    failures = []
    samples = harness.alternate(cases, "node", lambda s: "%.0f deliveries/s, p50 %.1f ms, p99 %.1f ms"
                                % (s["deliveries_per_s"], s["p50_ms"], s["p99_ms"]), failures=failures)
    return {"settings": {"rounds": args.rounds, "events": args.fanout_events, "size": args.fanout_size,
                         "paced_rates": rates, "paced_seconds": args.fanout_paced_seconds,
                         "subscriber_queue_bytes": QUEUE_BYTES, "subscriber_queue_messages": QUEUE_MESSAGES},
            "samples": samples, "failures": failures, "cpu_percent": harness.cpu_percent(),
            "relay_peak_rss": relay.rss_peak(), "versions": nodejs.versions()}


def one_round(entity, n, events, size, rate=0):
    """Start ``n`` subscribers, publish ``events`` events (``rate`` per second; 0: unpaced), and
    the subscribers' JSON line (with the publisher's as ``publisher``)."""
    sub = subprocess.Popen(["node", nodejs.script("fanout_sub.js"), entity.listen_url, "--token=%s" % entity.token,
                            "--subscribers=%d" % n, "--events=%d" % events, "--timeout=%d" % RUN_TIMEOUT],
                           cwd=nodejs.NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = sub.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError("fanout_sub.js did not start: %s%s" % (line, sub.stderr.read()[-1000:]))
        publisher = nodejs.run_client("fanout_pub.js", entity.connect_url, "--events=%d" % events,
                                      "--size=%d" % size, "--rate=%d" % rate, token=entity.token,
                                      timeout=RUN_TIMEOUT)
        out, err = sub.communicate(timeout=RUN_TIMEOUT)
        result = nodejs.parse_result("fanout_sub.js", out, err)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    result["publisher"] = publisher
    return result


def _figures(samples):
    """(deliveries/s, p50 ms, p99 ms, relay CPU us per delivery), medians over the rounds."""
    cpu = statistics.median(s["cpu_seconds"]["relayd"] / s["deliveries"] * 1e6 for s in samples)
    return rst.med(samples, "deliveries_per_s"), rst.med(samples, "p50_ms"), rst.med(samples, "p99_ms"), cpu


def figures(section):
    """{subscribers: (deliveries/s, p50 ms, p99 ms, relay CPU us per delivery)} of the unpaced runs."""
    samples = section["samples"]
    return {n: _figures(samples[case_name(n)]) for n in SUBSCRIBERS if samples.get(case_name(n))}


def paced_figures(section):
    """{events/s: figures (as :func:`figures`')} of the paced runs to PACED_SUBSCRIBERS."""
    samples = section["samples"]
    rates = section["settings"].get("paced_rates", ())
    return {r: _figures(samples[paced_name(r)]) for r in rates if samples.get(paced_name(r))}


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
    paced = paced_figures(section)
    for events_per_s, (rate, p50, p99, cpu) in sorted(paced.items()):
        rows.append(("%d, paced %s events/s" % (PACED_SUBSCRIBERS, "{:,}".format(events_per_s)),
                     "{:,.0f}".format(rate), rst.rng(section["samples"][paced_name(events_per_s)],
                                                     "deliveries_per_s", 1, "%.0f"),
                     "%.2f ms" % p50, "%.2f ms" % p99, "%.1f us" % cpu))
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
        "In the rows 1, 10 and 100 the publisher is not paced, so the figures are at saturation and",
        "the latency includes the time an event waits in the relay's per-subscriber queues.  In the",
        "paced rows (``fanout_pub.js --rate``) it publishes at the rate shown for %d s per round to %d"
        % (s.get("paced_seconds", 0), PACED_SUBSCRIBERS),
        "subscribers: their latency is publish-to-delivery without that queueing as long as the rate",
        "times %d stays below the unpaced deliveries/s (above, it is saturated again)." % PACED_SUBSCRIBERS,
        "The bench raises ``limits.subscriber_queue_bytes`` to %d MiB and" % (s.get("subscriber_queue_bytes", 0) >> 20),
        "``limits.subscriber_queue_messages`` to %s so that an unpaced round does not cut off a"
        % "{:,}".format(s.get("subscriber_queue_messages", 0)),
        "subscriber; every subscriber received every event in every round.",
        "",
        *rst.table(("Subscribers", "Deliveries/s", "Range", "p50 latency", "p99 latency",
                    "Relay CPU per delivery"), rows),
        "CPU (median share of one core during a round; ``node``: publisher and subscribers): "
        + "; ".join(rst.cpu_note(section["cpu_percent"], [case_name(n) for n in SUBSCRIBERS]
                                               + [paced_name(r) for r in sorted(paced)])) + ".",
        rst.rss_note(section),
        "",
        *rst.failure_notes(section),
    ]
