"""The benchmark harness: everything a scenario module (``bench/scenarios/*.py``) needs that is
not its own load.

* :class:`Proc`: a child process whose output goes to a log file we wait on (``READY PORT``
  or any pattern), its CPU time (with psutil, its children's included: :func:`cpu_seconds`),
  RSS and peak RSS, stopped by its pid;
* :class:`Harness`: one section's run: a temporary working directory, the processes started
  in it (stopped in reverse order, whatever happens), relayd and ``relayd bridge`` started on
  free loopback ports (by tests/support's RelayProcess and Bridge, the ones the tests use),
  and :meth:`Harness.alternate`, the rounds: every case of the section in every round, the
  starting case rotating, each measured with :class:`CpuMeter`;
* :meth:`Harness.profile`: py-spy sampling a process in the middle of one more load;
* :class:`Option`: a command-line option a scenario declares (``OPTIONS``), added once even
  when several scenarios share it.

Traffic stays on 127.0.0.1.  Every child process has a timeout.
"""

import collections
import contextlib
import importlib.util
import os
import pathlib
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, NamedTuple, Optional, Sequence

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.support.relay import ROOT_KEY, Bridge, RelayProcess  # noqa: E402
from tests.support.waits import wait_for_text  # noqa: E402

KEY = ROOT_KEY  # the key of rule "root", as tests/support's Bridge uses it
RULE = "root"
RELAY_CONFIG = """
[relay]
listen = ["tcp:0:interface=127.0.0.1"]
data_dir = "data"

[[rules]]
name = "%s"
key = "%s"
rights = ["Manage", "Listen", "Send"]
""" % (RULE, KEY)
PEER_READY = r"READY ?(\d*)"  # what bench/peers.py and bench/wsbench.py print when ready

PORT_RANGE = (20000, 32000)  # below the kernel's ephemeral range (see free_port)
PROFILE_RATE_HZ = 250


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def python():
    return sys.executable


def tool(name):
    """A console script of this venv (twistd, py-spy), else from PATH; None when neither."""
    path = os.path.join(os.path.dirname(python()), name)
    return path if os.path.exists(path) else shutil.which(name)


def peer(script):
    """The path of a peer program of bench/ (``peers.py``, ``wsbench.py``)."""
    return os.path.join(HERE, script)


