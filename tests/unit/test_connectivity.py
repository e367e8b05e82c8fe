"""Connectivity status (issue 12 item 3) with a fake clock: online/offline transitions and their
since-times, the events the switchboard reports (Azure Relay's diagnostic operation names), the
replay ring's bound and Last-Event-ID, and watchers."""

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer

from relayd import connectivity as cx
from relayd.connectivity import Connectivity
from relayd.interfaces import IListenerChannel
from relayd.switchboard import AcceptTimeout, Rejected, Switchboard

START = 1_700_000_000.0


def clock_at(t=START):
    clock = Clock()
    clock.advance(t)
    return clock


@implementer(IListenerChannel)
class Channel:
    def __init__(self, listener_id):
        self.listener_id = listener_id
        self.entity_path = None
        self.offers = []

    def offer(self, rv):
        self.offers.append(rv)
        return True

    def offer_raw(self, text, body):
        return True

    def close(self, code, reason):
        pass


class Offer:
    host = None
    secure = False

    def __init__(self, kind):
        self.kind = kind

    def message(self, base_url, rendezvous):
        return None


class Watcher:
    def __init__(self):
        self.events = []

    def deliver(self, event):
        self.events.append(event)

    def names(self):
        return [e.name for e in self.events]


def test_offline_online_offline_with_since_times():
    clock = clock_at()
    c = Connectivity(clock)
    assert c.status("echo") == {"online": False, "listeners": 0, "since": START}
    clock.advance(10)
    c.report(cx.NEW_LISTENER, "Echo", 1, listener="a")
    assert c.status("echo") == {"online": True, "listeners": 1, "since": START + 10}
    clock.advance(5)
    c.report(cx.NEW_LISTENER, "echo", 2, listener="b")
    c.report(cx.LISTENER_GONE, "echo", 1, listener="a")
    assert c.status("ECHO") == {"online": True, "listeners": 1, "since": START + 10}  # still online since 10
    clock.advance(7)
    c.report(cx.LISTENER_GONE, "echo", 0, listener="b")
    assert c.status("echo") == {"online": False, "listeners": 0, "since": START + 22}


def test_transitions_follow_the_listener_events_in_order():
    clock = clock_at()
    c = Connectivity(clock)
    w = Watcher()
    c.watch(w)
    c.report(cx.NEW_LISTENER, "echo", 1, listener="a")
    c.report(cx.NEW_LISTENER, "echo", 2, listener="b")
    c.report(cx.LISTENER_GONE, "echo", 1, listener="a")
    clock.advance(3)
    c.report(cx.LISTENER_GONE, "echo", 0, listener="b")
    assert w.names() == [cx.NEW_LISTENER, cx.ONLINE, cx.NEW_LISTENER, cx.LISTENER_GONE,
                         cx.LISTENER_GONE, cx.OFFLINE]
    offline = w.events[-1]
    assert offline.data == {"event": cx.OFFLINE, "entity": "echo", "time": START + 3, "listeners": 0,
                            "message": cx.MESSAGES[cx.OFFLINE]}
    assert w.events[0].data["listener"] == "a" and w.events[0].data["listeners"] == 1
    assert [e.id for e in w.events] == ["%s-%d" % (c.boot, n) for n in range(1, 7)]
    assert c.last_event_id == w.events[-1].id


def test_an_entity_never_online_is_offline_since_start_or_creation():
    c = Connectivity(clock_at())
    assert c.status("new", created_at=START + 50)["since"] == START + 50
    assert c.status("old", created_at=START - 50)["since"] == START


def test_forget_drops_the_state():
    clock = clock_at()
    c = Connectivity(clock)
    c.report(cx.NEW_LISTENER, "gone", 1)
    clock.advance(4)
    c.report(cx.LISTENER_GONE, "gone", 0)
    assert c.status("gone")["since"] == START + 4
    c.forget("Gone")
    assert c.status("gone", created_at=START + 9) == {"online": False, "listeners": 0, "since": START + 9}


def test_ring_is_bounded_and_replays_after_last_event_id():
    c = Connectivity(clock_at(), replay=8)
    for i in range(20):
        c.report(cx.NEW_LISTENER, "echo", i + 1, listener=str(i))  # 21 events: + one EntityOnline
    assert len(c._ring) == 8
    events, lost = c.events_after("%s-%d" % (c.boot, 3))
    assert [e.seq for e in events] == list(range(14, 22)) and lost
    events, lost = c.events_after("%s-%d" % (c.boot, 13))
    assert [e.seq for e in events] == list(range(14, 22)) and not lost
    events, lost = c.events_after(c.last_event_id)
    assert events == [] and not lost
    events, lost = c.events_after("0123abcd-5")  # another run of the relay: all that is kept
    assert len(events) == 8 and lost
    events, lost = c.events_after("garbage")
    assert len(events) == 8 and lost
    events, lost = c.events_after("%s-%s" % (c.boot, "9" * 30000))  # not an id of ours: no int() of it
    assert len(events) == 8 and lost


