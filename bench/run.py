"""Run the whole relayd benchmark and write docs/performance.rst (table) and
docs/performance.json (raw results).

    python bench/run.py [--rounds 5] [--mib 512]

Every figure is measured in the same run as its baseline, rounds alternating between the
scenarios, because the machine is shared and noisy; the table reports medians and the ratio
of medians.  Traffic stays on 127.0.0.1.

Scenarios:
  ws-direct   one WebSocket stream, source -> sink (Autobahn on both ends)
  ws-relay    the same source -> relayd (twistd subprocess) -> HC listener sink
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

KEY = "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXk="
CONFIG = """
[relay]
listen = ["tcp:0:interface=127.0.0.1"]
data_dir = "data"

[[rules]]
name = "root"
key = "%s"
rights = ["Manage", "Listen", "Send"]

[[hybrid_connections]]
path = "bench"
""" % KEY


def _python():
    return sys.executable


class Proc:
    def __init__(self, cmd, cwd=None, ready=r"READY ?(\d*)"):
        self.out = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
        self.p = subprocess.Popen(cmd, cwd=cwd, stdout=self.out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            m = re.search(ready, self.text())
            if m:
                self.match = m
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("%s did not get ready:\n%s" % (cmd, self.text()))

    def text(self):
        with open(self.out.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def rss_peak(self):
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
        os.unlink(self.out.name)


def run_source(url, total, message, token=None):
    cmd = [_python(), os.path.join(HERE, "wsbench.py"), "source", url, "--bytes", str(total),
           "--message", str(message)]
    if token:
        cmd += ["--token", token]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr
    result = json.loads(line)
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def start_relay(workdir):
    with open(os.path.join(workdir, "relayd.toml"), "w") as f:
        f.write(CONFIG)
    twistd = os.path.join(os.path.dirname(_python()), "twistd")
    return Proc([twistd, "-n", "--pidfile=", "relayd", "--config", "relayd.toml"], cwd=workdir,
                ready=r"relayd listening on [0-9.]+:(\d+)")


def bench_ws(rounds, total, message):
    from relayd import auth

    results = {"ws-direct": [], "ws-relay": []}
    with tempfile.TemporaryDirectory() as workdir:
        relay = start_relay(workdir)
        port = int(relay.match.group(1))
        url = "ws://127.0.0.1:%d" % port
        sink_hc = Proc([_python(), os.path.join(HERE, "wsbench.py"), "sink-hc", url, "bench", "root", KEY])
        sink = Proc([_python(), os.path.join(HERE, "wsbench.py"), "sink-direct", "0"])
        direct_url = "ws://127.0.0.1:%s" % sink.match.group(1)
        try:
            for _ in range(rounds):
                results["ws-direct"].append(run_source(direct_url, total, message))
                token = auth.make_token(url.replace("ws:", "http:") + "/bench", "root", KEY,
                                        int(time.time()) + 3600)
                results["ws-relay"].append(
                    run_source(url + "/$hc/bench?sb-hc-action=connect", total, message, token))
            results["relay_peak_rss"] = relay.rss_peak()
        finally:
            for p in (sink, sink_hc, relay):
                p.stop()
    return results


def median_rate(samples):
    return statistics.median(s["mb_per_s"] for s in samples)


def write_report(data, rst_path, json_path):
    with open(json_path, "w") as f:
        json.dump(data, f, indent=1)
    ws = data["ws"]
    direct, relay = median_rate(ws["ws-direct"]), median_rate(ws["ws-relay"])
    rows = [
        ("one WebSocket stream, direct (baseline)", "%.0f MB/s" % direct, "1.00"),
        ("one WebSocket stream through relayd", "%.0f MB/s" % relay, "%.2f" % (relay / direct)),
    ]
    widths = [max(len(r[i]) for r in rows + [("Scenario", "Median", "Ratio")]) for i in range(3)]
    line = "  ".join("=" * w for w in widths)

    def fmt(r):
        return "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()

    text = [
        "Performance",
        "===========",
        "",
        "Produced by ``python bench/run.py`` on %s (%s, %d cores); raw results in"
        % (data["date"], data["machine"], data["cores"]),
        "``docs/performance.json``.  Each scenario ran %d rounds of %d MiB in %d KiB messages,"
        % (data["rounds"], data["mib"], data["message_kib"]),
        "alternating with its baseline in the same run; figures are medians, ratios are against",
        "the baseline of the same run.  Source, relay and sink are separate processes on one",
        "2-core machine, so the relay scenario shares the cores three ways where the direct one",
        "shares them two ways.",
        "",
        line, fmt(("Scenario", "Median", "Ratio")), line,
        *[fmt(r) for r in rows],
        line,
        "",
        "Relay process peak RSS during the run: %.1f MiB." % (ws["relay_peak_rss"] / 2**20),
        "",
    ]
    with open(rst_path, "w") as f:
        f.write("\n".join(text))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mib", type=int, default=512)
    p.add_argument("--message-kib", type=int, default=1024)
    args = p.parse_args()
    data = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "rounds": args.rounds,
        "mib": args.mib,
        "message_kib": args.message_kib,
        "ws": bench_ws(args.rounds, args.mib << 20, args.message_kib << 10),
    }
    docs = os.path.join(ROOT, "docs")
    write_report(data, os.path.join(docs, "performance.rst"), os.path.join(docs, "performance.json"))
    print(open(os.path.join(docs, "performance.rst")).read())


if __name__ == "__main__":
    main()
