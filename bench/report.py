"""The report writer: docs/performance.json (the raw results, as measured) and
docs/performance.rst (the page: how the run was made, then one section per scenario module,
whose ``report(section)`` gives the prose and tables with the helpers below), and what the
page says about the run (:func:`machine_info`, :func:`tool_versions`, :func:`git_state`).

    {"command", "date", "wall_seconds", "machine", "versions",
     "sections": {NAME: {"settings", "samples", "cpu_percent", "relay_peak_rss", "date", "git",
                         ...} or {"skipped": why, "date", "git"}}}
"""

import json
import os
import platform
import re
import statistics
import subprocess

from bench.harness import PLUMBING_SHARE, ROOT


def tool_versions():
    def first_line(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    import twisted

    versions = {"python": platform.python_version(), "twisted": twisted.__version__,
                "node": first_line(["node", "--version"]), "ssh": first_line(["ssh", "-V"]),
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


def med(samples, key):
    return statistics.median(s[key] for s in samples)


def rng(samples, key, scale, fmt):
    vals = [s[key] / scale for s in samples]
    return (fmt + "-" + fmt) % (min(vals), max(vals))


def at(section):
    return " at commit %s" % section["git"] if section.get("git") else ""


def measured(section):
    """``Measured DATE at commit C``: how a section's prose starts."""
    return "Measured %s%s." % (section["date"], at(section))


def table(header, rows):
    """A reStructuredText simple table, columns as wide as their widest cell."""
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join("=" * w for w in widths)

    def fmt(r):
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()

    return [line, fmt(header), line, *[fmt(r) for r in rows], line, ""]


def cpu_note(cpu, cases):
    """``case``: proc N%, ...; total N% for each of ``cases`` measured."""
    out = []
    for s in cases:
        procs = cpu.get(s)
        if procs:
            out.append("``%s``: %s; total %.0f%%" % (s, ", ".join("%s %.0f%%" % (n, v) for n, v in procs.items()),
                                                      sum(procs.values())))
    return out


def target(text, measured, met):
    """One row of the targets table: the target as the issue words it, the figure measured, and
    whether it is met."""
    return {"target": text, "measured": measured, "met": bool(met)}


def node_versions(section):
    v = section.get("versions") or {}
    return "node %s, ws %s, bufferutil %s, utf-8-validate %s" % (
        v.get("node", "?"), v.get("ws", "?"), v.get("bufferutil", "?"), v.get("utf-8-validate", "?"))


def targets_table(data, scenarios):
    """The lines of the targets table: every target of every measured section, next to the
    figure measured and met / not met ([] when no section has targets)."""
    rows = []
    for scenario in scenarios:
        section = data["sections"].get(scenario.NAME)
        if section is None or "skipped" in section or "failed" in section:
            continue
        for t in scenario.targets(section):
            rows.append((t["target"], t["measured"], "met" if t["met"] else "**not met**", scenario.NAME))
    if not rows:
        return []
    return [
        "Targets",
        "-------",
        "",
        "The targets of issues 10 and 11 (same-run figures from the sections below; a ratio is against",
        "the anchor measured in the same run):",
        "",
        *table(("Target", "Measured", "Status", "Section"), rows),
    ]


def failure_notes(section):
    """A line for every test of ``section`` that failed once and was run again."""
    return ["One test failed and was run again (round %d, %s): ``%s``."
            % (f["round"], f["scenario"], f["error"].splitlines()[0] if f["error"] else "?")
            for f in section.get("failures", [])] + ([""] if section.get("failures") else [])


def rss_note(section):
    return "Relay process peak RSS: %.1f MiB." % (section["relay_peak_rss"] / 2**20)


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


def profile_section(prof, what, show):
    """The lines about ``prof`` (a ``Harness.profile`` result of ``what``, or None when no
    profile was asked for; ``show(result)`` is the profiled test's figure)."""
    if not prof:
        return []
    if "skipped" in prof:
        return ["Profile skipped: %s." % prof["skipped"], ""]
    return [
        "Profile of %s (``py-spy record --nonblocking``, %d Hz for %d s: %d non-idle samples; the"
        % (what, prof["rate_hz"], prof["seconds"], prof["samples"]),
        "process used %.0f%% of a core meanwhile, and the test ran at %s); the functions with the"
        % (prof["cpu_percent"], show(prof["result"])),
        "most own time (all lists: ``performance-profile.txt`` beside this page's JSON):",
        "",
        *profile_table(prof),
    ]


def profile_text(data):
    """performance-profile.txt: every profile of the run, own time, inclusive time and lines."""
    out = []
    for name, section in data["sections"].items():
        prof = section.get("profile") if isinstance(section, dict) else None
        if not prof or "skipped" in prof:
            continue
        out += ["%s: %s, py-spy %d Hz for %d s, %d non-idle samples, process CPU %.0f%% of a core"
                % (name, prof.get("scenario", name), prof["rate_hz"], prof["seconds"], prof["samples"],
                   prof["cpu_percent"]), "", "By own time (leaf function):"]
        out += ["  %5.1f%%  %s" % (p["percent"], p["function"]) for p in prof["top_own"]]
        inclusive = ("By inclusive time (on the stack; the frames on more than %d%% of the samples, the reactor's"
                     " main loop, left out):" % (100 * PLUMBING_SHARE))
        for title, key in ((inclusive, "top_total"), ("By line (leaf):", "top_lines")):
            if prof.get(key):
                out += ["", title] + ["  %5.1f%%  %s" % (p["percent"], p["function"]) for p in prof[key]]
        out += ["", ""]
    return "\n".join(out)


def profile_table(prof, top=5):
    """The ``top`` functions by own time of a ``Harness.profile`` result, with what they are."""
    return [
        *table(("Function", "Own samples", "What it is"),
               [("``%s``" % p["function"], "%.1f%%" % p["percent"], explain(p["function"]))
                for p in prof["top_own"][:top]]),
        "py-spy charges a C call (a system call, Autobahn's C masker) to the Python function",
        "that made it; percentages are of the non-idle samples.",
        "",
    ]


def preamble(data):
    m = data["machine"]
    v = data["versions"]
    return [
        "Performance",
        "===========",
        "",
        "Produced by ``%s``; raw results in ``performance.json`` beside this page." % data["command"],
        "The benchmark needs Node.js and npm (``bench/node``: ``ws`` with ``bufferutil`` and",
        "``utf-8-validate``, installed by ``npm ci`` on the first run), wrk, iperf3, socat and",
        "openssh-server (apt), and optionally magic-wormhole-transit-relay and py-spy (pip); a missing",
        "tool skips its section or case with a note.  ``python bench/run.py --help`` lists the options",
        "(``--only stream,tcp`` runs a subset and keeps the other sections; ``--rounds N``;",
        "``--profile`` adds py-spy profiles of the relay; ``--out DIR`` writes elsewhere than docs/).",
        "Each section below is one module of ``bench/scenarios/``; ``bench/harness.py`` starts and",
        "measures the processes (CPU per process and its children, with psutil), ``bench/report.py``",
        "writes this page.",
        "",
        "Machine: %s, %s, %d cores (a shared VM: other work may run beside the benchmark, hence"
        % (m["arch"], m["cpu"] or "unknown CPU", m["cores"]),
        "the rounds and medians); Linux %s; Python %s, Twisted %s; Node %s; %s; %s; socat %s; %s."
        % (m["kernel"], v.get("python"), v.get("twisted"), v.get("node"), v.get("iperf3"), v.get("wrk"),
           v.get("socat"), v.get("ssh")),
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


def render(data, scenarios):
    """The text of performance.rst for ``data`` (performance.json's content); ``scenarios``: the
    scenario modules, in order (a section of ``data`` without a module is left out)."""
    text = preamble(data) + targets_table(data, scenarios)
    sections = data["sections"]
    for scenario in scenarios:
        section = sections.get(scenario.NAME)
        if section is None:
            continue
        text += [scenario.TITLE, "-" * len(scenario.TITLE), ""]
        if "skipped" in section:
            text += ["Skipped: %s." % section["skipped"], ""]
        elif "failed" in section:
            first = section["failed"].splitlines()[0]
            text += ["Failed (%s%s): ``%s``" % (section.get("date"), at(section), first), ""]
        else:
            text += scenario.report(section)
    return "\n".join(text).rstrip("\n") + "\n"


def write(data, scenarios, out):
    """Write ``out``/performance.json and ``out``/performance.rst; the rst's path."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "performance.json"), "w") as f:
        json.dump(data, f, indent=1)
    rst_path = os.path.join(out, "performance.rst")
    with open(rst_path, "w") as f:
        f.write(render(data, scenarios))
    profiles = profile_text(data)
    if profiles:
        with open(os.path.join(out, "performance-profile.txt"), "w") as f:
            f.write(profiles)
    return rst_path
