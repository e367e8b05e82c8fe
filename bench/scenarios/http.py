"""http: small GET requests (100-byte body), keep-alive, wrk with C connections for S seconds.

    http-direct  wrk -> backend (twisted.web, bench/peers.py http-backend)
    http-relay   wrk -> relayd http://127.0.0.1:PORT/web/ -> relayd bridge -H -> backend
"""

import json
import statistics
import urllib.request

from zope.interface import moduleProvides

from bench import report as rst
from bench import wrk
from bench.harness import Option, missing_tools, peer, python
from bench.scenarios import IScenario

moduleProvides(IScenario)

NAME = "http"
TITLE = "Small HTTP requests"
ORDER = 20
OPTIONS = (
    wrk.CONNECTIONS,
    Option("--http-body", type=int, default=100, help="http: response body bytes (default 100)"),
)

ENTITY = "web"
ENTITIES = """
[[hybrid_connections]]
path = "%s"
requires_client_authorization = false
""" % ENTITY


def backend_stats(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def run(harness, args):
    if missing_tools("wrk"):
        return {"skipped": wrk.NEEDS}
    script = harness.write("json.lua", wrk.SUMMARY_SCRIPT)
    relay = harness.relay(ENTITIES)
    backend = harness.start("backend", [python(), peer("peers.py"), "http-backend", "--size", str(args.http_body)])
    agent = harness.bridge("bridge -H", relay, "-H", "%s:http://127.0.0.1:%d" % (ENTITY, backend.port),
                           ready=r"online")
    urls = {"http-direct": ("http://127.0.0.1:%d/small" % backend.port, [backend]),
            "http-relay": ("http://127.0.0.1:%d/%s/small" % (relay.port, ENTITY), [relay, agent, backend])}
    stats_url = "http://127.0.0.1:%d/_stats" % backend.port

    def counted(measure):
        before = backend_stats(stats_url)
        s = measure()
        after = backend_stats(stats_url)
        # each /_stats reading opens a connection and counts itself
        s["backend_connections"] = after["connections"] - before["connections"] - 1
        s["backend_requests"] = after["requests"] - before["requests"] - 1
        return s

    samples = wrk.rounds(harness, args, urls, script, around=counted)
    return {"settings": {"rounds": args.rounds, "seconds": args.seconds, "connections": args.http_connections,
                         "body_bytes": args.http_body, "wrk_threads": wrk.THREADS},
            "samples": samples, "cpu_percent": harness.cpu_percent(), "relay_peak_rss": relay.rss_peak()}


def backend_connections(samples):
    """Median TCP connections the backend accepted per 1000 requests it served."""
    return statistics.median(1000 * x["backend_connections"] / max(1, x["backend_requests"]) for x in samples)


RATIO_TARGET = 0.25  # requests/s through relayd + bridge -H against direct to the backend


def targets(h):
    samples = h["samples"]
    ratio = rst.med(samples["http-relay"], "requests_per_s") / rst.med(samples["http-direct"], "requests_per_s")
    return [rst.target("small HTTP requests through relayd + bridge -H >= %.2fx direct" % RATIO_TARGET,
                       "%.2fx (%.0f req/s)" % (ratio, rst.med(samples["http-relay"], "requests_per_s")),
                       ratio >= RATIO_TARGET)]


def report(h):
    s = h["settings"]
    cases = (("direct to the backend (baseline)", h["samples"]["http-direct"]),
             ("through relayd and ``relayd bridge -H``", h["samples"]["http-relay"]))
    rows = [row + ("%.0f" % backend_connections(samples),) for row, (_, samples) in zip(wrk.rows(cases), cases)]
    return [
        "%s  ``wrk -t 1 -c %d -d %ds`` (keep-alive connections, one request at a"
        % (rst.measured(h), s["connections"], s["seconds"]),
        "time on each) GETs a %d-byte body from a twisted.web backend (``bench/peers.py http-backend``),"
        % s["body_bytes"],
        "%d rounds.  Direct: wrk -> backend.  Through relayd: wrk -> relayd" % s["rounds"],
        "``http://127.0.0.1:PORT/web/small`` (entity ``web``, no client authorization) ->",
        "control channel -> ``relayd bridge -H web:http://127.0.0.1:BACKEND`` -> backend.",
        "Latency percentiles are wrk's, per request; the table shows their medians over the rounds.",
        "",
        *rst.table(("Scenario", "Requests/s", "Range", "p50", "p99", "Ratio (req/s)", "Backend conns"), rows),
        "*Backend conns*: TCP connections the backend accepted per 1000 requests it served (wrk's",
        "own keep-alive connections when direct; the bridge agent's connections through relayd).",
        "",
        "CPU (median share of one core during a round): "
        + "; ".join(rst.cpu_note(h["cpu_percent"], ("http-direct", "http-relay"))) + ".",
        rst.rss_note(h),
        "",
    ]
