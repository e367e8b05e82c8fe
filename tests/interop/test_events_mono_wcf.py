"""Publishing events over net.tcp with real WCF peers (Debian's Mono, NetTcpBinding,
SecurityMode.None): a one-way contract client (tests/interop/mono/EventPublisher.cs) publishes
50 messages on one channel to a multicast entity through relayd's net.tcp door; two WCF
services (EventSubscriber.cs), each behind its own ``relayd bridge -R
ENTITY:net.tcp://127.0.0.1:PORT/events``, each receive every message, in order."""

import os
import subprocess
import time

import pytest

from tests.interop.test_mono_wcf import MonoService, mono_build  # noqa: F401 -- mono_build compiles the peers
from tests.support.net import free_port
from tests.support.relay import Bridge, RelayProcess, relay_status, write_config

pytestmark = pytest.mark.interop

MESSAGES = 50
CONFIG = """
[[hybrid_connections]]
path = "wcf/events"
kind = "multicast"
requires_client_authorization = false

[[hybrid_connections]]
path = "wcf/jobs"
kind = "oneway"
requires_client_authorization = false

[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "nettcp"
"""


@pytest.fixture
def relay(tmp_path):
    proc = RelayProcess(tmp_path, write_config(tmp_path, extra=CONFIG))
    proc.nettcp_port = proc.door_port("nettcp door (routed by Via)")
    yield proc
    proc.stop()


class Subscriber(MonoService):
    """EventSubscriber.exe listening on a loopback port, its endpoint address the public URI."""

    def __init__(self, build, tmp_path, public, n):
        self.file = str(tmp_path / ("events-%d.txt" % n))
        self.listen = "net.tcp://127.0.0.1:%d/events" % free_port()
        super().__init__(build, None, self.listen, public, exe="EventSubscriber.exe", env={"EVENT_FILE": self.file})

    def lines(self):
        try:
            with open(self.file) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []


def publish(build, public, count, prefix):
    return subprocess.run(["mono", os.path.join(build, "EventPublisher.exe"), public, str(count), prefix],
                          capture_output=True, text=True, timeout=120)


def test_wcf_publisher_to_two_wcf_subscribers_behind_bridges(tmp_path, mono_build, relay):  # noqa: F811
    public = "net.tcp://127.0.0.1:%d/wcf/events" % relay.nettcp_port
    subscribers = [Subscriber(mono_build, tmp_path, public, n) for n in range(2)]
    bridges = []
    try:
        for s in subscribers:
            bridges.append(Bridge(tmp_path, relay, "-R", "wcf/events:" + s.listen))
        for b in bridges:
            b.wait("online")
        out = publish(mono_build, public, MESSAGES, "event-")
        assert out.returncode == 0 and out.stdout.strip() == "sent %d" % MESSAGES, (
            out.stdout, out.stderr[-2000:], relay.log_text()[-2000:])
        expected = ["%d event-%d" % (i, i) for i in range(MESSAGES)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(len(s.lines()) < MESSAGES for s in subscribers):
            time.sleep(0.1)
        for s, b in zip(subscribers, bridges):
            assert s.lines() == expected, (s.lines()[:5], s.proc.stderr.read() if s.proc.poll() is not None else "",
                                           b.text()[-2000:], relay.log_text()[-3000:])
        counts = relay_status(relay)["events"]["multicast"]
        assert counts["published"] == MESSAGES and counts["deliveries"] == 2 * MESSAGES
    finally:
        for b in bridges:
            b.stop()
        for s in subscribers:
            s.stop()


def test_wcf_publisher_to_a_oneway_entity_without_listener_gets_endpoint_unavailable(mono_build, relay):  # noqa: F811
    out = publish(mono_build, "net.tcp://127.0.0.1:%d/wcf/jobs" % relay.nettcp_port, 1, "x")
    assert out.returncode == 1
    assert "FRAMING_FAULT http://schemas.microsoft.com/ws/2006/05/framing/faults/EndpointUnavailable" in out.stderr, (
        out.stderr)