def test_fresh_ring_replays_all_and_loses_nothing():
    c = Connectivity(clock_at())
    c.report(cx.NEW_LISTENER, "echo", 1)
    events, lost = c.events_after(None)
    assert [e.name for e in events] == [cx.NEW_LISTENER, cx.ONLINE] and not lost


def test_a_failing_watcher_does_not_stop_the_others():
    c = Connectivity(clock_at())

    class Broken:
        def deliver(self, event):
            raise RuntimeError("boom")

    good = Watcher()
    c.watch(Broken())
    c.watch(good)
    c.report(cx.NEW_LISTENER, "echo", 1)
    assert good.names() == [cx.NEW_LISTENER, cx.ONLINE]
    c.unwatch(good)
    c.report(cx.LISTENER_GONE, "echo", 0)
    assert len(good.events) == 2 and c.watchers == 1


def test_event_json_is_one_line():
    c = Connectivity(clock_at())
    w = Watcher()
    c.watch(w)
    c.report(cx.REJECTED, "a/b", 1, listener="l\n1", reason="no\nthanks", status=403)
    text = w.events[0].json()
    assert "\n" not in text and '"status":403' in text and '"reason":"no\\nthanks"' in text


# -- the switchboard reports ----------------------------------------------------------------


def test_switchboard_reports_listeners_and_rendezvous():
    clock = clock_at()
    sb = Switchboard(clock)
    w = Watcher()
    sb.connectivity.watch(w)
    a = Channel("listener-a")
    sb.add_listener("echo", a)
    rv = sb.open_rendezvous("echo", Offer("accept"), sender_id="trace-1")
    rv.accept("leg")
    rv = sb.open_rendezvous("echo", Offer("accept"), sender_id="trace-2")
    rv.result.addErrback(lambda f: f.trap(Rejected))
    rv.reject(403, "not now")
    rv = sb.open_rendezvous("echo", Offer("accept"), sender_id="trace-3")
    rv.result.addErrback(lambda f: f.trap(AcceptTimeout))
    clock.advance(sb.accept_timeout)
    rv = sb.open_rendezvous("echo", Offer("request"), sender_id="trace-4")
    rv.result.addErrback(lambda f: f.trap(AcceptTimeout))
    clock.advance(sb.accept_timeout)
    sb.remove_listener("echo", a)
    assert w.names() == [cx.NEW_LISTENER, cx.ONLINE, cx.ESTABLISHED, cx.REJECTED, cx.ACCEPT_TIMEOUT,
                         cx.REQUEST_TIMEOUT, cx.LISTENER_GONE, cx.OFFLINE]
    data = [e.data for e in w.events]
    assert data[0]["listener"] == "listener-a" and data[0]["listeners"] == 1
    assert data[2]["tracking_id"] == "trace-1" and data[2]["listener"] == "listener-a"
    assert (data[3]["tracking_id"], data[3]["status"], data[3]["reason"]) == ("trace-2", 403, "not now")
    assert data[4]["tracking_id"] == "trace-3" and data[5]["tracking_id"] == "trace-4"
    assert data[6]["listeners"] == 0 and data[6]["time"] == START + 2 * sb.accept_timeout
    assert sb.connectivity.status("echo") == {"online": False, "listeners": 0,
                                              "since": START + 2 * sb.accept_timeout}


def test_switchboard_counts_match_the_status():
    sb = Switchboard(clock_at())
    channels = [Channel(str(i)) for i in range(3)]
    for ch in channels:
        sb.add_listener("multi", ch)
    assert sb.connectivity.status("multi")["listeners"] == sb.listener_count("multi") == 3
    sb.close_entity("multi")
    assert sb.connectivity.status("multi") == {"online": False, "listeners": 0, "since": START}


def test_a_sender_that_leaves_makes_no_connection_event():
    sb = Switchboard(clock_at())
    w = Watcher()
    sb.connectivity.watch(w)
    sb.add_listener("echo", Channel("a"))
    rv = sb.open_rendezvous("echo", Offer("accept"))
    rv.result.addErrback(lambda f: None)
    rv.cancel()
    assert w.names() == [cx.NEW_LISTENER, cx.ONLINE]


@pytest.mark.parametrize("name", cx.NAMES)
def test_every_event_has_azure_style_message(name):
    assert cx.MESSAGES[name].endswith(".")


def test_text_details_are_cut_so_the_ring_stays_small():
    c = Connectivity(clock_at())
    w = Watcher()
    c.watch(w)
    c.report(cx.NEW_LISTENER, "echo", 1, listener="x" * 30000)
    assert w.events[0].data["listener"] == "x" * cx.MAX_DETAIL
    assert len(w.events[0].json()) < 1024
