"""The supervisor of ``relayd serve --workers N`` (issue 13 item 7): N worker processes, each
``relayd serve ... --worker I`` (``twistd -n --pidfile= relayd ... --worker I``, whose settings
:func:`relayd.workers.worker_settings` derives), started, restarted and stopped.

* a worker that exits is started again after 0.5 s, doubling to 30 s while it keeps failing
  within 30 s of its start; one that cannot start the first time (exit status 1: a port it cannot
  bind, a bad certificate) stops the others and the supervisor exits 1;
* SIGTERM and SIGINT are forwarded (stop: it exits 0 once every worker has, SIGKILLing those still
  running after ``STOP_TIMEOUT``), SIGUSR1 too (twistd reopens its log file);
* workers run in their own process group (a terminal's Ctrl-C reaches the supervisor only, which
  forwards it once) and get SIGTERM when the supervisor dies (Linux ``PR_SET_PDEATHSIG``), so none
  is left behind.
"""

import os
import select
import signal
import subprocess
import sys
import time

from relayd import config
from relayd.workers import worker_settings

RESTART_DELAY = 0.5  # seconds before a worker that exited is started again; doubled while it keeps failing
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 30.0  # a worker that ran this long starts over from RESTART_DELAY
STOP_TIMEOUT = 30.0  # seconds workers have to stop after SIGTERM before they are killed
STARTUP_STATUS = 1  # the exit status of a worker that could not start (twistd relayd's)
STARTUP_GRACE = 15.0  # a first run that exits with STARTUP_STATUS within this many seconds could not start
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def _log(message):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print("%s [relayd serve] %s" % (stamp, message), file=sys.stderr, flush=True)


def _exit_text(status):
    if status < 0:
        try:
            return "killed by %s" % signal.Signals(-status).name
        except ValueError:
            return "killed by signal %d" % -status
    return "status %d" % status


