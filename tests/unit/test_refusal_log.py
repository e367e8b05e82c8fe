"""access.RefusalLog on a fake clock: the first ``burst`` refusals per cause and interval are
logged in full, the rest summed up in one line when the interval ends."""

from twisted.internet.task import Clock

from relayd.access import RefusalLog


class Recorder:
    def __init__(self):
        self.lines = []

    def info(self, format, **fields):
        self.lines.append(format.format(**fields))


def test_burst_then_one_summary_per_cause_and_interval():
    clock, log = Clock(), Recorder()
    refusals = RefusalLog(log, clock, burst=3, interval=10)
    for i in range(100):
        refusals.refused(("HC connect", 401), "refused {i}", i=i)
    for i in range(2):
        refusals.refused(("HC listen", 403), "forbidden {i}", i=i)
    assert log.lines == ["refused 0", "refused 1", "refused 2", "forbidden 0", "forbidden 1"]
    clock.advance(10)
    assert log.lines[-1].startswith("HC connect: 97 more handshakes refused with 401 in the last 10 s")
    assert len(log.lines) == 6
    # a new interval logs in full again
    refusals.refused(("HC connect", 401), "refused {i}", i=100)
    assert log.lines[-1] == "refused 100"
    clock.advance(30)
    assert len(log.lines) == 7 and not clock.getDelayedCalls()
    refusals.stop()
