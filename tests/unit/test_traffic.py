"""relayd/traffic.py: live connection records, bytes counted as they flow, exact totals, records
freed at close (issue 12 items 4 and 7)."""

import gc
import weakref

from twisted.internet.task import Clock

from relayd import traffic


def make():
    ended = []
    clock = Clock()
    t = traffic.Traffic(clock, log_end=lambda *fields: ended.append(fields))
    return t, clock, ended


def test_totals_are_exact_while_connections_are_live_and_after_they_close():
    t, clock, ended = make()
    a = t.open("websocket", "/Echo/", "127.0.0.1:5000", tracking="t-a")
    b = t.open("http", "other", "127.0.0.1:5001")
    assert a.entity == "echo"
    a.up.n += 1000
    a.down.n += 10
    b.up.n += 5
    assert t.totals() == {"bytes_up": 1005, "bytes_down": 10, "connections": 2,
                          "connections_by_door": {"websocket": 1, "http": 1}}
    a.up.n += 24  # still flowing: the totals follow at once, not at close
    assert t.totals()["bytes_up"] == 1029
    clock.advance(2.5)
    a.set_status(1000)
    a.close(1011)  # the first status set wins
    assert t.totals() == {"bytes_up": 1029, "bytes_down": 10, "connections": 1,
                          "connections_by_door": {"http": 1}}
    assert ended == [("websocket", "echo", "127.0.0.1:5000", 1000, 1024, 10, 2.5, "t-a")]
    a.close(1000)  # once only
    assert len(ended) == 1
    assert t.bytes_by_entity() == {"echo": [1024, 10], "other": [5, 0]}
    b.close(200)
    assert t.totals()["bytes_up"] == 1029 and t.totals()["connections"] == 0
    assert t.ended() == {("websocket", 1000): 1, ("http", 200): 1}
    assert t.opened_by_door() == {"websocket": 1, "http": 1}


def test_closing_frees_the_record_at_once():
    t, _, _ = make()
    conn = t.open("nettcp", "e", None)
    ref = weakref.ref(conn)
    flow_up = conn.up
    conn.close()
    del conn
    assert ref() is None  # freed by reference counting, not by a later garbage collection
    assert t.live() == [] and t.describe_live() == []
    del flow_up
    gc.collect()


def test_many_connections_leave_nothing_behind():
    t, _, ended = make()
    for i in range(1000):
        c = t.open("port", "e%d" % (i % 3), "p")
        c.up.n += 1
        c.close(1000)
    assert t.live() == []
    assert t.totals()["bytes_up"] == 1000
    assert len(t.bytes_by_entity()) == 3  # bounded by entities, not by connections


def test_counts_and_forget():
    t, _, _ = make()
    t.count("sender_connections", "Echo", traffic.SUCCESS)
    t.count("sender_connections", "echo", traffic.SUCCESS)
    t.count("listener_connections", "echo", traffic.CLIENT_ERROR)
    t.count("sender_connections", "gone")
    c = t.open("websocket", "gone", "p")
    c.up.n += 7
    c.close()
    assert t.counts()[("sender_connections", "echo", "success")] == 2
    assert t.counts()[("sender_disconnects", "gone", "success")] == 1
    t.forget("/Gone")
    assert all(k[1] != "gone" for k in t.counts())
    assert "gone" not in t.bytes_by_entity()


def test_outcomes():
    assert traffic.outcome_of(200) == traffic.SUCCESS
    assert traffic.outcome_of(404) == traffic.CLIENT_ERROR
    assert traffic.outcome_of(502) == traffic.SERVER_ERROR
    assert traffic.outcome_of(1000) == traffic.SUCCESS
    assert traffic.outcome_of(None) == traffic.SUCCESS
    assert traffic.outcome_of(1008) == traffic.CLIENT_ERROR
    assert traffic.outcome_of(1011) == traffic.SERVER_ERROR


def test_peer_text():
    from twisted.internet.address import IPv4Address, IPv6Address
    assert traffic.peer_text(IPv4Address("TCP", "127.0.0.1", 80)) == "127.0.0.1:80"
    assert traffic.peer_text(IPv6Address("TCP", "::1", 80)) == "[::1]:80"
    assert traffic.peer_text(None) == "-"
