"""soap: SOAP 1.1 calls (add) from wrk to the spyne service of tests/support/soap_service.py,
directly and through a SOAP entity (envelope parsed and checked by relayd) + bridge -H.

    soap-direct  wrk -> spyne service
    soap-relay   wrk -> relayd http://127.0.0.1:PORT/calc/ -> relayd bridge -H -> spyne service
"""

import subprocess

from zope.interface import moduleProvides

from bench import report as rst
from bench import wrk
from bench.harness import ROOT, installed, missing_tools, python
from bench.scenarios import IScenario

moduleProvides(IScenario)

NAME = "soap"
TITLE = "SOAP calls"
ORDER = 30
OPTIONS = (wrk.CONNECTIONS,)

ENTITY = "calc"
ENTITIES = """
[[hybrid_connections]]
path = "%s"
kind = "soap"
requires_client_authorization = false
""" % ENTITY

ENVELOPE = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:c="http://relayd.test/calc">'
    '<soap:Body><c:add><c:a>20</c:a><c:b>22</c:b></c:add></soap:Body></soap:Envelope>'
)
WRK_REQUEST = (
    'wrk.method = "POST"\n'
    'wrk.body = [[%s]]\n'
    'wrk.headers["Content-Type"] = "text/xml; charset=utf-8"\n'
    'wrk.headers["SOAPAction"] = \'"add"\'\n' % ENVELOPE
)


def run(harness, args):
    if missing_tools("wrk"):
        return {"skipped": wrk.NEEDS}
    if not installed("spyne"):
        return {"skipped": "spyne is not installed (pip install spyne)"}
    script = harness.write("soap.lua", WRK_REQUEST + wrk.SUMMARY_SCRIPT)
    relay = harness.relay(ENTITIES)
    service = harness.start("spyne", [python(), "-m", "tests.support.soap_service"], cwd=ROOT,
                            ready=r"READY (\d+) \d+", stdin=subprocess.PIPE)
    agent = harness.bridge("bridge -H", relay, "-H", "%s:http://127.0.0.1:%d" % (ENTITY, service.port),
                           ready=r"online")
    urls = {"soap-direct": ("http://127.0.0.1:%d/" % service.port, [service]),
            "soap-relay": ("http://127.0.0.1:%d/%s/" % (relay.port, ENTITY), [relay, agent, service])}
    samples = wrk.rounds(harness, args, urls, script)
    return {"settings": {"rounds": args.rounds, "seconds": args.seconds, "connections": args.http_connections,
                         "envelope_bytes": len(ENVELOPE)},
            "samples": samples, "cpu_percent": harness.cpu_percent(), "relay_peak_rss": relay.rss_peak()}


def targets(h):
    return []  # issue 10 asks for the figure (calls/s against direct), with no target


def report(h):
    st = h["settings"]
    rows = wrk.rows((("direct to the spyne service (baseline)", h["samples"]["soap-direct"]),
                     ("through relayd (SOAP entity) and ``bridge -H``", h["samples"]["soap-relay"])))
    return [
        "%s  ``wrk -t 1 -c %d -d %ds`` POSTs a %d-byte SOAP 1.1 ``add`` call to the"
        % (rst.measured(h), st["connections"], st["seconds"], st["envelope_bytes"]),
        "spyne service of ``tests/support/soap_service.py`` (wsgiref: one request at a time, a new",
        "connection per request), %d rounds.  Through relayd the envelope is parsed with the" % st["rounds"],
        "hardened parser and checked before it goes over the control channel to ``relayd bridge -H``.",
        "",
        *rst.table(("Scenario", "Calls/s", "Range", "p50", "p99", "Ratio"), rows),
        "CPU (median share of one core during a round): "
        + "; ".join(rst.cpu_note(h["cpu_percent"], ("soap-direct", "soap-relay"))) + ".",
        rst.rss_note(h),
        "",
    ]