def free_port(_rng=random.Random()):
    """A free port below the kernel's ephemeral range, so that no outgoing connection can take
    it while the server meant for it is not running (iperf3 -s -1 restarts for every test).
    tests.support.net.free_port binds port 0, an ephemeral port: fine for a server that stays
    up, not for one that comes and goes."""
    for _ in range(200):
        port = _rng.randrange(*PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in %d-%d" % PORT_RANGE)


def port_of(match):
    """The port in a ready line: the match's first group as a number (None when it has no
    group, an empty one, or there is no match)."""
    group = match.group(1) if match and match.re.groups else None
    return int(group) if group else None


def cpu_seconds(pid):
    """CPU seconds (user + system) used so far by process ``pid`` and everything it started:
    its live descendants (sshd's per-connection children, socat's forks) and the children it
    has reaped; None once it is gone.  psutil reads /proc."""
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return None
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue  # a child that ended meanwhile: its parent will count it once reaped
        total += t.user + t.system + t.children_user + t.children_system
    return total


def rotate(seq, r):
    r %= len(seq)
    return list(seq[r:]) + list(seq[:r])


class Proc:
    """A long-lived child process; its output goes to a log file we can wait on.  ``match`` is
    the match of ``ready`` in its output, ``port`` its first group as a number (None when the
    group is empty or there is no ``ready``)."""

    def __init__(self, name, cmd, cwd=None, ready=PEER_READY, timeout=30, stdin=subprocess.DEVNULL):
        self.name = name
        self.cmd = cmd
        self.out = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
        self.p = subprocess.Popen(cmd, cwd=cwd, stdout=self.out, stderr=subprocess.STDOUT, stdin=stdin)
        self.match = self.wait_for(ready, timeout) if ready else None
        self.port = port_of(self.match)

    def wait_for(self, pattern, timeout=30):
        """The first match of ``pattern`` in the output; when none comes (or the process ends),
        the process is stopped, its log kept, and RuntimeError raised."""
        try:
            return wait_for_text(self.text, pattern, self.p, timeout)
        except AssertionError as e:
            self.stop(keep_log=True)
            raise RuntimeError("%s: %s" % (self.cmd, e)) from None

    def text(self):
        with open(self.out.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def cpu(self):
        """CPU seconds so far: see :func:`cpu_seconds`."""
        return cpu_seconds(self.p.pid)

    def rss(self):
        """Resident set size now, in bytes (None once the process is gone)."""
        try:
            return psutil.Process(self.p.pid).memory_info().rss
        except psutil.Error:
            return None

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


class Started(Proc):
    """A process that tests/support started (:class:`RelayProcess`, :class:`Bridge`), measured
    and stopped like a :class:`Proc`; ``started`` is that object."""

    def __init__(self, name, started, popen, text, port=None):
        self.name = name
        self.started = started
        self.p = popen
        self.cmd = popen.args
        self._text = text
        self.match = None
        self.port = port

    def text(self):
        return self._text()

    def stop(self, keep_log=False):
        self.started.stop()


class CpuMeter:
    """CPU used by each named process during each case's rounds: the median share of one core
    (:meth:`medians`), and the seconds of every round in the sample itself
    (``sample["cpu_seconds"][name]``, ``sample["wall_seconds"]``) for figures per byte or per
    connection."""

    def __init__(self):
        self.samples = collections.defaultdict(lambda: collections.defaultdict(list))

    def measure(self, case, procs, fn, load_label):
        """Run ``fn`` (which runs and reaps the load generator: its CPU is the children's
        rusage delta, reported as ``load_label``) and sample the CPU time of ``procs``."""
        before = {p.name: p.cpu() for p in procs}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
        after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = (after_children.ru_utime + after_children.ru_stime) - (children.ru_utime + children.ru_stime)
        seconds = {load_label: load}
        for p in procs:
            after = p.cpu()
            if after is not None and before[p.name] is not None:
                seconds[p.name] = after - before[p.name]
        for name, s in seconds.items():
            self.samples[case][name].append(100 * s / wall)
        if isinstance(result, dict):
            result.setdefault("cpu_seconds", {k: round(v, 3) for k, v in seconds.items()})
            result.setdefault("wall_seconds", round(wall, 3))
        return result

    def medians(self):
        return {s: {name: round(statistics.median(v), 1) for name, v in procs.items()}
                for s, procs in self.samples.items()}


class Case(NamedTuple):
    """One case of a section (``stream-direct``, ``tcp-door``...): the processes whose CPU it
    watches, and ``load()``, which runs one test and returns its sample (a dict).  ``setup``,
    when given, is a context manager factory entered around each of its rounds (outside the
    CPU measurement), e.g. to start a fresh relay for every round."""

    watched: Sequence[Proc]
    load: Callable[[], dict]
    setup: Optional[Callable] = None


class Option:
    """A command-line option of ``bench/run.py`` declared by a scenario module: the arguments of
    ``ArgumentParser.add_argument``.  Scenarios that share an option share this object."""

    def __init__(self, *flags, **kwargs):
        self.flags = flags
        self.kwargs = kwargs

    def add_to(self, parser):
        parser.add_argument(*self.flags, **self.kwargs)


PROFILE = Option("--profile", action="store_true",
                 help="py-spy the relay during one more stream and one more tcp bridge test; the top "
                      "functions go to performance-profile.txt beside the JSON")


class Harness:
    """One section's run; a context manager that stops every process it started."""

    def __init__(self, section, rounds):
        self.section = section
        self.rounds = rounds
        self.cpu = CpuMeter()
        self.procs = []
        self._tmp = None
        self.workdir = None

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.workdir = self._tmp.name
        return self

    def __exit__(self, *exc):
        for p in reversed(self.procs):
            p.stop()
        self._tmp.cleanup()

    def start(self, name, cmd, cwd=None, ready=PEER_READY, timeout=30, stdin=subprocess.DEVNULL):
        """A child process, stopped when the section ends (see :class:`Proc`)."""
        return self._add(Proc(name, cmd, cwd=cwd, ready=ready, timeout=timeout, stdin=stdin))

    def _add(self, proc):
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        """Stop ``proc`` (one of this section's processes) before the section ends."""
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def write(self, name, text):
        """A file of the working directory (a wrk script...); its path."""
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def relay(self, entities, name="relayd"):
        """``twistd -n relayd`` (tests/support's RelayProcess) with rule ``root`` (:data:`KEY`) and
        ``entities`` (TOML) on a free loopback port (``.port``)."""
        relay = RelayProcess(self.workdir, self.write("relayd.toml", RELAY_CONFIG + entities))
        return self._add(Started(name, relay, relay.proc, relay.log_text, port=relay.port))

    def bridge(self, name, relay, *args, ready):
        """``relayd bridge ARGS`` (tests/support's Bridge) against ``relay`` (a :meth:`relay`),
        once ``ready`` is in its output (its first group, if any, is ``.port``)."""
        bridge = Bridge(pathlib.Path(self.workdir), relay.started, *args)
        proc = self._add(Started(name, bridge, bridge.proc, bridge.text))
        proc.match = proc.wait_for(ready)
        proc.port = port_of(proc.match)
        return proc

    def alternate(self, cases, load_label, show, around=None, failures=None):
        """``self.rounds`` rounds of every case of ``cases`` ({name: :class:`Case`}), the
        starting case rotating every round; the samples, {name: [sample per round]}.

        ``load_label`` names the load generator in the CPU figures; ``show(sample)`` is the
        progress line's figure; ``around(measure)`` may wrap each measurement.  With a
        ``failures`` list, a test that raises RuntimeError is recorded there and run once more."""
        samples = {name: [] for name in cases}
        for r in range(self.rounds):
            for name in rotate(list(cases), r):
                case = cases[name]

                def measure():
                    return self.cpu.measure(name, case.watched, case.load, load_label)

                def once():
                    with (case.setup() if case.setup else contextlib.nullcontext()):
                        return around(measure) if around else measure()

                try:
                    sample = once()
                except RuntimeError as e:
                    if failures is None:
                        raise
                    log("%s round %d %s failed, retrying: %s" % (self.section, r + 1, name, e))
                    failures.append({"scenario": name, "round": r + 1, "error": str(e)[:2000]})
                    sample = once()
                samples[name].append(sample)
                log("%s round %d %s: %s" % (self.section, r + 1, name, show(sample)))
        return samples

    def cpu_percent(self):
        return self.cpu.medians()

    def profile(self, proc, load, seconds, rate=PROFILE_RATE_HZ):
        """Run ``load()`` (a test of about ``seconds``) once more with py-spy sampling ``proc``
        in its middle; :func:`summarize_profile` of the samples plus ``seconds``, ``rate_hz``,
        ``cpu_percent`` (of ``proc`` meanwhile) and ``result`` (the load's), or
        {"skipped": why}."""
        pyspy = tool("py-spy")
        if not pyspy:
            return {"skipped": "py-spy is not installed (pip install py-spy)"}
        raw = os.path.join(self.workdir, "%s.pyspy" % proc.name.replace(" ", "-"))
        duration = max(1, seconds - 2)
        result = {}

        def run_load():
            try:
                result.update(load())
            except Exception as e:
                result["error"] = str(e)

        worker = threading.Thread(target=run_load, daemon=True)
        worker.start()
        time.sleep(1)  # past the load's start-up and handshakes: py-spy samples its middle
        cpu0, t0 = proc.cpu(), time.perf_counter()
        spy = subprocess.run([pyspy, "record", "--pid", str(proc.p.pid), "--duration", str(duration),
                              "--rate", str(rate), "--nonblocking", "--format", "raw", "--output", raw],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=duration + 30)
        proc_cpu = 100 * (proc.cpu() - cpu0) / (time.perf_counter() - t0)
        worker.join(seconds + 90)
        if "error" in result or not result:
            return {"skipped": "the profiled test failed: %s" % result.get("error")}
        if spy.returncode != 0 or not os.path.exists(raw):
            return {"skipped": "py-spy failed: %s" % spy.stdout.strip()[-500:]}
        with open(raw) as f:
            summary = summarize_profile(f)
        return dict(summary, seconds=duration, rate_hz=rate, cpu_percent=round(proc_cpu, 1), result=result)


PROFILE_TOP = 15  # functions kept per list of a profile summary
PLUMBING_SHARE = 0.85  # top_total leaves out functions on more of the samples than this (the
                       # reactor's own frames: main loop, poll, log context)


def summarize_profile(lines, top=PROFILE_TOP):
    """py-spy's ``--format raw`` output (``frame;frame;...;leaf COUNT`` per line, the root first,
    each frame ``function (file:line)``) summed up: ``samples`` (in all), ``top_own`` (functions
    by samples in which they were the leaf), ``top_total`` (functions by samples in which they
    were anywhere on the stack, counted once per sample) and ``top_lines`` (leaf lines), each a
    list of {"function", "samples", "percent"}, largest first."""
    own, inclusive, leaf_lines = collections.Counter(), collections.Counter(), collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        functions = [re.sub(r":\d+\)$", ")", frame) for frame in frames]  # per function, not per line
        own[functions[-1]] += n
        leaf_lines[frames[-1]] += n
        for fn in set(functions):
            inclusive[fn] += n

    def ranked(counter):
        return [{"function": fn, "samples": n, "percent": round(100 * n / total, 1)}
                for fn, n in counter.most_common(top)]

    plumbing = [fn for fn, n in inclusive.items() if n > PLUMBING_SHARE * total]
    for fn in plumbing:
        del inclusive[fn]
    return {"samples": total, "top_own": ranked(own), "top_total": ranked(inclusive),
            "top_lines": ranked(leaf_lines)}


def missing_tools(*names):
    """The programs of ``names`` that are not on PATH."""
    return [n for n in names if not shutil.which(n)]


def installed(module):
    """Whether the Python package ``module`` can be imported."""
    return importlib.util.find_spec(module) is not None
