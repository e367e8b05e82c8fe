"""The benchmark's pure parts (bench/): py-spy summaries, the figures and targets each section
derives from its samples, the targets table and the page, the Node clients' result lines, and
the CPU accounting of a real process tree.  No timing is asserted: the inputs are fixed
samples, as performance.json records them."""

import subprocess
import sys
import time

import pytest

from bench import harness, nodejs, report, scenarios
from bench.scenarios import fanout, pingpong, rendezvous, stream, tcp

RAW_PROFILE = """\
<module> (twistd:1);run (app.py:10);doPoll (epollreactor.py:227);doRead (tcp.py:278) 60
<module> (twistd:1);run (app.py:10);doPoll (epollreactor.py:227);doRead (tcp.py:280) 10
<module> (twistd:1);run (app.py:10);doPoll (epollreactor.py:227);processData (protocol.py:1785);\
process (_xormasker.py:134) 20
<module> (twistd:1);run (app.py:10);doPoll (epollreactor.py:244) 10
not a sample line
"""


def test_profile_summary_counts_own_inclusive_and_lines():
    s = harness.summarize_profile(RAW_PROFILE.splitlines(True))
    assert s["samples"] == 100
    own = {p["function"]: p["percent"] for p in s["top_own"]}
    assert own == {"doRead (tcp.py)": 70.0, "process (_xormasker.py)": 20.0, "doPoll (epollreactor.py)": 10.0}
    # the frames on every sample (<module>, run, doPoll: 100%) are left out of the inclusive list
    total = {p["function"]: p["percent"] for p in s["top_total"]}
    assert total == {"doRead (tcp.py)": 70.0, "processData (protocol.py)": 20.0, "process (_xormasker.py)": 20.0}
    lines = [(p["function"], p["samples"]) for p in s["top_lines"]]
    assert lines[0] == ("doRead (tcp.py:278)", 60)
    assert ("doRead (tcp.py:280)", 10) in lines


def test_profile_summary_counts_a_function_once_per_sample():
    s = harness.summarize_profile(["a (x.py:1);f (y.py:1);f (y.py:2);g (z.py:3) 4\n", "a (x.py:1);h (w.py:1) 1\n"])
    total = {p["function"]: p["samples"] for p in s["top_total"]}
    assert total["f (y.py)"] == 4  # recursion: once per sample, not once per frame


def stream_section(direct=(1000.0, 1200.0, 1100.0), relay=(800.0, 700.0, 780.0), relay_cpu=(0.3, 0.5, 0.35)):
    gb = 1 << 30
    return {
        "settings": {"rounds": 3, "mib": 1024, "message_kib": 256},
        "samples": {
            "stream-direct": [{"bytes": gb, "mb_per_s": x, "cpu_seconds": {}} for x in direct],
            "stream-relay": [{"bytes": gb, "mb_per_s": x, "cpu_seconds": {"relayd": c}}
                             for x, c in zip(relay, relay_cpu)],
        },
        "cpu_percent": {}, "relay_peak_rss": 60 << 20, "date": "D", "git": "abc",
        "versions": {"node": "v20", "ws": "8.18.3", "bufferutil": "4.1.0", "utf-8-validate": "6.0.6"},
    }


def test_stream_ratio_of_medians_and_relay_cpu_per_gb():
    direct, relay, ratio, cpu = stream.figures(stream_section())
    assert (direct, relay) == (1100.0, 780.0)
    assert ratio == pytest.approx(780 / 1100)
    assert cpu == pytest.approx(0.35 / (2**30 / 1e9))
    met = {t["target"]: t["met"] for t in stream.targets(stream_section())}
    assert met == {"one HC stream >= 0.7x a direct WebSocket": True, "relay CPU <= 0.4 s per GB streamed": True}
    slow = stream.targets(stream_section(relay=(300.0, 310.0, 305.0), relay_cpu=(1.7, 1.8, 1.9)))
    assert [t["met"] for t in slow] == [False, False]
    assert slow[0]["measured"] == "0.28x (305 MB/s)"


def pingpong_section(direct_p50, relay_p50, direct_p99, relay_p99):
    def samples(p50s, p99s):
        return [{"p50_us": a, "p90_us": a, "p99_us": b} for a, b in zip(p50s, p99s)]

    return {"settings": {"rounds": 3, "count": 10000, "size": 64, "warmup": 1000},
            "samples": {"pingpong-direct": samples(direct_p50, direct_p99),
                        "pingpong-relay": samples(relay_p50, relay_p99)},
            "cpu_percent": {}, "relay_peak_rss": 1 << 20, "date": "D", "git": None, "versions": {}}


