"""The switchboard with a fake clock: listeners, balancing, rendezvous ids, deadlines."""

import json
import random

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from relayd.interfaces import IListenerChannel, IOffer
from relayd.switchboard import (
    AcceptTimeout, NoListener, Rejected, RendezvousGone, SenderGone, Switchboard,
    SwitchboardError, TooManyListeners,
)
from relayd.transports.listener.offers import AcceptOffer, RequestOffer


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


# --- caps on pending rendezvous (issue 8, item 11) ----------------------------------------


def capped(clock=None, per_entity=3, total=5, retry_after=7):
    from relayd.limits import Limits

    limits = Limits(max_pending_rendezvous_per_entity=per_entity, max_pending_rendezvous=total,
                    rendezvous_retry_after=retry_after)
    return Switchboard(clock or Clock(), limits=limits)


def test_per_entity_cap_gives_503_with_retry_after():
    from relayd.switchboard import Overloaded

    clock = Clock()
    sb = capped(clock)
    sb.add_listener("echo", Channel("a"))
    sb.add_listener("other", Channel("b"))
    held = [sb.open_rendezvous("echo") for _ in range(3)]
    with pytest.raises(Overloaded) as e:
        sb.open_rendezvous("ECHO")
    assert e.value.status == 503 and e.value.retry_after == 7
    assert "3 senders are already waiting" in e.value.message
    assert "max_pending_rendezvous_per_entity" in e.value.message
    assert sb.pending_count() == 3
    assert sb.pending_count("echo") == 3
    # another entity is not affected by echo's cap
    other = sb.open_rendezvous("other")
    outcomes = [results(rv.result) for rv in held + [other]]
    # one accepted, one rejected: each frees its place at once
    held[0].accept("leg")
    held[1].reject(403, "no")
    assert sb.pending_count("echo") == 1
    more = [sb.open_rendezvous("echo") for _ in range(2)]
    outcomes += [results(rv.result) for rv in more]
    with pytest.raises(Overloaded):
        sb.open_rendezvous("echo")
    # the accept deadline frees the rest
    clock.advance(30.1)
    assert sb.pending_count() == 0 and sb.pending_count("echo") == 0
    assert all(len(out) == 1 for out in outcomes)
    for rv in [sb.open_rendezvous("echo") for _ in range(3)]:
        drop(rv)  # the sender going away frees its place
    assert sb.pending_count() == 0


def test_global_cap_across_entities():
    from relayd.switchboard import Overloaded

    sb = capped(per_entity=3, total=5)
    for name in ("a", "b"):
        sb.add_listener(name, Channel(name))
    for _ in range(3):
        sb.open_rendezvous("a")
    sb.open_rendezvous("b")
    sb.open_rendezvous("b")
    with pytest.raises(Overloaded) as e:
        sb.open_rendezvous("b")
    assert e.value.status == 503 and "max_pending_rendezvous" in e.value.message
    assert "5 senders are waiting" in e.value.message
    assert sb.pending_count() == 5


def test_refused_offer_and_no_listener_do_not_count():
    sb = capped(per_entity=1, total=1)
    sb.add_listener("echo", Channel("dead", live=False))
    with pytest.raises(NoListener):
        sb.open_rendezvous("echo")
    assert sb.pending_count() == 0
    sb.add_listener("echo", Channel("live"))
    rv = sb.open_rendezvous("echo")
    assert rv.listener.name == "live"


def test_close_entity_frees_its_places():
    sb = capped(per_entity=2, total=2)
    sb.add_listener("echo", Channel("a"))
    rvs = [sb.open_rendezvous("echo") for _ in range(2)]
    for rv in rvs:
        results(rv.result)
    sb.close_entity("echo")
    sb.add_listener("echo", Channel("b"))
    assert len([sb.open_rendezvous("echo") for _ in range(2)]) == 2


def test_pending_rendezvous_keeps_no_handshake_after_the_offer():
    """Once the listener has its accept message, the sender's offer (its handshake) is dropped."""
    sb = Switchboard(Clock())
    offered = []

    @implementer(IListenerChannel)
    class Encoding(Channel):
        def offer(self, rv):
            offered.append(rv.offer.message("ws://relay", rv))  # what the channel sends
            return True

    offer = AcceptOffer("relay", False, {"X-Big": "x" * 100_000}, suffix="/s")
    sb.add_listener("echo", Encoding("a"))
    rv = sb.open_rendezvous("echo", offer)
    accept = json.loads(offered[0])["accept"]
    assert accept["connectHeaders"]["X-Big"] == "x" * 100_000
    assert accept["address"] == "ws://relay/$hc/echo/s?sb-hc-action=accept&sb-hc-id=" + rv.key
    assert rv.offer is None
    rv.accept("leg")


def test_the_offer_sets_the_rendezvous_kind():
    sb = Switchboard(Clock())
    channel = Channel("a")
    sb.add_listener("echo", channel)
    assert verifyObject(IOffer, RequestOffer("relay", True))
    assert verifyObject(IOffer, AcceptOffer("relay", True, {}))
    rv = sb.open_rendezvous("echo", RequestOffer("relay", True, announce=False))
    assert rv.kind == "request" and channel.offers == [rv]
    drop(rv)
    assert sb.open_rendezvous("echo").kind == "accept"


def test_default_caps_are_the_documented_limits():
    from relayd.limits import Limits

    sb = Switchboard(Clock())
    assert sb.max_pending_per_entity == Limits().max_pending_rendezvous_per_entity
    assert sb.max_pending == Limits().max_pending_rendezvous


@pytest.mark.parametrize("key, value", [("max_pending_rendezvous_per_entity", 0), ("max_pending_rendezvous", -1),
                                        ("rendezvous_retry_after", 0), ("max_pending_rendezvous", "many")])
def test_caps_are_validated_in_the_config(key, value):
    from relayd.config import ConfigError, parse

    with pytest.raises(ConfigError) as e:
        parse({"limits": {key: value}}, "relayd.toml")
    assert str(e.value).startswith("relayd.toml: limits.%s: must be an integer from" % key)
    assert getattr(parse({"limits": {key: 5}}, "t").limits, key) == 5
