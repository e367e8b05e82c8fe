"""The fan-out bench's paced run (issue 11): publish-to-delivery latency at a set rate to 100
subscribers, in the same table and JSON section as the unpaced runs (bench/scenarios/fanout.py)."""

from bench import report
from bench import scenarios
from bench.scenarios import fanout
from tests.unit.test_bench_report import fanout_section, page


def paced_section():
    section = fanout_section()
    section["settings"].update(paced_rates=[200, 1000], paced_seconds=3, subscriber_queue_bytes=16 << 20,
                               subscriber_queue_messages=1 << 16)
    section["samples"][fanout.paced_name(200)] = [
        {"deliveries": 60_000, "deliveries_per_s": 20_000.0, "p50_ms": 0.5, "p99_ms": 2.0,
         "cpu_seconds": {"relayd": 0.6}}] * 3
    section["samples"][fanout.paced_name(1000)] = [
        {"deliveries": 300_000, "deliveries_per_s": r, "p50_ms": p50, "p99_ms": p99,
         "cpu_seconds": {"relayd": 1.5 * i}}
        for i, (r, p50, p99) in enumerate(((99_000.0, 0.9, 4.0), (99_500.0, 0.7, 3.0), (98_000.0, 1.1, 6.0)), 1)]
    return section


def test_paced_figures_are_medians_apart_from_the_unpaced_ones():
    section = paced_section()
    paced = fanout.paced_figures(section)
    assert sorted(paced) == [200, 1000]
    rate, p50, p99, cpu = paced[1000]
    assert (rate, p50, p99) == (99_000.0, 0.9, 4.0)
    assert cpu == 10.0  # 3.0 s of relay CPU for 300,000 deliveries (median round)
    assert paced[200][:3] == (20_000.0, 0.5, 2.0)
    assert sorted(fanout.figures(section)) == [1, 10, 100]  # the paced runs are not among them
    assert fanout.paced_figures(fanout_section()) == {}


def test_the_paced_row_is_in_the_fanout_table():
    text = report.render(page({"fanout": paced_section()}), scenarios.load())
    rows = [line for line in text.splitlines() if line.startswith("100, paced ")]
    assert [r.split()[2] for r in rows] == ["200", "1,000"]
    assert "0.90 ms" in rows[1] and "4.00 ms" in rows[1] and "99,000" in rows[1]
    assert "for 3 s per round to 100" in text
    assert "``limits.subscriber_queue_messages`` to 65,536" in text
