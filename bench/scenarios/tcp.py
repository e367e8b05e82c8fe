"""tcp: one iperf3 test (a control and a data connection, both relayed) for S seconds.

    tcp-direct   iperf3 -c -> iperf3 -s
    tcp-socat    iperf3 -c -> socat -> socat -> iperf3 -s       (two-hop socat chain)
    tcp-ssh      iperf3 -c -> sshd (-R port) -> ssh -R -> iperf3 -s  (aes128-gcm; skipped
                 without openssh-server, see bench/sshd.py)
    tcp-door     iperf3 -c -> relayd port-mapped door -> relayd bridge -R -> iperf3 -s
    tcp-bridge   iperf3 -c -> relayd bridge -L -> relayd -> relayd bridge -R -> iperf3 -s
    tcp-transit  iperf3 -c -> transit end -> magic-wormhole transit relay -> transit end
                 -> iperf3 -s  (the ends are bench/peers.py transit-client/-server;
                 skipped when magic-wormhole-transit-relay is not installed)

then, with --profile, one more tcp-bridge test with py-spy sampling relayd.
"""

import json
import statistics
import subprocess

from zope.interface import moduleProvides

from bench import report as rst
from bench import sshd
from bench.harness import (
    PROFILE, Case, Proc, free_port, installed, missing_tools, peer, python, tool,
)
from bench.scenarios import IScenario
from tests.support.waits import wait_listening

moduleProvides(IScenario)

NAME = "tcp"
TITLE = "TCP throughput (iperf3)"
ORDER = 40
OPTIONS = (PROFILE,)

ENTITY = "iperf"
ENTITIES = """
[[hybrid_connections]]
path = "%s"

[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "port"
entity = "%s"
allow_anonymous = true
""" % (ENTITY, ENTITY)
DOOR = "port door (%s)" % ENTITY  # as relayd logs it: "relayd port door (iperf) listening on ..."
CASES = ("tcp-direct", "tcp-socat", "tcp-ssh", "tcp-door", "tcp-bridge", "tcp-transit")
LABELS = {
    "tcp-direct": "direct (baseline)",
    "tcp-socat": "two-hop socat chain",
    "tcp-ssh": "ssh -R (aes128-gcm)",
    "tcp-door": "relayd port-mapped door -> bridge -R",
    "tcp-bridge": "bridge -L -> relayd -> bridge -R",
    "tcp-transit": "magic-wormhole transit relay",
}
IPERF_SERVER_TIMEOUT = 10  # seconds for iperf3 -s to listen
IPERF_SERVER_EXIT = 15  # seconds for iperf3 -s -1 to end after its test


def run_iperf(port, seconds, server_port):
    """One iperf3 test through ``port`` to a new ``iperf3 -s -1`` on ``server_port``."""
    server = Proc("iperf3 -s", ["iperf3", "-s", "-1", "-p", str(server_port), "-B", "127.0.0.1", "--forceflush"],
                  ready=r"Server listening", timeout=IPERF_SERVER_TIMEOUT)
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
            server.p.wait(IPERF_SERVER_EXIT)
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


def socat_hop(harness, name, to_port):
    """``socat TCP-LISTEN:PORT,fork TCP:to_port`` on a free PORT; (PORT, its Proc)."""
    port = free_port()
    proc = harness.start(name, ["socat", "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % port,
                                "TCP:127.0.0.1:%d" % to_port], ready=None)
    return port, proc


def run(harness, args):
    missing = missing_tools("iperf3", "socat")
    if missing:
        return {"skipped": "%s not installed" % " and ".join(missing)}
    notes = []
    failures = []
    profile = None
    target = free_port()  # the iperf3 server's port, one server per test
    relay = harness.relay(ENTITIES)
    door = relay.started.door_port(DOOR)
    remote = harness.bridge("bridge -R", relay, "-R", "%s:127.0.0.1:%d" % (ENTITY, target), ready=r"online")
    local = harness.bridge("bridge -L", relay, "-L", "127.0.0.1:0:%s" % ENTITY, ready=r"listening on [0-9.]+:(\d+)")
    hop2_port, hop2 = socat_hop(harness, "socat hop 2", target)
    hop1_port, hop1 = socat_hop(harness, "socat hop 1", hop2_port)
    wait_listening(hop2_port)  # nothing listens on target yet: these probes go no further
    wait_listening(hop1_port)
    vias = {
        "tcp-direct": (target, []),
        "tcp-socat": (hop1_port, [hop1, hop2]),
        "tcp-door": (door, [relay, remote]),
        "tcp-bridge": (local.port, [local, relay, remote]),
    }
    why = sshd.missing()
    if why:
        notes.append("tcp-ssh skipped: %s" % why)
    else:
        ssh_port, ssh_procs = sshd.start(harness, target)
        vias["tcp-ssh"] = (ssh_port, ssh_procs)
    if installed("wormhole_transit_relay"):
        transit = harness.start("transit relay", [tool("twistd"), "-n", "--pidfile=", "transitrelay",
                                                  "--port", "tcp:0:interface=127.0.0.1"],
                                cwd=harness.workdir, ready=r"starting on (\d+)")
        tserver = harness.start("transit end -R", [python(), peer("peers.py"), "transit-server",
                                                   "--relay", str(transit.port), "--target", str(target)])
        tclient = harness.start("transit end -L", [python(), peer("peers.py"), "transit-client",
                                                   "--relay", str(transit.port)])
        vias["tcp-transit"] = (tclient.port, [tclient, transit, tserver])
    else:
        notes.append("tcp-transit skipped: magic-wormhole-transit-relay is not installed "
                     "(pip install magic-wormhole-transit-relay)")
    cases = {name: Case(watched, lambda via=via: run_iperf(via, args.seconds, target))
             for name, (via, watched) in vias.items()}
    samples = harness.alternate(cases, "iperf3 -c and -s", lambda s: "%.2f Gbit/s" % (s["bits_per_second"] / 1e9),
                                failures=failures)
    if args.profile:
        profile = profile_bridge(harness, relay, local.port, target, args.seconds)
    return {"settings": {"rounds": args.rounds, "seconds": args.seconds},
            "samples": samples, "cpu_percent": harness.cpu_percent(), "relay_peak_rss": relay.rss_peak(),
            "notes": notes, "failures": failures, "profile": profile}


