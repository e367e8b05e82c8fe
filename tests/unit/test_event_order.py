"""Events to the service behind ``relayd bridge -H`` one at a time, in order, through a bounded
queue (relayd.client.event_order), and the relay's mark on event requests
(relayd.transports.http.events.event_headers); in memory, with a fake clock."""

from twisted.internet import defer
from twisted.internet.task import Clock

from relayd.client.event_order import EventQueue, is_event
from relayd.transports.http.events import event_headers
from relayd.wire import hc

EVENT = {"Content-Type": "text/plain", hc.EVENT_HEADER: "multicast"}
ORDINARY = {"Content-Type": "text/plain"}


class Service:
    """A local service that answers when the test says so."""

    def __init__(self):
        self.calls = []  # (name, Deferred) of the requests it has, in the order they came

    def call(self, name):
        def go():
            d = defer.Deferred()
            self.calls.append((name, d))
            return d
        return go

    def names(self):
        return [name for name, _ in self.calls]

    def answer(self, i):
        self.calls[i][1].callback(None)


def test_events_go_one_at_a_time_in_order_and_ordinary_requests_at_once():
    service, queue = Service(), EventQueue(Clock())
    for i in range(3):
        queue.dispatch(EVENT, 10, service.call("e%d" % i))
    queue.dispatch(ORDINARY, 0, service.call("o0"))
    queue.dispatch(ORDINARY, 0, service.call("o1"))
    assert service.names() == ["e0", "o0", "o1"]  # e1, e2 wait for e0's answer
    service.answer(0)
    assert service.names() == ["e0", "o0", "o1", "e1"]
    service.answer(3)
    assert service.names() == ["e0", "o0", "o1", "e1", "e2"]
    assert (queue.dropped, len(queue.waiting), queue.waiting_bytes) == (0, 0, 0)


def test_events_answered_at_once_or_failing_keep_order_without_recursion():
    queue, seen = EventQueue(Clock(), max_events=10000), []
    first = defer.Deferred()
    queue.submit(lambda: first, 0)
    for i in range(5000):  # deeper than Python's recursion limit if each started the next
        queue.submit(lambda i=i: seen.append(i), 0)
    queue.submit(lambda: 1 / 0, 0)  # a failure is logged and the queue goes on
    queue.submit(lambda: seen.append("last"), 0)
    first.callback(None)
    assert seen == list(range(5000)) + ["last"]
    assert queue.running is None


def test_the_queue_is_bounded_in_events_and_bytes_and_counts_drops():
    service, queue = Service(), EventQueue(Clock(), max_events=2, max_bytes=100)
    assert queue.submit(service.call("e0"), 60)  # with the service, not waiting
    assert queue.submit(service.call("e1"), 60)
    assert not queue.submit(service.call("e2"), 50)  # 60 + 50 bytes waiting > 100
    assert queue.submit(service.call("e3"), 40)
    assert not queue.submit(service.call("e4"), 0)  # 2 events waiting already
    assert queue.dropped == 2
    for i in range(3):
        service.answer(i)
    assert service.names() == ["e0", "e1", "e3"]
    assert (len(queue.waiting), queue.waiting_bytes) == (0, 0)


def test_a_service_that_does_not_answer_holds_the_next_event_only_until_the_deadline():
    clock, service = Clock(), Service()
    queue = EventQueue(clock, deadline=5.0)
    queue.submit(service.call("e0"), 0)
    queue.submit(service.call("e1"), 0)
    clock.advance(4.9)
    assert service.names() == ["e0"]
    clock.advance(0.2)
    assert service.names() == ["e0", "e1"]
    service.answer(0)  # e0's late answer does not start anything more nor free e1's turn
    queue.submit(service.call("e2"), 0)
    assert service.names() == ["e0", "e1"]
    service.answer(1)
    assert service.names() == ["e0", "e1", "e2"]
    service.answer(2)
    assert not clock.getDelayedCalls()  # answered events leave no timer behind


def test_the_mark_is_found_in_any_case():
    assert is_event({"x-relayd-event": "oneway"})
    assert is_event(EVENT)
    assert not is_event(ORDINARY)


def test_the_relay_marks_event_requests_with_their_kind_over_a_publishers_own_mark():
    headers = {"Content-Type": "text/plain", "x-relayd-event": "forged", "Via": "1.1 relay"}
    assert event_headers("multicast", headers) == {
        "Content-Type": "text/plain", "Via": "1.1 relay", "X-Relayd-Event": "multicast"}
    assert event_headers("oneway", {}) == {"X-Relayd-Event": "oneway"}
    assert headers["x-relayd-event"] == "forged"  # the publisher's headers are not changed
