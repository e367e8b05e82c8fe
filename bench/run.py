"""Run the whole relayd benchmark and write docs/performance.rst (tables) and
docs/performance.json (raw results).

    python bench/run.py                         # everything, about 5 minutes
    python bench/run.py --only http,tcp         # a subset; the other sections of the
                                                # existing docs/performance.json are kept
    python bench/run.py --rounds 3 --seconds 3  # quicker
    python bench/run.py --out /tmp/perf         # write somewhere else than docs/

Every figure is measured in the same run as its baselines, rounds alternating between the
scenarios (the starting scenario rotates every round) because the machine is shared and
noisy; the tables report medians, the range over the rounds and the ratio of medians.
Traffic stays on 127.0.0.1.  Every load is bounded in size or in time, and every child
process has a timeout.

Sections and scenarios:

ws    one WebSocket stream (bench/wsbench.py, Autobahn on both ends)
        ws-direct    source -> sink
        ws-relay     source -> relayd -> HC listener sink
http  small GET requests (100-byte body), keep-alive, wrk with C connections for S seconds
        http-direct  wrk -> backend (twisted.web, bench/peers.py http-backend)
        http-relay   wrk -> relayd http://127.0.0.1:PORT/web/ -> relayd bridge -H -> backend
tcp   one iperf3 test (a control and a data connection, both relayed) for S seconds
        tcp-direct   iperf3 -c -> iperf3 -s
        tcp-socat    iperf3 -c -> socat -> socat -> iperf3 -s       (two-hop socat chain)
        tcp-door     iperf3 -c -> relayd port-mapped door -> relayd bridge -R -> iperf3 -s
        tcp-bridge   iperf3 -c -> relayd bridge -L -> relayd -> relayd bridge -R -> iperf3 -s
        tcp-transit  iperf3 -c -> transit end -> magic-wormhole transit relay -> transit end
                     -> iperf3 -s  (the ends are bench/peers.py transit-client/-server;
                     skipped when magic-wormhole-transit-relay is not installed)
      then, unless --no-profile, one more tcp-bridge test with py-spy sampling relayd.

Needs, besides relayd's own dependencies: wrk, iperf3 and socat (apt), and optionally
magic-wormhole-transit-relay and py-spy (pip).  A missing tool skips its section or scenario
with a note in the report.  ssh -R is not measured (it needs an sshd).
"""

import argparse
import collections
import json
import os
import platform
import random
import re
import resource
import shutil
import socket
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
""" % KEY

WS_CONFIG = CONFIG + """
[[hybrid_connections]]
path = "bench"
"""

HTTP_CONFIG = CONFIG + """
[[hybrid_connections]]
path = "web"
requires_client_authorization = false
"""

SOAP_CONFIG = CONFIG + """
[[hybrid_connections]]
path = "calc"
kind = "soap"
requires_client_authorization = false
"""

SOAP_ENVELOPE = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:c="http://relayd.test/calc">'
    '<soap:Body><c:add><c:a>20</c:a><c:b>22</c:b></c:add></soap:Body></soap:Envelope>'
)
WRK_SOAP = (
    'wrk.method = "POST"\n'
    'wrk.body = [[%s]]\n'
    'wrk.headers["Content-Type"] = "text/xml; charset=utf-8"\n'
    'wrk.headers["SOAPAction"] = \'"add"\'\n' % SOAP_ENVELOPE
)

TCP_CONFIG = CONFIG + """
[[hybrid_connections]]
path = "iperf"

