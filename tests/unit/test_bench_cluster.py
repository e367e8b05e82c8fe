"""The cluster section of the benchmark (bench/scenarios/cluster.py): the figures it derives from
its samples (medians, 2-node / 1-node ratios, the cross-node setup cost), its report and its
place on the page, and how it combines clients that ran at once.  Fixed samples, as
performance.json records them; no timing is asserted."""

import pytest

from bench import report, scenarios
from bench.scenarios import cluster

VERSIONS = {"node": "v20", "ws": "8.18.3", "bufferutil": "4.1.0", "utf-8-validate": "6.0.6"}


def rate(per_s, p50=2.0, p99=9.0):
    return {"count": 2000, "seconds": 2000 / per_s, "per_s": per_s, "p50_ms": p50, "p99_ms": p99}


def section(cross=True):
    samples = {
        "rate-1node": [rate(1000), rate(1200), rate(1100)],
        "rate-2nodes": [rate(1800), rate(1500), rate(1700)],
        "stream-1node": [{"bytes": 1, "mb_per_s": x} for x in (400.0, 500.0, 450.0)],
        "stream-2nodes": [{"bytes": 1, "mb_per_s": x} for x in (700.0, 600.0, 720.0)],
        "setup-same": [rate(500, p50, p99) for p50, p99 in ((1.0, 3.0), (1.2, 4.0), (1.1, 3.5))],
        "setup-cross": [rate(300, p50, p99) for p50, p99 in ((2.0, 6.0), (2.4, 9.0), (2.2, 7.0))],
    }
    if not cross:
        del samples["setup-cross"]
    return {"settings": {"rounds": 3, "count": 2000, "inflight": 64, "clients": 2, "stream_mib": 256,
                         "message_kib": 256, "setup_count": 300},
            "samples": samples, "failures": [], "versions": VERSIONS, "routing": cross, "date": "D", "git": "abc",
            "cpu_percent": {"rate-1node": {"relayd x1 (one)": 95.0, "redis-server (one)": 3.0, "node clients": 40.0}}}


def test_figures_are_medians_and_ratios_of_medians():
    f = cluster.figures(section())
    assert f["rate"] == (1100, 1700) and f["rate_ratio"] == pytest.approx(1700 / 1100)
    assert f["mb_per_s"] == (450.0, 700.0) and f["mb_ratio"] == pytest.approx(700 / 450)
    assert f["same"] == (1.1, 3.5) and f["cross"] == (2.2, 7.0)
    assert cluster.targets(section()) == []


def test_report_rows_and_the_cross_node_cost():
    text = "\n".join(cluster.report(section()))
    assert "2 nodes / 1 node  1.55x" in text and "1.56x" in text
    assert "+1.10 ms p50, +3.50 ms p99" in text
    faster = section()
    faster["samples"]["setup-cross"] = faster["samples"]["setup-same"][:1] * 3
    assert "-0.10 ms p50, -0.50 ms p99" in "\n".join(cluster.report(faster))
    assert "98%" in text  # relayd and redis-server CPU of rate-1node, not the load generator's
    assert "Measured D at commit abc." in text
    assert "at its end: 3.00, 2.00, 1.00" in "\n".join(cluster.report(dict(section(), loadavg=[1, 2, 3, 3, 2, 1])))
    without = "\n".join(cluster.report(section(cross=False)))
    assert cluster.figures(section(cross=False))["cross"] is None
    assert "cross-node (sender" not in without and "routing.py was absent" in without


def test_combined_clients_sum_over_the_longest():
    two = cluster.combine([rate(1000, 1.0, 5.0), {"count": 1000, "seconds": 2.0, "per_s": 500, "p50_ms": 3.0,
                                                    "p99_ms": 4.0}], "count", "per_s")
    assert (two["count"], two["seconds"], two["per_s"]) == (3000, 2.0, 1500)
    assert (two["p50_ms"], two["p99_ms"]) == (3.0, 5.0)
    streams = cluster.combine([{"bytes": 10**9, "seconds": 4.0}, {"bytes": 10**9, "seconds": 5.0}], "bytes", "mb_per_s")
    assert streams["mb_per_s"] == 400.0 and "p50_ms" not in streams


def test_the_section_is_on_the_page_last():
    modules = scenarios.load()
    assert modules[-1] is cluster
    data = {"command": "python bench/run.py --only cluster", "date": "D", "wall_seconds": 1,
            "machine": {"arch": "x86_64", "cpu": "c", "cores": 2, "kernel": "k", "loadavg_at_start": [0, 0, 0],
                        "loadavg_at_end": [0, 0, 0]},
            "versions": {}, "sections": {"cluster": section()}}
    page = report.render(data, modules)
    assert cluster.TITLE in page and "Targets\n" not in page
