"""The TCP doors' refusals are rate-limited (issue 12, Deliver 7): a storm of net.tcp faults or
refused port-mapped connections from one peer logs the first ``limits.refusal_log_burst`` in
full and one summary line when the interval ends; in memory, on a fake clock."""

from twisted.logger import formatEvent, globalLogPublisher

from relayd.wire import nmf
from tests.unit.test_tcp_door import connect, doors  # noqa: F401 (a fixture)


def _door_lines(fn):
    lines = []

    def observer(event):
        if event.get("log_namespace", "").startswith("relayd.transports.tcp"):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        fn()
    finally:
        globalLogPublisher.removeObserver(observer)
    return lines


def test_a_storm_of_nettcp_faults_is_logged_as_a_burst_then_one_line(doors):  # noqa: F811
    (port_door, nettcp_door), _, clock = doors
    burst, interval = nettcp_door.limits.refusal_log_burst, nettcp_door.limits.refusal_log_interval

    def storm():
        for _ in range(burst + 25):
            protocol, transport = connect(nettcp_door)
            protocol.dataReceived(nmf.encode_preamble("net.tcp://relay.test/nothing-here"))
            assert transport.value() == nmf.fault("EndpointNotFound")  # every client gets its fault
        clock.advance(interval)

    lines = _door_lines(storm)
    assert len(lines) == burst + 1, lines
    assert all("fault EndpointNotFound" in line for line in lines[:burst])
    assert lines[-1].startswith("net.tcp EndpointNotFound from 192.168.1.1: 25 more refusals in the last %s s"
                                % interval)
    assert not clock.getDelayedCalls()
    port_door.doStop()
    nettcp_door.doStop()
