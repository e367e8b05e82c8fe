"""Run the whole relayd benchmark and write docs/performance.rst (tables, the targets of
issue 10 with met / not met), docs/performance.json (raw results) and, with --profile,
docs/performance-profile.txt (py-spy's top functions of the relay).

    python bench/run.py                          # everything, 3 rounds: about 8 minutes
    python bench/run.py --only stream,pingpong   # a subset; the other sections of the
                                                 # existing docs/performance.json are kept
    python bench/run.py --rounds 1 --seconds 3   # quicker
    python bench/run.py --profile                # also py-spy the relay (stream, tcp bridge)
    python bench/run.py --out /tmp/perf          # write somewhere else than docs/

Every figure is measured in the same run as its anchors, rounds alternating between the
cases of a section (the starting case rotates every round) because the machine is shared
and noisy; the tables report medians, the range over the rounds and the ratio of medians.
Traffic stays on 127.0.0.1.  Every load is bounded in size or in time, and every child
process has a timeout and is stopped by its pid.

The pieces:

bench/harness.py      processes on free loopback ports, stopped by pid; CPU per process
                      (psutil, children included); alternating rounds; py-spy profiles
                      (relayd, bridges and log waits come from tests/support, shared with
                      the tests)
bench/scenarios/*.py  one section each (stream, pingpong, rendezvous, http, soap, tcp, fanout): its
                      cases, options, targets and report prose (the interface:
                      bench/scenarios/__init__.py, IScenario); adding a section means adding
                      one module there
bench/report.py       the report writer: performance.json, performance.rst, the profiles
bench/node/           the WebSocket clients and peer, the fan-out publisher and subscribers
                      (Node ws + bufferutil; bench/nodejs.py
                      runs ``npm ci`` there when needed)
bench/sshd.py         the ssh -R anchor: a throwaway sshd on a loopback port
bench/wrk.py          wrk runs, shared by http and soap
bench/peers.py        the HTTP backend and the transit relay ends

Needs, besides relayd's own dependencies: node and npm, wrk, iperf3, socat and
openssh-server (apt), and optionally magic-wormhole-transit-relay and py-spy (pip).  A
missing tool skips its section or case with a note in the report.
"""

import argparse
import json
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import report, scenarios  # noqa: E402
from bench.harness import Harness, Option, log  # noqa: E402

COMMON = (
    Option("--rounds", type=int, default=3, help="rounds per section (default 3)"),
    Option("--seconds", type=int, default=5, help="length of one http or tcp test (default 5)"),
)


def parse(argv, sections):
    names = [s.NAME for s in sections]
    p = argparse.ArgumentParser(description="Run the relayd benchmark; write docs/performance.{rst,json}.")
    p.add_argument("--only", default=",".join(names),
                   help="comma-separated sections to run: %s (default: all); the other "
                        "sections of an existing performance.json are kept" % ",".join(names))
    options = list(COMMON)
    for s in sections:
        options += [o for o in s.OPTIONS if o not in options]
    for o in options:
        o.add_to(p)
    p.add_argument("--out", default=os.path.join(ROOT, "docs"),
                   help="directory for performance.rst and performance.json (default docs/)")
    args = p.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if not only or any(s not in names for s in only):
        p.error("--only: expected some of %s, got %r" % (",".join(names), args.only))
    args.only = only
    if args.rounds < 1 or args.seconds < 1:
        p.error("--rounds and --seconds must be at least 1")
    return args


def kept_sections(json_path):
    """The sections of an existing performance.json ({} when there is none)."""
    if not os.path.exists(json_path):
        return {}
    try:
        with open(json_path) as f:
            return json.load(f).get("sections", {})
    except ValueError:
        return {}


def main():
    sections = scenarios.load()
    args = parse(sys.argv[1:], sections)
    json_path = os.path.join(args.out, "performance.json")
    results = {}
    if set(args.only) != {s.NAME for s in sections}:
        results = kept_sections(json_path)
    started = time.time()
    load_start = os.getloadavg()
    for scenario in sections:
        if scenario.NAME not in args.only:
            continue
        log("section %s" % scenario.NAME)
        date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        try:
            with Harness(scenario.NAME, args.rounds) as harness:
                result = scenario.run(harness, args)
        except Exception as e:  # one broken section must not lose the others' figures
            log("section %s failed:\n%s" % (scenario.NAME, traceback.format_exc()))
            result = {"failed": "%s: %s" % (type(e).__name__, str(e)[:3000])}
        if "skipped" in result:
            log("section %s skipped: %s" % (scenario.NAME, result["skipped"]))
        result["date"] = date
        result["git"] = report.git_state()
        results[scenario.NAME] = result
    argv = " ".join(sys.argv[1:])
    data = {
        "command": "python bench/run.py" + (" " + argv if argv else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_seconds": round(time.time() - started, 1),
        "machine": dict(report.machine_info(), loadavg_at_start=load_start, loadavg_at_end=os.getloadavg()),
        "versions": report.tool_versions(),
        "sections": results,
    }
    rst_path = report.write(data, sections, args.out)
    with open(rst_path) as f:
        print(f.read())
    log("done in %.0f s" % (time.time() - started))
    failed = [name for name, r in results.items() if name in args.only and "failed" in r]
    if failed:
        log("failed sections (see the page): %s" % ", ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