def test_pingpong_added_is_median_relayed_minus_median_direct():
    section = pingpong_section((40, 36, 50), (100, 80, 300), (200, 180, 500), (400, 450, 480))
    assert pingpong.added(section, "p50_us") == 100 - 40
    assert pingpong.added(section, "p99_us") == 450 - 200
    assert [t["met"] for t in pingpong.targets(section)] == [False, True]
    text = "\n".join(pingpong.report(section))
    assert "+60 µs" in text and "+250 µs" in text


def test_rendezvous_rate_rss_and_cpu_per_rendezvous():
    relayed = [{"count": 2000, "per_s": r, "p50_ms": 1, "p99_ms": 2, "relay_cpu_s": 2.0,
                "rss_per_connection": rss} for r, rss in ((1400, 5000), (1600, 5500), (1700, 7000))]
    section = {"settings": {"rounds": 3, "count": 2000, "inflight": 64},
               "samples": {"rendezvous-direct": [{"per_s": 3000, "p50_ms": 1, "p99_ms": 2}] * 3,
                           "rendezvous-relay": relayed},
               "cpu_percent": {}, "date": "D", "git": None, "versions": {}}
    direct, rate, rss, cpu_ms = rendezvous.figures(section)
    assert (direct, rate, rss, cpu_ms) == (3000, 1600, 5500, 1.0)
    targets = rendezvous.targets(section)
    assert [t["met"] for t in targets] == [True, True]
    assert targets[1]["measured"] == "5.5 KB"


def tcp_section(with_ssh=True):
    def runs(gbit):
        return [{"bits_per_second": gbit * 1e9, "bytes": int(gbit * 1e9 / 8 * 5),
                 "cpu_seconds": {"relayd": 1.0, "bridge -L": 0.5, "bridge -R": 0.5}}] * 3

    samples = {"tcp-direct": runs(20), "tcp-socat": runs(4), "tcp-door": runs(4), "tcp-bridge": runs(2.5)}
    if with_ssh:
        samples["tcp-ssh"] = runs(4.2)
    return {"settings": {"rounds": 3, "seconds": 5}, "samples": samples, "cpu_percent": {},
            "relay_peak_rss": 1 << 20, "date": "D", "git": None,
            "notes": [] if with_ssh else ["tcp-ssh skipped: openssh-server is not installed"]}


def test_tcp_bridge_against_ssh_and_cpu_per_gb():
    [t] = tcp.targets(tcp_section())
    assert t["measured"] == "%.2fx" % (2.5 / 4.2) and t["met"] is False
    bridge = tcp_section()["samples"]["tcp-bridge"]
    assert tcp.cpu_per_gb(bridge, tcp.BRIDGE_PROCS) == pytest.approx(2.0 / (2.5 * 5 / 8))  # 2 s for 1.5625 GB
    text = "\n".join(tcp.report(tcp_section()))
    assert "vs ssh -R" in text


def test_tcp_without_sshd_says_the_target_was_not_measured():
    [t] = tcp.targets(tcp_section(with_ssh=False))
    assert t["met"] is False
    assert t["measured"].startswith("not measured (tcp-ssh skipped: openssh-server")
    assert "vs ssh -R" not in "\n".join(tcp.report(tcp_section(with_ssh=False)))


def page(sections):
    return {"command": "python bench/run.py", "date": "D", "wall_seconds": 1.0,
            "machine": {"arch": "x86_64", "cpu": "cpu", "cores": 2, "kernel": "k",
                        "loadavg_at_start": (0, 0, 0), "loadavg_at_end": (0, 0, 0)},
            "versions": {}, "sections": sections}


def test_page_has_a_targets_table_with_met_and_not_met():
    data = page({"stream": stream_section(relay=(300.0, 310.0, 305.0)),
                 "pingpong": pingpong_section((40,) * 3, (60,) * 3, (100,) * 3, (200,) * 3),
                 "soap": {"skipped": "spyne is not installed"}})
    text = report.render(data, scenarios.load())
    targets = text[text.index("Targets\n-------"):text.index("One WebSocket stream\n")]
    rows = [line for line in targets.splitlines() if line.endswith((" stream", " pingpong"))]
    assert len(rows) == 4
    assert any("0.28x (305 MB/s)" in r and "**not met**" in r for r in rows)
    assert any("+20 µs" in r and r.split()[-2] == "met" for r in rows)
    assert "Skipped: spyne is not installed." in text


def test_page_without_targets_has_no_targets_table():
    assert "Targets\n" not in report.render(page({}), scenarios.load())


def test_every_scenario_declares_targets():
    names = [s.NAME for s in scenarios.load()]
    assert names == ["stream", "pingpong", "rendezvous", "http", "soap", "tcp", "fanout", "cluster"]


