"""ws: one WebSocket stream (bench/wsbench.py, Autobahn on both ends).

    ws-direct    source -> sink
    ws-relay     source -> relayd -> HC listener sink
"""

import json
import subprocess
import time

from zope.interface import moduleProvides

from bench import report as rst
from bench.harness import KEY, RULE, Case, Option, peer, python
from bench.scenarios import IScenario

moduleProvides(IScenario)

NAME = "ws"
TITLE = "WebSocket stream"
ORDER = 10
OPTIONS = (
    Option("--mib", type=int, default=512, help="ws: MiB per round (default 512)"),
    Option("--message-kib", type=int, default=1024, help="ws: message size (default 1024 KiB)"),
)

ENTITY = "bench"
ENTITIES = """
[[hybrid_connections]]
path = "%s"
""" % ENTITY
SOURCE_TIMEOUT = 600
TOKEN_LIFETIME = 3600


def run_source(url, total, message, token=None):
    cmd = [python(), peer("wsbench.py"), "source", url, "--bytes", str(total), "--message", str(message)]
    if token:
        cmd += ["--token", token]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=SOURCE_TIMEOUT)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr
    result = json.loads(line)
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def run(harness, args):
    from relayd.wire import sas

    total, message = args.mib << 20, args.message_kib << 10
    relay = harness.relay(ENTITIES)
    url = "ws://127.0.0.1:%d" % relay.port
    sink_hc = harness.start("sink (HC listener)", [python(), peer("wsbench.py"), "sink-hc", url, ENTITY, RULE, KEY])
    sink = harness.start("sink", [python(), peer("wsbench.py"), "sink-direct", "0"])
    direct_url = "ws://127.0.0.1:%d" % sink.port
    token = sas.make_token(url.replace("ws:", "http:") + "/" + ENTITY, RULE, KEY, int(time.time()) + TOKEN_LIFETIME)
    relayed_url = "%s/$hc/%s?sb-hc-action=connect" % (url, ENTITY)
    cases = {
        "ws-direct": Case([sink], lambda: run_source(direct_url, total, message)),
        "ws-relay": Case([relay, sink_hc], lambda: run_source(relayed_url, total, message, token)),
    }
    samples = harness.alternate(cases, "source", lambda s: "%.0f MB/s" % s["mb_per_s"])
    return {"settings": {"rounds": args.rounds, "mib": args.mib, "message_kib": args.message_kib},
            "samples": samples, "cpu_percent": harness.cpu_percent(), "relay_peak_rss": relay.rss_peak()}


def report(ws):
    s = ws["settings"]
    direct, relay = rst.med(ws["samples"]["ws-direct"], "mb_per_s"), rst.med(ws["samples"]["ws-relay"], "mb_per_s")
    rows = [
        ("one WebSocket stream, direct (baseline)", "%.0f MB/s" % direct,
         rst.rng(ws["samples"]["ws-direct"], "mb_per_s", 1, "%.0f"), "1.00"),
        ("one WebSocket stream through relayd", "%.0f MB/s" % relay,
         rst.rng(ws["samples"]["ws-relay"], "mb_per_s", 1, "%.0f"), "%.2f" % (relay / direct)),
    ]
    return [
        "%s  One WebSocket stream (``bench/wsbench.py``, Autobahn on both ends) carries" % rst.measured(ws),
        "%d MiB in %d KiB binary messages, %d rounds.  Direct: source -> sink.  Through relayd:"
        % (s["mib"], s["message_kib"], s["rounds"]),
        "source -> relayd -> Hybrid Connections listener sink.",
        "",
        *rst.table(("Scenario", "Median", "Range", "Ratio"), rows),
        "CPU (median share of one core over a round, which includes the source process's"
        " start-up): " + "; ".join(rst.cpu_note(ws["cpu_percent"], ("ws-direct", "ws-relay"))) + ".",
        rst.rss_note(ws),
        "",
    ]
