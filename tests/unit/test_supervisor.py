"""The supervisor of ``relayd serve --workers N`` (relayd/supervisor.py) in memory: fake worker
processes and a fake clock.  A worker that exits is started again after a back-off that doubles
while it keeps failing and starts over once it ran STABLE_AFTER; a first run that cannot start
stops everything with status 1; a stop forwards the signal and SIGKILLs what is left after
STOP_TIMEOUT; SIGUSR1 is forwarded without stopping."""

import signal

from relayd import supervisor
from relayd.supervisor import RESTART_DELAY, STABLE_AFTER, STOP_TIMEOUT, Supervisor


class FakeProc:
    pids = iter(range(1000, 2000))

    def __init__(self, args, **kwargs):
        self.args, self.pid, self.returncode, self.signals = args, next(self.pids), None, []

    def poll(self):
        return self.returncode

    def send_signal(self, signum):
        self.signals.append(signum)

    def kill(self):
        self.signals.append(signal.SIGKILL)
        self.returncode = -signal.SIGKILL

    def wait(self, timeout=None):
        return self.returncode


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


def make(n=2):
    clock, lines = Clock(), []
    sup = Supervisor([["worker", str(i)] for i in range(n)], clock=clock, log=lines.append, popen=FakeProc)
    for i in range(n):
        sup.spawn(i)
    return sup, clock, lines


def test_a_worker_that_exits_is_restarted_with_a_doubling_back_off():
    sup, clock, lines = make()
    first = sup.procs[1]
    clock.now += 20  # it ran: not a start-up failure
    first.returncode = -signal.SIGKILL
    assert sup.tick() == RESTART_DELAY
    assert "worker 1 (pid %d) exited (killed by SIGKILL) after 20.0 s; restarting it in 0.5 s" % first.pid in lines
    clock.now += RESTART_DELAY
    sup.tick()
    second = sup.procs[1]
    assert second is not first and second.args == ["worker", "1"]
    second.returncode = 1  # fails again at once: twice the wait
    assert sup.tick() == 2 * RESTART_DELAY
    clock.now += 2 * RESTART_DELAY
    sup.tick()
    third = sup.procs[1]
    clock.now += STABLE_AFTER  # ran long enough: the back-off starts over
    third.returncode = 0
    assert sup.tick() == RESTART_DELAY
    assert sup.procs[0].returncode is None and sup.stopping is None


def test_a_worker_that_cannot_start_the_first_time_stops_the_others():
    sup, clock, lines = make()
    sup.procs[0].returncode = 1
    other = sup.procs[1]
    sup.tick()
    assert sup.status == 1 and other.signals == [signal.SIGTERM]
    other.returncode = -signal.SIGTERM
    assert sup.tick() is False
    assert any("could not start" in line for line in lines)


def test_a_stop_forwards_the_signal_then_kills_what_is_left():
    sup, clock, lines = make()
    sup.pending.append(signal.SIGINT)
    sup.tick()
    assert [p.signals for p in sup.procs] == [[signal.SIGINT], [signal.SIGINT]]
    sup.procs[0].returncode = -signal.SIGINT
    clock.now += STOP_TIMEOUT
    stubborn = sup.procs[1]
    sup.tick()
    assert stubborn.signals == [signal.SIGINT, signal.SIGKILL]
    assert sup.tick() is False and sup.status == 0


def test_sigusr1_is_forwarded_and_nothing_stops():
    sup, clock, lines = make()
    sup.pending.append(signal.SIGUSR1)
    sup.tick()
    assert [p.signals for p in sup.procs] == [[signal.SIGUSR1], [signal.SIGUSR1]]
    assert sup.stopping is None


def test_exit_texts():
    assert supervisor._exit_text(-9) == "killed by SIGKILL"
    assert supervisor._exit_text(3) == "status 3"


def test_a_first_run_that_fails_after_the_start_up_grace_is_restarted():
    sup, clock, lines = make()
    clock.now += supervisor.STARTUP_GRACE
    sup.procs[0].returncode = 1  # it had been serving: a crash, not a start-up failure
    assert sup.tick() == RESTART_DELAY
    assert sup.stopping is None and sup.procs[1].signals == []
