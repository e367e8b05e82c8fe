"""The switchboard with a fake clock: listeners, balancing, rendezvous ids, deadlines."""

import random

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer

from relayd.interfaces import IListenerChannel
from relayd.switchboard import (
    AcceptTimeout, NoListener, Rejected, RendezvousGone, SenderGone, Switchboard,
    SwitchboardError, TooManyListeners,
)


@implementer(IListenerChannel)
class Channel:
    def __init__(self, name, live=True):
        self.name = name
        self.live = live
        self.offers = []
        self.closed = None

    def offer(self, rv):
        if not self.live:
            return False
        self.offers.append(rv)
        return True

    def close(self, code, reason):
        self.closed = (code, reason)


def drop(rv):
    rv.result.addErrback(lambda f: f.trap(SenderGone))
    rv.cancel()


def results(d):
    out = []
    d.addBoth(out.append)
    return out


def test_listener_cap_gives_clear_error():
    sb = Switchboard(Clock())
    for i in range(25):
        sb.add_listener("echo", Channel(i))
    with pytest.raises(TooManyListeners) as e:
        sb.add_listener("echo", Channel(25))
    assert e.value.status == 403
    assert "25 listeners" in e.value.message and "max_listeners" in e.value.message
    assert sb.listener_count("echo") == 25
    sb.add_listener("echo2", Channel("x"), max_listeners=1)
    with pytest.raises(TooManyListeners):
        sb.add_listener("echo2", Channel("y"), max_listeners=1)


def test_online_offline_events_with_counts():
    sb = Switchboard(Clock())
    events = []
    sb.add_observer(lambda *e: events.append(e))
    a, b = Channel("a"), Channel("b")
    sb.add_listener("Echo", a)
    sb.add_listener("echo", b)
    sb.remove_listener("echo", a)
    sb.remove_listener("echo", a)  # twice: no second event
    sb.remove_listener("echo", b)
    assert events == [("online", "Echo", 1), ("online", "echo", 2),
                      ("offline", "echo", 1), ("offline", "echo", 0)]
    assert sb.listener_counts() == {}


def test_no_listener():
    sb = Switchboard(Clock())
    with pytest.raises(NoListener) as e:
        sb.open_rendezvous("echo")
    assert e.value.status == 404
    assert "no listener" in e.value.message


def test_balancing_is_random_and_fair():
    sb = Switchboard(Clock(), rng=random.Random(7))
    channels = [Channel(i) for i in range(4)]
    for c in channels:
        sb.add_listener("echo", c)
    for _ in range(4000):
        drop(sb.open_rendezvous("echo"))
    counts = [len(c.offers) for c in channels]
    assert sum(counts) == 4000
    assert min(counts) > 850, counts  # each near 1000


def test_dead_listener_is_skipped():
    sb = Switchboard(Clock(), rng=random.Random(1))
    dead, live = Channel("dead", live=False), Channel("live")
    sb.add_listener("echo", dead)
    sb.add_listener("echo", live)
    for _ in range(20):
        rv = sb.open_rendezvous("echo")
        assert rv.listener is live
        drop(rv)
    sb.remove_listener("echo", live)
    with pytest.raises(NoListener):
        sb.open_rendezvous("echo")


def test_accept_fires_sender_and_id_is_one_time():
    sb = Switchboard(Clock())
    sb.add_listener("echo", Channel("a"))
    rv = sb.open_rendezvous("echo", sender_id="trace-1")
    assert rv.id == "trace-1"
    assert rv.key != "trace-1" and len(rv.key) == 32
    out = results(rv.result)
    assert sb.find(rv.key) is rv
    rv.accept("leg")
    assert out == ["leg"]
    with pytest.raises(RendezvousGone):
        sb.find(rv.key)
    with pytest.raises(RendezvousGone):
        rv.accept("again")
    assert sb.pending_count() == 0


def test_keys_are_unique_and_unguessable():
    sb = Switchboard(Clock())
    sb.add_listener("echo", Channel("a"))
    rvs = [sb.open_rendezvous("echo") for _ in range(1000)]
    keys = {rv.key for rv in rvs}
    for rv in rvs:
        drop(rv)
    assert len(keys) == 1000
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in keys)


def test_reject_carries_listener_status():
    sb = Switchboard(Clock())
    sb.add_listener("echo", Channel("a"))
    rv = sb.open_rendezvous("echo")
    out = results(rv.result)
    rv.reject(451, "not today")
    assert isinstance(out[0].value, Rejected)
    assert out[0].value.status == 451 and out[0].value.message == "not today"


def test_accept_deadline():
    clock = Clock()
    sb = Switchboard(clock, accept_timeout=30)
    sb.add_listener("echo", Channel("a"))
    rv = sb.open_rendezvous("echo")
    out = results(rv.result)
    clock.advance(29.9)
    assert out == []
    clock.advance(0.2)
    assert isinstance(out[0].value, AcceptTimeout)
    assert out[0].value.status == 504 and "30 seconds" in out[0].value.message
    with pytest.raises(RendezvousGone):
        sb.find(rv.key)
    assert clock.getDelayedCalls() == []


def test_accept_cancels_deadline_timer():
    clock = Clock()
    sb = Switchboard(clock)
    sb.add_listener("echo", Channel("a"))
    rv = sb.open_rendezvous("echo")
    rv.accept("leg")
    assert clock.getDelayedCalls() == []


def test_sender_gone():
    clock = Clock()
    sb = Switchboard(clock)
    sb.add_listener("echo", Channel("a"))
    rv = sb.open_rendezvous("echo")
    out = results(rv.result)
    rv.cancel()
    assert isinstance(out[0].value, SenderGone)
    assert clock.getDelayedCalls() == [] and sb.pending_count() == 0


def test_long_sender_id_refused():
    sb = Switchboard(Clock())
    sb.add_listener("echo", Channel("a"))
    with pytest.raises(SwitchboardError) as e:
        sb.open_rendezvous("echo", sender_id="x" * 129)
    assert e.value.status == 400


def test_close_entity_closes_listeners_legs_and_pending():
    sb = Switchboard(Clock())
    a, other = Channel("a"), Channel("other")
    sb.add_listener("echo", a)
    sb.add_listener("other", other)
    leg = Channel("leg")
    untrack = sb.track("echo", leg)
    rv = sb.open_rendezvous("echo")
    out = results(rv.result)
    sb.close_entity("ECHO")
    assert a.closed[0] == 1001 and leg.closed[0] == 1001
    assert other.closed is None
    assert sb.listener_count("echo") == 0
    assert isinstance(out[0].value, SwitchboardError) and out[0].value.status == 404
    untrack()  # harmless after close