def _die_with_parent():
    """A ``preexec_fn``: the worker gets SIGTERM when the supervisor dies (Linux), or exits at
    once when the supervisor is already gone."""
    parent = os.getpid()
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None
    PR_SET_PDEATHSIG = 1

    def preexec():
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class Supervisor:
    """Runs one process per command (``commands[i]``: worker i's argv) until stopped."""

    def __init__(self, commands, clock=time.monotonic, log=_log, popen=subprocess.Popen):
        self.commands = commands
        self.clock, self.log, self.popen = clock, log, popen
        n = len(commands)
        self.procs = [None] * n
        self.started = [0.0] * n
        self.delay = [RESTART_DELAY] * n
        self.restart_at = [None] * n
        self.ever_ran = [False] * n
        self.stopping = None  # the stop's deadline once stopping
        self.status = 0
        self.pending = []  # signals received, handled in the loop

    def spawn(self, i):
        proc = self.popen(self.commands[i], stdin=subprocess.DEVNULL, process_group=0, preexec_fn=_die_with_parent())
        self.procs[i], self.started[i], self.restart_at[i] = proc, self.clock(), None
        return proc

    def stop(self, signum=signal.SIGTERM, status=0):
        if self.stopping is not None:
            return
        self.stopping, self.status = self.clock() + STOP_TIMEOUT, status
        self.restart_at = [None] * len(self.commands)
        for proc in self.live():
            proc.send_signal(signum)

    def live(self):
        return [proc for proc in self.procs if proc is not None and proc.returncode is None]

    def reap(self):
        now = self.clock()
        for i, proc in enumerate(self.procs):
            if proc is None or proc.poll() is None:
                continue
            self.procs[i] = None
            lived = now - self.started[i]
            if self.stopping is not None:
                self.log("worker %d (pid %d) stopped (%s)" % (i, proc.pid, _exit_text(proc.returncode)))
                continue
            if not self.ever_ran[i] and proc.returncode == STARTUP_STATUS and lived < STARTUP_GRACE:
                self.log("worker %d (pid %d) could not start (%s; its lines above say why); stopping the others"
                         % (i, proc.pid, _exit_text(proc.returncode)))
                self.stop(status=1)
                continue
            self.ever_ran[i] = True
            delay = self.delay[i] if lived < STABLE_AFTER else RESTART_DELAY
            self.delay[i] = min(delay * 2, RESTART_DELAY_MAX)
            self.restart_at[i] = now + delay
            self.log("worker %d (pid %d) exited (%s) after %.1f s; restarting it in %.1f s"
                     % (i, proc.pid, _exit_text(proc.returncode), lived, delay))

    def tick(self):
        """Handle signals, exits and due restarts; the seconds until the next thing to do (None:
        nothing but signals), or False once every worker has stopped."""
        while self.pending:
            signum = self.pending.pop(0)
            if signum == signal.SIGUSR1:
                for proc in self.live():
                    proc.send_signal(signum)
            else:
                self.log("%s: stopping %d workers" % (signal.Signals(signum).name, len(self.live())))
                self.stop(signum)
        self.reap()
        now = self.clock()
        if self.stopping is not None:
            if not self.live():
                return False
            if now >= self.stopping:
                for proc in self.live():
                    self.log("worker pid %d still running %.0f s after the stop: killing it" % (proc.pid, STOP_TIMEOUT))
                    proc.kill()
                self.stopping = now + STOP_TIMEOUT
            return max(0.05, min(1.0, self.stopping - now))
        for i, at in enumerate(self.restart_at):
            if at is not None and at <= now:
                self.log("worker %d started again (pid %d)" % (i, self.spawn(i).pid))
        due = [at - now for at in self.restart_at if at is not None]
        # a poll every second as well: a worker's exit is seen even if its SIGCHLD was missed
        return max(0.0, min(due + [1.0]))

    def run(self):
        """Start the workers and supervise them until stopped; the exit status."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous = {}
        for signum in FORWARDED + (signal.SIGCHLD,):
            previous[signum] = signal.signal(signum, (lambda *_: None) if signum == signal.SIGCHLD
                                             else (lambda signum, frame: self.pending.append(signum)))
        wakeup = signal.set_wakeup_fd(wake_w)
        try:
            for i in range(len(self.commands)):
                self.spawn(i)
            self.log("%d workers started (pids %s)" % (len(self.procs), ", ".join(str(p.pid) for p in self.procs)))
            while True:
                timeout = self.tick()
                if timeout is False:
                    return self.status
                readable, _, _ = select.select([wake_r], [], [], timeout)
                if readable:
                    while True:
                        try:
                            if not os.read(wake_r, 512):
                                break
                        except BlockingIOError:
                            break
        finally:
            for proc in self.live():  # an exception above: leave nothing behind
                proc.kill()
                proc.wait()
            signal.set_wakeup_fd(wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(wake_r)
            os.close(wake_w)


# -- relayd serve --workers N ------------------------------------------------------------------

def _worker_logfile(twistd, index):
    """twistd's options for worker ``index``: ``--logfile X`` -> X with ``-I`` before its extension
    (each worker rotates its own file), no pidfile (the supervisor's is the one given)."""
    out, pidfile = [], None
    items = iter(twistd)
    for item in items:
        name, eq, value = item.partition("=")
        if name in ("--logfile", "-l", "--pidfile"):
            if not eq:
                value = next(items, "")
            if name == "--pidfile":
                pidfile = value or None
                continue
            if value and value != "-":
                root, ext = os.path.splitext(value)
                value = "%s-%d%s" % (root, index, ext)
            out.append("--logfile=%s" % value)
        else:
            out.append(item)
    return out + ["--pidfile="], pidfile


def main(count, twistd, relayd_args):
    """``relayd serve --workers COUNT [twistd options] [relayd options]``: the exit status."""
    from relayd.tap import Options

    if any(arg == "--worker" or arg.startswith("--worker=") for arg in relayd_args):
        raise ValueError("--worker is set by relayd serve --workers for each worker; leave it out")
    from twisted.python.usage import UsageError

    options = Options()
    try:
        options.parseOptions(relayd_args)  # a mistake in the config: its message, exit status 1
    except UsageError as e:
        raise ValueError(str(e))
    try:
        for i in range(count):
            worker_settings(options.settings, i)
    except config.ConfigError as e:
        print("relayd serve: %s" % e, file=sys.stderr, flush=True)
        return 1
    commands = []
    pidfile = None
    for i in range(count):
        args, pidfile = _worker_logfile(twistd, i)
        commands.append([sys.executable, "-m", "relayd.cli", "serve", *args, *relayd_args, "--worker", str(i)])
    if pidfile:
        with open(pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    try:
        return Supervisor(commands).run()
    finally:
        if pidfile:
            try:
                os.unlink(pidfile)
            except OSError:
                pass
