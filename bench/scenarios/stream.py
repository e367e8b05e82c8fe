"""stream: one WebSocket stream, Node ``ws`` + bufferutil on both ends (bench/node).

    stream-direct  stream.js -> peer.js sink (a plain WebSocket server)
    stream-relay   stream.js -> relayd (HC sender) -> peer.js sink (the same process, as an
                   HC listener: control channel, accept -> rendezvous leg)

then, with --profile, one more (longer) relayed stream with py-spy sampling relayd.
"""

import statistics

from zope.interface import moduleProvides

from bench import nodejs
from bench import report as rst
from bench.harness import PROFILE, Case, Option
from bench.scenarios import IScenario

moduleProvides(IScenario)

NAME = "stream"
TITLE = "One WebSocket stream"
ORDER = 10
OPTIONS = (
    Option("--stream-mib", type=int, default=1024, help="stream: MiB per round (default 1024)"),
    Option("--stream-message-kib", type=int, default=256, help="stream: message size in KiB (default 256)"),
    PROFILE,
)

ENTITY = "stream"
ENTITIES = nodejs.entity_config(ENTITY)
STREAM_TIMEOUT = 600  # seconds for one stream.js run
PROFILE_SECONDS = 6  # py-spy samples this long, from 1 s into one more relayed stream
PROFILE_MARGIN = 4  # the profiled stream lasts about PROFILE_SECONDS + this at the rounds' median rate
RATIO_TARGET = 0.7
CPU_TARGET = 0.4  # relay CPU seconds per GB


def run(harness, args):
    why = nodejs.ensure()
    if why:
        return {"skipped": why}
    total, message = args.stream_mib << 20, args.stream_message_kib << 10
    relay = harness.relay(ENTITIES)
    entity = nodejs.Entity(relay, ENTITY)
    peer = nodejs.start_peer(harness, "peer.js sink", "sink", entity)
    direct_url = "ws://127.0.0.1:%d/" % peer.port

    def stream(url, token=None, nbytes=total):
        return nodejs.run_client("stream.js", url, "--bytes=%d" % nbytes, "--message=%d" % message,
                                 token=token, timeout=STREAM_TIMEOUT)

    stream(direct_url, nbytes=64 << 20)  # warm-up: both paths, code and buffers
    stream(entity.connect_url, entity.token, nbytes=64 << 20)
    cases = {
        "stream-direct": Case([peer], lambda: stream(direct_url)),
        "stream-relay": Case([relay, peer], lambda: stream(entity.connect_url, entity.token)),
    }
    failures = []
    samples = harness.alternate(cases, "stream.js", lambda s: "%.0f MB/s" % s["mb_per_s"], failures=failures)
    result = {"settings": {"rounds": args.rounds, "mib": args.stream_mib, "message_kib": args.stream_message_kib},
              "samples": samples, "failures": failures, "cpu_percent": harness.cpu_percent(),
              "relay_peak_rss": relay.rss_peak(), "versions": nodejs.versions()}
    if args.profile:
        rate = rst.med(samples["stream-relay"], "mb_per_s") * 1e6
        nbytes = int(rate * (PROFILE_SECONDS + PROFILE_MARGIN)) // message * message
        result["profile"] = dict(harness.profile(relay, lambda: stream(entity.connect_url, entity.token, nbytes),
                                                 PROFILE_SECONDS + 2), scenario="stream-relay")
    return result


def relay_cpu_per_gb(samples):
    """Median over the rounds of relayd's CPU seconds per GB (10^9 bytes) streamed."""
    return statistics.median(s["cpu_seconds"]["relayd"] / (s["bytes"] / 1e9) for s in samples)


def figures(section):
    samples = section["samples"]
    direct = rst.med(samples["stream-direct"], "mb_per_s")
    relay = rst.med(samples["stream-relay"], "mb_per_s")
    return direct, relay, relay / direct, relay_cpu_per_gb(samples["stream-relay"])


def targets(section):
    _, relay, ratio, cpu = figures(section)
    return [
        rst.target("one HC stream >= %.1fx a direct WebSocket" % RATIO_TARGET,
                   "%.2fx (%.0f MB/s)" % (ratio, relay), ratio >= RATIO_TARGET),
        rst.target("relay CPU <= %.1f s per GB streamed" % CPU_TARGET, "%.2f s/GB" % cpu, cpu <= CPU_TARGET),
    ]


def report(section):
    s = section["settings"]
    samples = section["samples"]
    direct, relay, ratio, cpu = figures(section)
    rows = [
        ("direct WebSocket, Node to Node (baseline)", "%.0f MB/s" % direct,
         rst.rng(samples["stream-direct"], "mb_per_s", 1, "%.0f"), "1.00", ""),
        ("through relayd (HC sender -> HC listener)", "%.0f MB/s" % relay,
         rst.rng(samples["stream-relay"], "mb_per_s", 1, "%.0f"), "%.2f" % ratio, "%.2f s" % cpu),
    ]
    return [
        "%s  One WebSocket carries %d MiB in %d KiB binary messages, %d rounds.  Both ends are"
        % (rst.measured(section), s["mib"], s["message_kib"], s["rounds"]),
        "Node ``ws`` with ``bufferutil`` (%s): ``bench/node/stream.js`` sends, ``bench/node/peer.js sink``"
        % rst.node_versions(section),
        "counts and answers ``done`` when every byte has arrived.  Direct: stream.js -> peer.js's own",
        "WebSocket server.  Through relayd: stream.js -> relayd ``$hc/stream?sb-hc-action=connect`` ->",
        "the same peer.js as a Hybrid Connections listener (control channel, accept -> rendezvous leg).",
        "",
        *rst.table(("Path", "Median", "Range (MB/s)", "Ratio", "Relay CPU per GB"), rows),
        "CPU (median share of one core during a round): "
        + "; ".join(rst.cpu_note(section["cpu_percent"], ("stream-direct", "stream-relay"))) + ".",
        rst.rss_note(section),
        "",
        *rst.failure_notes(section),
        *rst.profile_section(section.get("profile"), "relayd during one more relayed stream",
                             lambda r: "%.0f MB/s" % r["mb_per_s"]),
    ]