def test_profile_text_lists_every_profile(tmp_path):
    prof = dict(harness.summarize_profile(RAW_PROFILE.splitlines(True)), seconds=6, rate_hz=250,
                cpu_percent=90.0, result={"mb_per_s": 1.0}, scenario="stream-relay")
    data = page({"stream": dict(stream_section(), profile=prof)})
    report.write(data, scenarios.load(), str(tmp_path))
    text = (tmp_path / "performance-profile.txt").read_text()
    assert "stream: stream-relay" in text and "70.0%  doRead (tcp.py)" in text
    assert "doRead (tcp.py:278)" in text
    assert (tmp_path / "performance.json").exists()


def test_node_result_line_and_errors():
    assert nodejs.parse_result("x.js", 'noise\n{"per_s": 5}\nHELD\n') == {"per_s": 5}
    with pytest.raises(RuntimeError, match="x.js: closed early"):
        nodejs.parse_result("x.js", '{"error": "closed early"}\n')
    with pytest.raises(RuntimeError, match="printed no result"):
        nodejs.parse_result("x.js", "", "boom")


def test_cpu_seconds_counts_a_live_child_and_reaped_ones():
    # a shell that runs one busy child to its end (reaped) and keeps another busy one alive
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    script = "%s -c '%s'; %s -c '%s' & sleep 30" % (sys.executable, busy, sys.executable, busy + "time.sleep(30)")
    proc = subprocess.Popen(["sh", "-c", script])  # ended below by its pid and its children's
    try:
        deadline = time.monotonic() + 20
        while (harness.cpu_seconds(proc.pid) or 0) < 0.55 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert harness.cpu_seconds(proc.pid) >= 0.55  # both children, though the shell itself idles
    finally:
        for child in __import__("psutil").Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()
    assert harness.cpu_seconds(proc.pid) is None


def test_a_failed_section_is_shown_as_failed_and_has_no_targets():
    data = page({"stream": {"failed": "RuntimeError: stream.js: closed early: 1006\nmore", "date": "D", "git": "abc"},
                 "pingpong": pingpong_section((40,) * 3, (60,) * 3, (100,) * 3, (200,) * 3)})
    text = report.render(data, scenarios.load())
    assert "Failed (D at commit abc): ``RuntimeError: stream.js: closed early: 1006``" in text
    targets = text[text.index("Targets\n-------"):text.index("One WebSocket stream\n")]
    assert " stream\n" not in targets and " pingpong\n" in targets


def fanout_section(rates_100=(90_000.0, 120_000.0, 110_000.0)):
    def samples(n, rates):
        return [{"deliveries": 2000 * n, "deliveries_per_s": r, "p50_ms": 10.0 * i, "p99_ms": 100.0 * i,
                 "cpu_seconds": {"relayd": 0.2 * n * i}} for i, r in enumerate(rates, 1)]

    return {
        "settings": {"rounds": 3, "events": 2000, "size": 1024, "control_queue_max": 16 << 20},
        "samples": {"fanout-1": samples(1, (10_000.0, 12_000.0, 11_000.0)),
                    "fanout-10": samples(10, (50_000.0, 60_000.0, 55_000.0)),
                    "fanout-100": samples(100, rates_100)},
        "cpu_percent": {}, "relay_peak_rss": 60 << 20, "date": "D", "git": "abc",
        "versions": {"node": "v20", "ws": "8.18.3", "bufferutil": "4.1.0", "utf-8-validate": "6.0.6"},
    }


def test_fanout_medians_and_relay_cpu_per_delivery():
    fig = fanout.figures(fanout_section())
    assert sorted(fig) == [1, 10, 100]
    rate, p50, p99, cpu = fig[100]
    assert (rate, p50, p99) == (110_000.0, 20.0, 200.0)
    # round i: 0.2 * 100 * i relay CPU seconds for 200,000 deliveries -> 100 * i us each
    assert cpu == pytest.approx(200.0)
    assert fig[10][0] == 55_000.0


def test_fanout_target_is_issue_11_at_100_subscribers():
    met = fanout.targets(fanout_section())
    assert len(met) == 1 and met[0]["met"]
    assert "issue 11" in met[0]["target"] and "100 subscribers" in met[0]["target"]
    assert met[0]["measured"].startswith("110,000/s")
    missed = fanout.targets(fanout_section(rates_100=(80_000.0, 99_999.0, 90_000.0)))
    assert not missed[0]["met"] and missed[0]["measured"].startswith("90,000/s")


def test_fanout_on_the_page():
    text = report.render(page({"fanout": fanout_section()}), scenarios.load())
    assert "issues 10 and 11" in text
    row = [line for line in text.splitlines() if line.startswith("issue 11:")]
    assert len(row) == 1 and row[0].split()[-2:] == ["met", "fanout"]
    assert "Event fan-out (multicast)" in text
    table = [line.split() for line in text.splitlines() if line.startswith(("1 ", "10 ", "100 "))]
    assert [r[:2] for r in table] == [["1", "11,000"], ["10", "55,000"], ["100", "110,000"]]