[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "port"
entity = "iperf"
allow_anonymous = true
"""

SECTIONS = ("ws", "http", "soap", "tcp")
TCP_SCENARIOS = ("tcp-direct", "tcp-socat", "tcp-door", "tcp-bridge", "tcp-transit")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _python():
    return sys.executable


def _bin(name):
    """A console script of this venv (twistd, py-spy), else from PATH."""
    path = os.path.join(os.path.dirname(_python()), name)
    return path if os.path.exists(path) else shutil.which(name)


def free_port(_rng=random.Random()):
    """A free port below the kernel's ephemeral range, so that no outgoing connection can take
    it while the server meant for it is not running (iperf3 -s -1 restarts for every test)."""
    for _ in range(200):
        port = _rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def wait_listening(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on 127.0.0.1:%d" % port)


class Proc:
    """A long-lived child process; its output goes to a log file we can wait on."""

    def __init__(self, name, cmd, cwd=None, ready=r"READY ?(\d*)", timeout=30, stdin=subprocess.DEVNULL):
        self.name = name
        self.cmd = cmd
        self.out = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
        self.p = subprocess.Popen(cmd, cwd=cwd, stdout=self.out, stderr=subprocess.STDOUT, stdin=stdin)
        self.match = self.wait_for(ready, timeout) if ready else None

    def wait_for(self, pattern, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.text())
            if m:
                return m
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        self.stop(keep_log=True)
        raise RuntimeError("%s: no %r in its output:\n%s" % (self.cmd, pattern, self.text()[-3000:]))

    def text(self):
        with open(self.out.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def cpu(self):
        """CPU seconds so far (user + system, plus reaped children such as socat's forks)."""
        try:
            with open("/proc/%d/stat" % self.p.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return sum(int(x) for x in fields[11:15]) / CLK_TCK

    def rss_peak(self):
        try:
            with open("/proc/%d/status" % self.p.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def stop(self, keep_log=False):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        if not keep_log and os.path.exists(self.out.name):
            os.unlink(self.out.name)


class Procs:
    """Several Procs stopped together (in reverse order), whatever happens."""

    def __init__(self):
        self.procs = []

    def __enter__(self):
        return self

    def add(self, proc):
        self.procs.append(proc)
        return proc

    def __exit__(self, *exc):
        for p in reversed(self.procs):
            p.stop()


class CpuMeter:
    """Median share of one core used by each named process during each scenario's rounds."""

    def __init__(self):
        self.samples = collections.defaultdict(lambda: collections.defaultdict(list))

    def measure(self, scenario, procs, fn, load_label):
        """Run ``fn`` (which runs and reaps the load generator: its CPU is the children's
        rusage delta, reported as ``load_label``) and sample the CPU time of ``procs``."""
        before = {p.name: p.cpu() for p in procs}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
        after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = (after_children.ru_utime + after_children.ru_stime) - (children.ru_utime + children.ru_stime)
        self.samples[scenario][load_label].append(100 * load / wall)
        for p in procs:
            after = p.cpu()
            if after is not None and before[p.name] is not None:
                self.samples[scenario][p.name].append(100 * (after - before[p.name]) / wall)
        return result

    def medians(self):
        return {s: {name: round(statistics.median(v), 1) for name, v in procs.items()}
                for s, procs in self.samples.items()}


def start_relay(workdir, config, name="relayd"):
    with open(os.path.join(workdir, "relayd.toml"), "w") as f:
        f.write(config)
    return Proc(name, [_bin("twistd"), "-n", "--pidfile=", "relayd", "--config", "relayd.toml"],
                cwd=workdir, ready=r"relayd listening on [0-9.]+:(\d+)")


def bridge(name, relay_port, *args, ready):
    return Proc(name, [_python(), "-m", "relayd.cli", "bridge", "--url", "ws://127.0.0.1:%d" % relay_port,
                       "--rule", "root", "--key", KEY, *args], cwd=ROOT, ready=ready)


def rotate(seq, r):
    r %= len(seq)
    return list(seq[r:]) + list(seq[:r])


# -- ws ---------------------------------------------------------------------------------------

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


def bench_ws(args):
    from relayd.wire import sas

    total, message = args.mib << 20, args.message_kib << 10
    samples = {"ws-direct": [], "ws-relay": []}
    cpu = CpuMeter()
    with tempfile.TemporaryDirectory() as workdir, Procs() as procs:
        relay = procs.add(start_relay(workdir, WS_CONFIG))
        port = int(relay.match.group(1))
        url = "ws://127.0.0.1:%d" % port
        sink_hc = procs.add(Proc("sink (HC listener)", [_python(), os.path.join(HERE, "wsbench.py"),
                                                        "sink-hc", url, "bench", "root", KEY]))
        sink = procs.add(Proc("sink", [_python(), os.path.join(HERE, "wsbench.py"), "sink-direct", "0"]))
        direct_url = "ws://127.0.0.1:%s" % sink.match.group(1)
        token = sas.make_token(url.replace("ws:", "http:") + "/bench", "root", KEY, int(time.time()) + 3600)
        runs = {
            "ws-direct": ([sink], lambda: run_source(direct_url, total, message)),
            "ws-relay": ([relay, sink_hc],
                         lambda: run_source(url + "/$hc/bench?sb-hc-action=connect", total, message, token)),
        }
        for r in range(args.rounds):
            for name in rotate(list(runs), r):
                watched, fn = runs[name]
                samples[name].append(cpu.measure(name, watched, fn, "source"))
                log("ws round %d %s: %.0f MB/s" % (r + 1, name, samples[name][-1]["mb_per_s"]))
        rss = relay.rss_peak()
    return {"settings": {"rounds": args.rounds, "mib": args.mib, "message_kib": args.message_kib},
            "samples": samples, "cpu_percent": cpu.medians(), "relay_peak_rss": rss}


# -- http -------------------------------------------------------------------------------------

WRK_SCRIPT = r"""
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
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", "%ds" % seconds, "--timeout", "5s",
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


def wrk_rounds(section, urls, args, script, cpu, samples, around=None):
    """Warm up, then ``args.rounds`` rounds of wrk against each of ``urls`` ({scenario: (url,
    watched procs)}), scenarios rotating; ``around(measure)`` may wrap each measurement."""
    for url, _ in urls.values():  # warm up (connection pools, code paths)
        run_wrk(url, args.http_connections, 1, script)
    for r in range(args.rounds):
        for name in rotate(list(urls), r):
            url, watched = urls[name]

            def measure():
                return cpu.measure(name, watched, lambda: run_wrk(url, args.http_connections, args.seconds, script),
                                   "wrk")

            s = around(measure) if around else measure()
            samples[name].append(s)
            log("%s round %d %s: %.0f req/s, p50 %.2f ms, p99 %.2f ms"
                % (section, r + 1, name, s["requests_per_s"], s["p50_us"] / 1e3, s["p99_us"] / 1e3))


def backend_stats(url):
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def bench_http(args):
    if not shutil.which("wrk"):
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    samples = {"http-direct": [], "http-relay": []}
    cpu = CpuMeter()
    with tempfile.TemporaryDirectory() as workdir, Procs() as procs:
        script = os.path.join(workdir, "json.lua")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT)
        relay = procs.add(start_relay(workdir, HTTP_CONFIG))
        port = int(relay.match.group(1))
        backend = procs.add(Proc("backend", [_python(), os.path.join(HERE, "peers.py"), "http-backend",
                                             "--size", str(args.http_body)]))
        backend_port = int(backend.match.group(1))
        agent = procs.add(bridge("bridge -H", port, "-H", "web:http://127.0.0.1:%d" % backend_port,
                                 ready=r"online"))
        urls = {"http-direct": ("http://127.0.0.1:%d/small" % backend_port, [backend]),
                "http-relay": ("http://127.0.0.1:%d/web/small" % port, [relay, agent, backend])}
        stats_url = "http://127.0.0.1:%d/_stats" % backend_port

        def counted(measure):
            before = backend_stats(stats_url)
            s = measure()
            after = backend_stats(stats_url)
            # each /_stats reading opens a connection and counts itself
            s["backend_connections"] = after["connections"] - before["connections"] - 1
            s["backend_requests"] = after["requests"] - before["requests"] - 1
            return s

        wrk_rounds("http", urls, args, script, cpu, samples, around=counted)
        rss = relay.rss_peak()
    return {"settings": {"rounds": args.rounds, "seconds": args.seconds, "connections": args.http_connections,
                         "body_bytes": args.http_body, "wrk_threads": 1},
            "samples": samples, "cpu_percent": cpu.medians(), "relay_peak_rss": rss}


# -- soap -------------------------------------------------------------------------------------

def bench_soap(args):
    """SOAP 1.1 calls (add) from wrk to the spyne service of tests/support/soap_service.py,
    directly and through a SOAP entity (envelope parsed and checked by relayd) + bridge -H."""
    if not shutil.which("wrk"):
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    try:
        import spyne  # noqa: F401
    except ImportError:
        return {"skipped": "spyne is not installed (pip install spyne)"}
    samples = {"soap-direct": [], "soap-relay": []}
    cpu = CpuMeter()
    with tempfile.TemporaryDirectory() as workdir, Procs() as procs:
        script = os.path.join(workdir, "soap.lua")
        with open(script, "w") as f:
            f.write(WRK_SOAP + WRK_SCRIPT)
        relay = procs.add(start_relay(workdir, SOAP_CONFIG))
        port = int(relay.match.group(1))
        service = procs.add(Proc("spyne", [_python(), "-m", "tests.support.soap_service"], cwd=ROOT,
                                 ready=r"READY (\d+) \d+", stdin=subprocess.PIPE))
        service_port = int(service.match.group(1))
        agent = procs.add(bridge("bridge -H", port, "-H", "calc:http://127.0.0.1:%d" % service_port,
                                 ready=r"online"))
        urls = {"soap-direct": ("http://127.0.0.1:%d/" % service_port, [service]),
                "soap-relay": ("http://127.0.0.1:%d/calc/" % port, [relay, agent, service])}
        wrk_rounds("soap", urls, args, script, cpu, samples)
        rss = relay.rss_peak()
    return {"settings": {"rounds": args.rounds, "seconds": args.seconds, "connections": args.http_connections,
                         "envelope_bytes": len(SOAP_ENVELOPE)},
            "samples": samples, "cpu_percent": cpu.medians(), "relay_peak_rss": rss}


def section_soap(h):
    head = ["SOAP calls", "----------", ""]
    if "skipped" in h:
        return head + ["Skipped: %s." % h["skipped"], ""]
    st = h["settings"]
    d, r = h["samples"]["soap-direct"], h["samples"]["soap-relay"]
    dr, rr = med(d, "requests_per_s"), med(r, "requests_per_s")
    rows = [(label, "%.0f" % med(samples, "requests_per_s"), rng(samples, "requests_per_s", 1, "%.0f"),
             "%.2f ms" % (med(samples, "p50_us") / 1e3), "%.2f ms" % (med(samples, "p99_us") / 1e3), ratio)
            for label, samples, ratio in (("direct to the spyne service (baseline)", d, "1.00"),
                                          ("through relayd (SOAP entity) and ``bridge -H``", r,
                                           "%.2f" % (rr / dr)))]
    return head + [
        "Measured %s%s.  ``wrk -t 1 -c %d -d %ds`` POSTs a %d-byte SOAP 1.1 ``add`` call to the"
        % (h["date"], at(h), st["connections"], st["seconds"], st["envelope_bytes"]),
        "spyne service of ``tests/support/soap_service.py`` (wsgiref: one request at a time, a new",
        "connection per request), %d rounds.  Through relayd the envelope is parsed with the" % st["rounds"],
        "hardened parser and checked before it goes over the control channel to ``relayd bridge -H``.",
        "",
        *table(("Scenario", "Calls/s", "Range", "p50", "p99", "Ratio"), rows),
        "CPU (median share of one core during a round): "
        + "; ".join(cpu_note(h["cpu_percent"], ("soap-direct", "soap-relay"))) + ".",
        "Relay process peak RSS: %.1f MiB." % (h["relay_peak_rss"] / 2**20),
        "",
    ]


# -- tcp --------------------------------------------------------------------------------------

def iperf_server(port):
    return Proc("iperf3 -s", ["iperf3", "-s", "-1", "-p", str(port), "-B", "127.0.0.1", "--forceflush"],
                ready=r"Server listening", timeout=10)


def run_iperf(port, seconds, server_port):
    server = iperf_server(server_port)
    try:
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"],
                             capture_output=True, text=True, timeout=seconds + 60)
        try:
            data = json.loads(out.stdout)
        except ValueError:
            raise RuntimeError("iperf3 via port %d: %s%s\nserver: %s"
                               % (port, out.stdout[-2000:], out.stderr[-2000:], server.text()[-2000:]))
        if data.get("error"):
            raise RuntimeError("iperf3 via port %d: %s\nserver: %s" % (port, data["error"], server.text()[-2000:]))
        end = data["end"]
        try:
            server.p.wait(15)
        except subprocess.TimeoutExpired:
            pass
        return {"bits_per_second": end["sum_received"]["bits_per_second"],
                "bytes": end["sum_received"]["bytes"],
                "seconds": end["sum_received"]["seconds"],
                "sent_bits_per_second": end["sum_sent"]["bits_per_second"],
                "retransmits": end["sum_sent"].get("retransmits"),
                "client_cpu_percent": end.get("cpu_utilization_percent", {}).get("host_total")}
    finally:
        server.stop()


def transit_available():
    try:
        import wormhole_transit_relay  # noqa: F401
    except ImportError:
        return False
    return True


def bench_tcp(args):
    missing = [t for t in ("iperf3", "socat") if not shutil.which(t)]
    if missing:
        return {"skipped": "%s not installed" % " and ".join(missing)}
    samples = {name: [] for name in TCP_SCENARIOS}
    notes = []
    failures = []
    cpu = CpuMeter()
    profile = None
    target = free_port()  # the iperf3 server's port, one server per test
    with tempfile.TemporaryDirectory() as workdir, Procs() as procs:
        relay = procs.add(start_relay(workdir, TCP_CONFIG))
        port = int(relay.match.group(1))
        door = int(relay.wait_for(r"relayd port door \(iperf\) listening on [0-9.]+:(\d+)").group(1))
        remote = procs.add(bridge("bridge -R", port, "-R", "iperf:127.0.0.1:%d" % target, ready=r"online"))
        local = procs.add(bridge("bridge -L", port, "-L", "127.0.0.1:0:iperf",
                                 ready=r"listening on [0-9.]+:(\d+)"))
        local_port = int(local.match.group(1))
        hop2_port = free_port()
        hop2 = procs.add(Proc("socat hop 2", ["socat", "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % hop2_port,
                                              "TCP:127.0.0.1:%d" % target], ready=None))
        hop1_port = free_port()
        hop1 = procs.add(Proc("socat hop 1", ["socat", "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % hop1_port,
                                              "TCP:127.0.0.1:%d" % hop2_port], ready=None))
        wait_listening(hop2_port)  # nothing listens on target yet: these probes go no further
        wait_listening(hop1_port)
        runs = {
            "tcp-direct": (target, []),
            "tcp-socat": (hop1_port, [hop1, hop2]),
            "tcp-door": (door, [relay, remote]),
            "tcp-bridge": (local_port, [local, relay, remote]),
        }
        if transit_available():
            transit = procs.add(Proc("transit relay", [_bin("twistd"), "-n", "--pidfile=", "transitrelay",
                                                       "--port", "tcp:0:interface=127.0.0.1"],
                                     cwd=workdir, ready=r"starting on (\d+)"))
            tport = int(transit.match.group(1))
            tserver = procs.add(Proc("transit end -R", [_python(), os.path.join(HERE, "peers.py"),
                                                        "transit-server", "--relay", str(tport),
                                                        "--target", str(target)]))
            tclient = procs.add(Proc("transit end -L", [_python(), os.path.join(HERE, "peers.py"),
                                                        "transit-client", "--relay", str(tport)]))
            runs["tcp-transit"] = (int(tclient.match.group(1)), [tclient, transit, tserver])
        else:
            del samples["tcp-transit"]
            notes.append("tcp-transit skipped: magic-wormhole-transit-relay is not installed "
                         "(pip install magic-wormhole-transit-relay)")
        for r in range(args.rounds):
            for name in rotate(list(runs), r):
                via, watched = runs[name]
                try:
                    sample = cpu.measure(name, watched, lambda: run_iperf(via, args.seconds, target),
                                         "iperf3 -c and -s")
                except RuntimeError as e:  # retried once, and reported
                    log("tcp round %d %s failed, retrying: %s" % (r + 1, name, e))
                    failures.append({"scenario": name, "round": r + 1, "error": str(e)[:2000]})
                    sample = cpu.measure(name, watched, lambda: run_iperf(via, args.seconds, target),
                                         "iperf3 -c and -s")
                samples[name].append(sample)
                log("tcp round %d %s: %.2f Gbit/s" % (r + 1, name, samples[name][-1]["bits_per_second"] / 1e9))
        if not args.no_profile:
            profile = profile_relay(relay, local_port, target, args.seconds, workdir)
        rss = relay.rss_peak()
    return {"settings": {"rounds": args.rounds, "seconds": args.seconds},
            "samples": samples, "cpu_percent": cpu.medians(), "relay_peak_rss": rss,
            "notes": notes, "failures": failures, "profile": profile}


def profile_relay(relay, port, target, seconds, workdir):
    """One more tcp-bridge test with py-spy sampling relayd in its middle; top functions by
    own time."""
    import threading

    pyspy = _bin("py-spy")
    if not pyspy:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    raw = os.path.join(workdir, "relayd.pyspy")
    duration = max(1, seconds - 2)
    rate = 250
    result = {}

    def load():
        try:
            result.update(run_iperf(port, seconds, target))
        except Exception as e:
            result["error"] = str(e)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    time.sleep(1)  # past the iperf3 server's start and the handshakes
    cpu0, t0 = relay.cpu(), time.perf_counter()
    spy = subprocess.run([pyspy, "record", "--pid", str(relay.p.pid), "--duration", str(duration),
                          "--rate", str(rate), "--nonblocking", "--format", "raw", "--output", raw],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=duration + 30)
    relay_cpu = 100 * (relay.cpu() - cpu0) / (time.perf_counter() - t0)
    worker.join(seconds + 90)
    if "error" in result or "bits_per_second" not in result:
        return {"skipped": "the profiled iperf3 test failed: %s" % result.get("error")}
    if spy.returncode != 0 or not os.path.exists(raw):
        return {"skipped": "py-spy failed: %s" % spy.stdout.strip()[-500:]}
    own = collections.Counter()
    total = 0
    with open(raw) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            leaf = stack.split(";")[-1]
            own[re.sub(r":\d+\)$", ")", leaf)] += n  # per function, not per line
    top = [{"function": fn, "samples": n, "percent": round(100 * n / total, 1)}
           for fn, n in own.most_common(10)]
    return {"scenario": "tcp-bridge", "seconds": duration, "rate_hz": rate, "samples": total,
            "relay_cpu_percent": round(relay_cpu, 1), "gbit_per_s": result["bits_per_second"] / 1e9,
            "top_own": top}


# -- report -----------------------------------------------------------------------------------

def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def med(samples, key):
    return statistics.median(s[key] for s in samples)


def rng(samples, key, scale, fmt):
    vals = [s[key] / scale for s in samples]
    return (fmt + "-" + fmt) % (min(vals), max(vals))


def at(section):
    return " at commit %s" % section["git"] if section.get("git") else ""


def table(header, rows):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join("=" * w for w in widths)

    def fmt(r):
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()

    return [line, fmt(header), line, *[fmt(r) for r in rows], line, ""]


def cpu_note(cpu, scenarios):
    out = []
    for s in scenarios:
        procs = cpu.get(s)
        if procs:
            out.append("``%s``: %s; total %.0f%%" % (s, ", ".join("%s %.0f%%" % (n, v) for n, v in procs.items()),
                                                      sum(procs.values())))
    return out


def section_ws(ws):
    s = ws["settings"]
    direct, relay = med(ws["samples"]["ws-direct"], "mb_per_s"), med(ws["samples"]["ws-relay"], "mb_per_s")
    rows = [
        ("one WebSocket stream, direct (baseline)", "%.0f MB/s" % direct,
         rng(ws["samples"]["ws-direct"], "mb_per_s", 1, "%.0f"), "1.00"),
        ("one WebSocket stream through relayd", "%.0f MB/s" % relay,
         rng(ws["samples"]["ws-relay"], "mb_per_s", 1, "%.0f"), "%.2f" % (relay / direct)),
    ]
    text = [
        "WebSocket stream",
        "----------------",
        "",
        "Measured %s%s.  One WebSocket stream (``bench/wsbench.py``, Autobahn on both ends) carries"
        % (ws["date"], at(ws)),
        "%d MiB in %d KiB binary messages, %d rounds.  Direct: source -> sink.  Through relayd:"
        % (s["mib"], s["message_kib"], s["rounds"]),
        "source -> relayd -> Hybrid Connections listener sink.",
        "",
        *table(("Scenario", "Median", "Range", "Ratio"), rows),
        "CPU (median share of one core over a round, which includes the source process's"
        " start-up): " + "; ".join(cpu_note(ws["cpu_percent"], ("ws-direct", "ws-relay"))) + ".",
        "Relay process peak RSS: %.1f MiB." % (ws["relay_peak_rss"] / 2**20),
        "",
    ]
    return text


def section_http(h):
    head = ["Small HTTP requests", "-------------------", ""]
    if "skipped" in h:
        return head + ["Skipped: %s." % h["skipped"], ""]
    s = h["settings"]
    d, r = h["samples"]["http-direct"], h["samples"]["http-relay"]
    dr, rr = med(d, "requests_per_s"), med(r, "requests_per_s")
    rows = []
    for label, samples, ratio in (("direct to the backend (baseline)", d, "1.00"),
                                  ("through relayd and ``relayd bridge -H``", r, "%.2f" % (rr / dr))):
        conns = statistics.median(1000 * x["backend_connections"] / max(1, x["backend_requests"])
                                  for x in samples)
        rows.append((label, "%.0f" % med(samples, "requests_per_s"),
                     rng(samples, "requests_per_s", 1, "%.0f"),
                     "%.2f ms" % (med(samples, "p50_us") / 1e3), "%.2f ms" % (med(samples, "p99_us") / 1e3),
                     ratio, "%.0f" % conns))
    return head + [
        "Measured %s%s.  ``wrk -t 1 -c %d -d %ds`` (keep-alive connections, one request at a"
        % (h["date"], at(h), s["connections"], s["seconds"]),
        "time on each) GETs a %d-byte body from a twisted.web backend (``bench/peers.py http-backend``),"
        % s["body_bytes"],
        "%d rounds.  Direct: wrk -> backend.  Through relayd: wrk -> relayd" % s["rounds"],
        "``http://127.0.0.1:PORT/web/small`` (entity ``web``, no client authorization) ->",
        "control channel -> ``relayd bridge -H web:http://127.0.0.1:BACKEND`` -> backend.",
        "Latency percentiles are wrk's, per request; the table shows their medians over the rounds.",
        "",
        *table(("Scenario", "Requests/s", "Range", "p50", "p99", "Ratio (req/s)", "Backend conns"), rows),
        "*Backend conns*: TCP connections the backend accepted per 1000 requests it served (wrk's",
        "own keep-alive connections when direct; the bridge agent's connections through relayd).",
        "",
        "CPU (median share of one core during a round): "
        + "; ".join(cpu_note(h["cpu_percent"], ("http-direct", "http-relay"))) + ".",
        "Relay process peak RSS: %.1f MiB." % (h["relay_peak_rss"] / 2**20),
        "",
    ]


TCP_LABELS = {
    "tcp-direct": "direct (baseline)",
    "tcp-socat": "two-hop socat chain",
    "tcp-door": "relayd port-mapped door -> bridge -R",
    "tcp-bridge": "bridge -L -> relayd -> bridge -R",
    "tcp-transit": "magic-wormhole transit relay",
}


def section_tcp(t):
    head = ["TCP throughput (iperf3)", "-----------------------", ""]
    if "skipped" in t:
        return head + ["Skipped: %s." % t["skipped"], ""]
    s = t["settings"]
    samples = t["samples"]
    direct = med(samples["tcp-direct"], "bits_per_second")
    socat = med(samples["tcp-socat"], "bits_per_second")
    rows = []
    for name in TCP_SCENARIOS:
        if name not in samples:
            continue
        m = med(samples[name], "bits_per_second")
        rows.append((TCP_LABELS[name], "%.2f Gbit/s" % (m / 1e9),
                     rng(samples[name], "bits_per_second", 1e9, "%.2f"),
                     "%.3f" % (m / direct), "%.2f" % (m / socat)))
    text = head + [
        "Measured %s%s.  ``iperf3 -c 127.0.0.1 -p X -t %d -J`` against ``iperf3 -s -1`` (a new"
        % (t["date"], at(t), s["seconds"]),
        "server per test), %d rounds; the figure is ``end.sum_received.bits_per_second``.  iperf3"
        % s["rounds"],
        "opens a control connection and a data connection; both go through the path under test.",
        "",
        "* direct: iperf3 -c -> iperf3 -s.",
        "* two-hop socat chain: iperf3 -c -> ``socat TCP-LISTEN:A,fork TCP:127.0.0.1:B`` ->",
        "  ``socat TCP-LISTEN:B,fork TCP:127.0.0.1:P`` -> iperf3 -s (two plain C splices).",
        "* port-mapped door: iperf3 -c -> relayd ``[[tcp_ports]] mode = \"port\"`` -> WebSocket ->",
        "  ``relayd bridge -R iperf:127.0.0.1:P`` -> iperf3 -s.",
        "* bridge -L: iperf3 -c -> ``relayd bridge -L 127.0.0.1:LP:iperf`` -> WebSocket -> relayd ->",
        "  WebSocket -> ``relayd bridge -R`` -> iperf3 -s (the azbridge-style path, three Python",
        "  processes).",
        "* transit relay: iperf3 -c -> ``bench/peers.py transit-client`` -> magic-wormhole-transit-relay",
        "  (``twistd transitrelay``) -> ``bench/peers.py transit-server`` -> iperf3 -s.  The transit",
        "  relay pairs two TCP connections by a ``please relay TOKEN for side SIDE`` line and then",
        "  splices raw bytes; the two ends are small Twisted splicers standing in for the bridge",
        "  agents, so this path has the same three Twisted processes as the bridge -L path but no",
        "  WebSocket framing.",
        "* ssh -R is not measured: there is no sshd on the benchmark machine.",
        "",
        *table(("Scenario", "Median", "Range (Gbit/s)", "vs direct", "vs socat"), rows),
    ]
    text += ["CPU (median share of one core during a round; 100% = one core pegged):", ""]
    text += ["* " + line for line in cpu_note(t["cpu_percent"], TCP_SCENARIOS)]
    text += ["", "Relay process peak RSS: %.1f MiB." % (t["relay_peak_rss"] / 2**20), ""]
    for note in t.get("notes", []):
        text += [note + ".", ""]
    for f in t.get("failures", []):
        text += ["One test failed and was run again (round %d, %s): ``%s``."
                 % (f["round"], f["scenario"], f["error"].splitlines()[0]), ""]
    prof = t.get("profile")
    if prof and "skipped" not in prof:
        text += [
            "Profile of relayd in the middle of one more bridge -L test (``py-spy record --nonblocking``,"
            " %d Hz for %d s: %d non-idle samples; relayd used %.0f%% of a core meanwhile, and the test"
            % (prof["rate_hz"], prof["seconds"], prof["samples"], prof["relay_cpu_percent"]),
            "ran at %.2f Gbit/s); the five functions with the most own time:" % prof["gbit_per_s"],
            "",
            *table(("Function", "Own samples", "What it is"),
                   [("``%s``" % p["function"], "%.1f%%" % p["percent"], explain(p["function"]))
                    for p in prof["top_own"][:5]]),
            "py-spy charges a C call (a system call, Autobahn's C masker) to the Python function",
            "that made it; percentages are of the non-idle samples.",
            "",
        ]
    elif prof:
        text += ["Profile skipped: %s." % prof["skipped"], ""]
    return text


KNOWN_FUNCTIONS = {
    "untilConcludes": "socket send() system calls (Twisted's EINTR-retry wrapper)",
    "Connection.doRead": "socket recv() system calls",
    "EPollReactor.doPoll": "epoll_wait and dispatching",
    "XorMaskerNvx.process": "unmasking client-to-server WebSocket frames",
    "XorMaskerNull.process": "WebSocket frame (un)masking",
    "WebSocketProtocol.processData": "Autobahn frame parsing",
    "WebSocketProtocol.sendFrame": "Autobahn frame building",
    "Connection.writeSomeData": "socket writes",
    "FileDescriptor.doWrite": "write buffer handling",
    "FileDescriptor.write": "write buffer handling",
    "FileDescriptor._maybePauseProducer": "write-buffer size check (flow control)",
    "_qn": "Autobahn's qualified-name helper (log calls)",
}


def explain(function):
    name = function.split(" (", 1)[0]
    return KNOWN_FUNCTIONS.get(name, "")


def tool_versions():
    def first_line(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    import twisted

    versions = {"python": platform.python_version(), "twisted": twisted.__version__,
                "iperf3": first_line(["iperf3", "--version"]), "wrk": first_line(["wrk", "-v"]),
                "socat": _socat_version()}
    try:
        from importlib.metadata import version

        versions["magic-wormhole-transit-relay"] = version("magic-wormhole-transit-relay")
    except Exception:
        pass
    return versions


def _socat_version():
    try:
        out = subprocess.run(["socat", "-V"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"socat version (\S+)", out)
        return m.group(1) if m else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def git_state():
    """The commit measured, and whether the working tree differed from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head + ("+local changes" if dirty else "") if head else None


def machine_info():
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"arch": platform.machine(), "cpu": model, "cores": os.cpu_count(),
            "kernel": platform.release()}


def write_report(data, rst_path, json_path):
    with open(json_path, "w") as f:
        json.dump(data, f, indent=1)
    m = data["machine"]
    v = data["versions"]
    text = [
        "Performance",
        "===========",
        "",
        "Produced by ``%s``; raw results in ``docs/performance.json``." % data["command"],
        "The benchmark needs wrk, iperf3 and socat (apt), and optionally magic-wormhole-transit-relay",
        "and py-spy (pip); ``python bench/run.py --help`` lists the options (``--only ws,http,tcp``",
        "runs a subset and keeps the other sections).",
        "",
        "Machine: %s, %s, %d cores (a shared VM: other work may run beside the benchmark, hence"
        % (m["arch"], m["cpu"] or "unknown CPU", m["cores"]),
        "the rounds and medians); Linux %s; Python %s, Twisted %s; %s; %s; socat %s."
        % (m["kernel"], v.get("python"), v.get("twisted"), v.get("iperf3"), v.get("wrk"), v.get("socat")),
        "Load average (1, 5, 15 min) when the run started: %s; when it ended: %s."
        % (", ".join("%.2f" % x for x in m["loadavg_at_start"]), ", ".join("%.2f" % x for x in m["loadavg_at_end"])),
        "Every process of a scenario (load generator, relay, bridge agents, backend) runs on",
        "these %d cores, so a relayed scenario shares them among more processes than its direct"
        % m["cores"],
        "baseline: the ratios measure the whole path on one small machine, not the relay alone.",
        "Every figure was measured in the same run as its baselines, rounds alternating between",
        "the scenarios; figures are medians, ratios are ratios of medians, ranges are min-max.",
        "",
    ]
    sections = data["sections"]
    if "ws" in sections:
        text += section_ws(sections["ws"])
    if "http" in sections:
        text += section_http(sections["http"])
    if "soap" in sections:
        text += section_soap(sections["soap"])
    if "tcp" in sections:
        text += section_tcp(sections["tcp"])
    with open(rst_path, "w") as f:
        f.write("\n".join(text).rstrip("\n") + "\n")


def main():
    p = argparse.ArgumentParser(description="Run the relayd benchmark; write docs/performance.{rst,json}.")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help="comma-separated sections to run: ws,http,soap,tcp (default: all); the other "
                        "sections of an existing performance.json are kept")
    p.add_argument("--rounds", type=int, default=5, help="rounds per section (default 5)")
    p.add_argument("--seconds", type=int, default=5, help="length of one http or tcp test (default 5)")
    p.add_argument("--mib", type=int, default=512, help="ws: MiB per round (default 512)")
    p.add_argument("--message-kib", type=int, default=1024, help="ws: message size (default 1024 KiB)")
    p.add_argument("--http-connections", type=int, default=8, help="http: wrk connections (default 8)")
    p.add_argument("--http-body", type=int, default=100, help="http: response body bytes (default 100)")
    p.add_argument("--no-profile", action="store_true", help="tcp: skip the py-spy profile of relayd")
    p.add_argument("--out", default=os.path.join(ROOT, "docs"),
                   help="directory for performance.rst and performance.json (default docs/)")
    args = p.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad or not only:
        p.error("--only: expected some of %s, got %r" % (",".join(SECTIONS), args.only))
    if args.rounds < 1 or args.seconds < 1:
        p.error("--rounds and --seconds must be at least 1")

    rst_path = os.path.join(args.out, "performance.rst")
    json_path = os.path.join(args.out, "performance.json")
    sections = {}
    if set(only) != set(SECTIONS) and os.path.exists(json_path):
        try:
            with open(json_path) as f:
                sections = json.load(f).get("sections", {})
        except ValueError:
            sections = {}
    started = time.time()
    load_start = os.getloadavg()
    for name in SECTIONS:
        if name not in only:
            continue
        log("section %s" % name)
        date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        result = {"ws": bench_ws, "http": bench_http, "soap": bench_soap, "tcp": bench_tcp}[name](args)
        result["date"] = date
        result["git"] = git_state()
        sections[name] = result
    argv = " ".join(sys.argv[1:])
    data = {
        "command": "python bench/run.py" + (" " + argv if argv else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_seconds": round(time.time() - started, 1),
        "machine": dict(machine_info(), loadavg_at_start=load_start, loadavg_at_end=os.getloadavg()),
        "versions": tool_versions(),
        "sections": sections,
    }
    os.makedirs(args.out, exist_ok=True)
    write_report(data, rst_path, json_path)
    print(open(rst_path).read())
    log("done in %.0f s" % (time.time() - started))


if __name__ == "__main__":
    main()
