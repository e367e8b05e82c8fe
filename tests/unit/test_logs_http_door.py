"""The HTTP relaying door's refusals are rate-limited (issue 12, Deliver 7): a storm of requests
it answers with an error (here 401: no token for an entity that needs one) from one peer logs
the first ``limits.refusal_log_burst`` in full and one summary line when the interval ends;
every client still gets its answer.  In memory, on a fake clock."""

from twisted.logger import formatEvent, globalLogPublisher

from tests.unit.test_http_door_clock import connect, door, status_of  # noqa: F401 (door: a fixture)


def test_a_storm_of_refused_requests_is_logged_as_a_burst_then_one_line(door):  # noqa: F811
    burst, interval = door.limits.refusal_log_burst, door.limits.refusal_log_interval
    lines = []

    def observer(event):
        if event.get("log_namespace", "").startswith("relayd.transports.http"):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        for _ in range(burst + 40):
            protocol, transport = connect(door)
            protocol.dataReceived(b"POST /secure HTTP/1.1\r\nHost: relay.test\r\nContent-Length: 0\r\n\r\n")
            assert status_of(transport) == 401
        door.clock.advance(interval)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert len(lines) == burst + 1, lines
    assert all(line.startswith("HTTP relay answered 401: ") for line in lines[:burst])
    assert lines[-1].startswith("HTTP 401 from 192.168.1.1: 40 more refusals in the last %s s" % interval)
    assert not door.clock.getDelayedCalls()
