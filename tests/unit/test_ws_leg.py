"""Flow-control pieces in memory (issue 8, items 9 and 10): reading held for several reasons
at once (relayd.pipe), and the control channel's stall deadline on a fake clock."""

from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from relayd import pipe
from relayd.transports.listener.control import ControlChannelPressure


def test_reading_resumes_only_when_every_hold_is_released():
    a, b = StringTransport(), StringTransport()
    on_a = pipe.PauseReading(b, a)  # registered on a: a's output is full
    on_b = pipe.PauseReading(a, b)  # registered on b: b's output is full
    on_a.pauseProducing()
    assert a.producerState == "paused" and b.producerState == "paused"
    on_b.pauseProducing()
    on_a.resumeProducing()
    # b's own output is still full: neither side may read yet
    assert a.producerState == "paused" and b.producerState == "paused"
    on_b.resumeProducing()
    assert a.producerState == "producing" and b.producerState == "producing"


def test_stop_producing_lets_go_of_the_holds():
    a, b = StringTransport(), StringTransport()
    on_a = pipe.PauseReading(b, a)
    on_a.pauseProducing()
    on_a.stopProducing()  # a disconnected while full: b must read again (and see its close)
    assert b.producerState == "producing"


def fake_channel(clock, stall=10.0):
    closed = []
    channel = SimpleNamespace(
        transport=StringTransport(), listener_id="L1", entity_path="echo",
        factory=SimpleNamespace(clock=clock, limits=SimpleNamespace(control_stall_timeout=stall,
                                                                    control_queue_max=4096)),
        _log=SimpleNamespace(info=lambda *a, **k: None),
        close=lambda code, reason: closed.append((code, reason)))
    return channel, closed


def test_control_channel_closed_with_1008_after_the_stall_deadline():
    clock = Clock()
    channel, closed = fake_channel(clock)
    pressure = ControlChannelPressure(channel)
    pressure.pauseProducing()
    assert channel.transport.producerState == "paused" and pressure.paused
    clock.advance(9.9)
    assert closed == []
    clock.advance(0.2)
    assert closed and closed[0][0] == 1008 and "did not read its control channel" in closed[0][1]


def test_control_channel_that_drains_in_time_stays_open():
    clock = Clock()
    channel, closed = fake_channel(clock)
    pressure = ControlChannelPressure(channel)
    pressure.pauseProducing()
    clock.advance(5)
    pressure.resumeProducing()
    assert channel.transport.producerState == "producing" and not pressure.paused
    clock.advance(60)
    assert closed == [] and not clock.getDelayedCalls()
