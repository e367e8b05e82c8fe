"""wrk as the load generator of the HTTP-shaped sections (http, soap): one run with its summary
as JSON (a Lua ``done`` hook), and the section's rounds after a warm-up."""

import json
import re
import subprocess

from bench import report as rst
from bench.harness import Case, Option

CONNECTIONS = Option("--http-connections", type=int, default=8, help="http: wrk connections (default 8)")
THREADS = 1
TIMEOUT = "5s"  # wrk's per-request timeout
NEEDS = "wrk is not installed (apt-get install wrk)"

# appended to a section's wrk script: prints one line "JSON {...}" when wrk is done
SUMMARY_SCRIPT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""


def run_wrk(url, connections, seconds, script):
    """One wrk run; its summary plus ``requests_per_s``.  Any error answer or socket error
    fails it (RuntimeError)."""
    cmd = ["wrk", "-t", str(THREADS), "-c", str(connections), "-d", "%ds" % seconds, "--timeout", TIMEOUT,
           "-s", script, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^JSON (.*)$", out.stdout, re.M)
    if not m:
        raise RuntimeError("wrk %s failed:\n%s%s" % (url, out.stdout, out.stderr))
    r = json.loads(m.group(1))
    r["requests_per_s"] = r["requests"] / (r["duration_us"] / 1e6)
    if r["non_2xx"] or r["socket_errors"]:
        raise RuntimeError("wrk %s: %d non-2xx answers, %d socket errors" % (url, r["non_2xx"], r["socket_errors"]))
    return r


def show(sample):
    return "%.0f req/s, p50 %.2f ms, p99 %.2f ms" % (sample["requests_per_s"], sample["p50_us"] / 1e3,
                                                     sample["p99_us"] / 1e3)


def rounds(harness, args, urls, script, around=None):
    """Warm up (connection pools, code paths), then the section's rounds of wrk against each of
    ``urls`` ({case: (url, watched procs)}); the samples (see ``Harness.alternate``)."""
    for url, _ in urls.values():
        run_wrk(url, args.http_connections, 1, script)
    cases = {name: Case(watched, lambda url=url: run_wrk(url, args.http_connections, args.seconds, script))
             for name, (url, watched) in urls.items()}
    return harness.alternate(cases, "wrk", show, around=around)


def rows(cases):
    """Table rows (label, requests/s, range, p50, p99, ratio) for ``cases``, ((label, samples),
    ...) with the baseline first: medians over the rounds, the ratio against the baseline."""
    baseline = rst.med(cases[0][1], "requests_per_s")
    return [(label, "%.0f" % rst.med(samples, "requests_per_s"), rst.rng(samples, "requests_per_s", 1, "%.0f"),
             "%.2f ms" % (rst.med(samples, "p50_us") / 1e3), "%.2f ms" % (rst.med(samples, "p99_us") / 1e3),
             "%.2f" % (rst.med(samples, "requests_per_s") / baseline))
            for label, samples in cases]
