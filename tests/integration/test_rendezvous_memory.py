"""Relay memory per idle control channel and per sender waiting for a listener (issue 10 item 4),
measured with psutil on a ``twistd -n relayd`` process: Autobahn's settings are not copied into
each protocol instance and the opening handshake's leftovers (raw request, parsed headers and
query, the 101 response, the ConnectionRequest) are released, so each connection costs only its
own state.  Clients are raw sockets sending a realistic handshake (SAS token in a header)."""

import time

import psutil
import pytest

from tests.support.rawws import RawWS, hc_url, listen, token
from tests.support.relay import RelayProcess, write_config

pytestmark = pytest.mark.slow

CONNECTIONS = 400
# Measured on the 2-core VM (KB of relay RSS per connection, 400 connections): idle control
# channel 13.3 -> ~8, waiting sender 10.9 -> ~7 (the relay's own figures before/after item 4;
# see the commit).  The bounds sit between the two, with room for allocator noise.
MAX_PER_CONTROL_CHANNEL = 10.5 * 1024
MAX_PER_WAITING_SENDER = 9 * 1024
ENTITY = """
[[hybrid_connections]]
path = "many"
requires_client_authorization = false
max_listeners = 1000
"""


@pytest.fixture
def relay(tmp_path):
    proc = RelayProcess(tmp_path, write_config(tmp_path, extra=ENTITY))
    yield proc
    proc.stop()


def rss(relay):
    return psutil.Process(relay.proc.pid).memory_info().rss


def settled_rss(relay, seconds=0.5):
    """The relay's RSS once it stopped moving (sampled until two readings agree, or ``seconds``)."""
    deadline = time.monotonic() + seconds
    last = rss(relay)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = rss(relay)
        if now == last:
            break
        last = now
    return last


def close_all(sockets):
    for s in sockets:
        s.close()


def test_idle_control_channels_are_small(relay):
    warm = [listen(relay, "many") for _ in range(20)]  # first allocations (arenas, caches)
    base = settled_rss(relay)
    channels = []
    try:
        for _ in range(CONNECTIONS):
            channels.append(listen(relay, "many"))
        per = (settled_rss(relay) - base) / CONNECTIONS
    finally:
        close_all(channels + warm)
    print("relay RSS per idle control channel: %.1f KB" % (per / 1024))
    assert per < MAX_PER_CONTROL_CHANNEL, "%.1f KB per idle control channel" % (per / 1024)


def test_senders_waiting_for_a_listener_are_small(relay):
    ctl = listen(relay, "many")
    senders = []
    try:
        for _ in range(20):  # warm up, then let go
            senders.append(RawWS(relay.port).start(hc_url(relay, "many", "connect"),
                                                   {"ServiceBusAuthorization": token(relay, "many")}))
            ctl.recv_json()
        close_all(senders)
        senders = []
        base = settled_rss(relay)
        for _ in range(CONNECTIONS):
            senders.append(RawWS(relay.port).start(hc_url(relay, "many", "connect"),
                                                   {"ServiceBusAuthorization": token(relay, "many")}))
        for _ in range(CONNECTIONS):  # every sender offered: all wait in the relay
            assert "accept" in ctl.recv_json()
        per = (settled_rss(relay) - base) / CONNECTIONS
    finally:
        close_all(senders + [ctl])
    print("relay RSS per waiting sender: %.1f KB" % (per / 1024))
    assert per < MAX_PER_WAITING_SENDER, "%.1f KB per waiting sender" % (per / 1024)