def profile_bridge(harness, relay, port, target, seconds):
    """One more tcp-bridge test with py-spy sampling relayd in its middle."""
    prof = harness.profile(relay, lambda: run_iperf(port, seconds, target), seconds)
    if "skipped" in prof:
        return prof
    return dict(prof, scenario="tcp-bridge")


SSH_TARGET = 1.0  # bridge -L -> relayd -> bridge -R against ssh -R
BRIDGE_PROCS = ("bridge -L", "relayd", "bridge -R")


def cpu_per_gb(samples, names):
    """Median over the rounds of the CPU seconds of ``names`` (together) per GB received."""
    return statistics.median(sum(s["cpu_seconds"].get(n, 0) for n in names) / (s["bytes"] / 1e9) for s in samples)


def targets(t):
    samples = t["samples"]
    if "tcp-ssh" not in samples:
        return [rst.target("TCP through bridge -L -> relayd -> bridge -R >= %.1fx ssh -R" % SSH_TARGET,
                           "not measured (%s)" % "; ".join(t.get("notes", [])), False)]
    ratio = rst.med(samples["tcp-bridge"], "bits_per_second") / rst.med(samples["tcp-ssh"], "bits_per_second")
    return [rst.target("TCP through bridge -L -> relayd -> bridge -R >= %.1fx ssh -R" % SSH_TARGET,
                       "%.2fx" % ratio, ratio >= SSH_TARGET)]


def report(t):
    s = t["settings"]
    samples = t["samples"]
    anchors = [("direct", "tcp-direct"), ("socat", "tcp-socat"), ("ssh -R", "tcp-ssh")]
    anchors = [(label, rst.med(samples[name], "bits_per_second")) for label, name in anchors if name in samples]
    rows = []
    for name in CASES:
        if name not in samples:
            continue
        m = rst.med(samples[name], "bits_per_second")
        rows.append((LABELS[name], "%.2f Gbit/s" % (m / 1e9), rst.rng(samples[name], "bits_per_second", 1e9, "%.2f"),
                     *("%.2f" % (m / a) for _, a in anchors)))
    relay_cpu = cpu_per_gb(samples["tcp-bridge"], BRIDGE_PROCS)
    text = [
        "%s  ``iperf3 -c 127.0.0.1 -p X -t %d -J`` against ``iperf3 -s -1`` (a new"
        % (rst.measured(t), s["seconds"]),
        "server per test), %d rounds; the figure is ``end.sum_received.bits_per_second``.  iperf3"
        % s["rounds"],
        "opens a control connection and a data connection; both go through the path under test.",
        "",
        "* direct: iperf3 -c -> iperf3 -s.",
        "* two-hop socat chain: iperf3 -c -> ``socat TCP-LISTEN:A,fork TCP:127.0.0.1:B`` ->",
        "  ``socat TCP-LISTEN:B,fork TCP:127.0.0.1:P`` -> iperf3 -s (two plain C splices).",
        "* ssh -R: iperf3 -c -> the port sshd listens on for ``ssh -N -R 127.0.0.1:A:127.0.0.1:P``",
        "  -> SSH connection (``-o Ciphers=aes128-gcm@openssh.com``) -> ssh -> iperf3 -s; a throwaway",
        "  sshd on a loopback port with a fresh host key and user key (``bench/sshd.py``).",
        "* port-mapped door: iperf3 -c -> relayd ``[[tcp_ports]] mode = \"port\"`` -> WebSocket ->",
        "  ``relayd bridge -R iperf:127.0.0.1:P`` -> iperf3 -s.",
        "* bridge -L: iperf3 -c -> ``relayd bridge -L 127.0.0.1:LP:iperf`` -> WebSocket -> relayd ->",
        "  WebSocket -> ``relayd bridge -R`` -> iperf3 -s (the azbridge-style path, three Python",
        "  processes).",
        "* transit relay: iperf3 -c -> ``bench/peers.py transit-client`` -> magic-wormhole-transit-relay",
        "  (``twistd transitrelay``) -> ``bench/peers.py transit-server`` -> iperf3 -s: the same three",
        "  Twisted processes as the bridge -L path, splicing raw bytes without WebSocket framing.",
        "",
        *rst.table(("Path", "Median", "Range (Gbit/s)", *("vs %s" % label for label, _ in anchors)), rows),
        "bridge -L, relayd and bridge -R together used %.2f CPU seconds per GB carried (median)." % relay_cpu,
        "",
        "CPU (median share of one core during a round; 100% = one core pegged; sshd counts its",
        "per-connection children):",
        "",
    ]
    text += ["* " + line for line in rst.cpu_note(t["cpu_percent"], CASES)]
    text += ["", rst.rss_note(t), ""]
    for note in t.get("notes", []):
        text += [note + ".", ""]
    text += rst.failure_notes(t)
    text += rst.profile_section(t.get("profile"), "relayd during one more bridge -L test",
                                lambda r: "%.2f Gbit/s" % (r["bits_per_second"] / 1e9))
    return text
