"""The connectivity stream's own deadlines and bounds (relayd.web.connectivity), with a fake
clock: the management site's real channel and request on a StringTransport; heartbeats, the
connection deadline lifted, a watcher that cannot be written to dropped (its backlog bound, or
STALL_BEATS heartbeats), and the token's expiry ending the stream."""

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from relayd import config
from relayd import connectivity as cx
from relayd.namespace import Namespace, SqliteStore
from relayd.switchboard import Switchboard
from relayd.web import connectivity as web
from relayd.web.site import make_site
from relayd.wire import sas

KEY = "connectivity-stream-test-key"
START = 1_700_000_000.0


@pytest.fixture
def relay(tmp_path):
    settings = config.parse({"relay": {"data_dir": str(tmp_path)},
                             "rules": [{"name": "root", "key": KEY, "rights": ["Manage"]}],
                             "hybrid_connections": [{"path": "echo"}]}, "test")
    clock = Clock()
    clock.advance(START)
    store = SqliteStore(str(tmp_path))
    switchboard = Switchboard(clock)
    site = make_site(Namespace(store, settings), switchboard, settings, clock)
    yield site, switchboard, clock
    store.close()


def open_stream(site, clock, ttl=3600):
    token = sas.make_token("http://relay/", "root", KEY, int(clock.seconds() + ttl))
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /$relayd/connectivity/stream HTTP/1.1\r\nHost: relay\r\nAuthorization: %s\r\n\r\n"
                         % token.encode())
    assert transport.value().startswith(b"HTTP/1.1 200 "), transport.value()
    assert b"text/event-stream" in transport.value()
    return channel, transport


def listeners_come_and_go(switchboard, n):
    class Channel:
        listener_id = "x"

        def offer(self, rv):
            return True

        def close(self, code, reason):
            pass

    for _ in range(n):
        ch = Channel()
        switchboard.add_listener("echo", ch)
        switchboard.remove_listener("echo", ch)


def test_heartbeats_and_no_connection_deadline(relay):
    site, switchboard, clock = relay
    channel, transport = open_stream(site, clock)
    for _ in range(int(site.connection_deadline // web.HEARTBEAT_INTERVAL) + 2):
        clock.advance(web.HEARTBEAT_INTERVAL)
    assert transport.value().count(b": heartbeat") >= site.connection_deadline // web.HEARTBEAT_INTERVAL
    assert not transport.disconnecting
    listeners_come_and_go(switchboard, 1)
    assert b"event: NewListenerRegistered" in transport.value()
    assert site.management.connectivity.watchers


def test_a_watcher_that_cannot_take_more_is_dropped_past_its_backlog(relay):
    site, switchboard, clock = relay
    channel, transport = open_stream(site, clock)
    channel.pauseProducing()  # what the transport does when its write buffer is full
    written = len(transport.value())
    event_bytes = 4 * 200  # four events a listener coming and going, about 200 bytes each
    listeners_come_and_go(switchboard, web.WATCHER_BACKLOG // event_bytes - 10)
    assert len(transport.value()) == written and not transport.disconnecting  # queued, within the bound
    listeners_come_and_go(switchboard, 20)
    assert transport.disconnecting  # aborted at the bound
    api = site.management.connectivity
    assert api.dropped == 1 and not api.watchers and switchboard.connectivity.watchers == 0


def test_a_slow_watcher_catches_up_in_order(relay):
    site, switchboard, clock = relay
    channel, transport = open_stream(site, clock)
    channel.pauseProducing()
    listeners_come_and_go(switchboard, 3)
    transport.clear()
    channel.resumeProducing()
    text = transport.value().decode()
    names = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
    assert names == [cx.NEW_LISTENER, cx.ONLINE, cx.LISTENER_GONE, cx.OFFLINE] * 3


def test_a_watcher_unable_to_write_for_stall_beats_heartbeats_is_dropped(relay):
    site, switchboard, clock = relay
    channel, transport = open_stream(site, clock)
    channel.pauseProducing()
    clock.advance(web.HEARTBEAT_INTERVAL * (web.STALL_BEATS - 1))
    assert not transport.disconnecting
    clock.advance(web.HEARTBEAT_INTERVAL)
    assert transport.disconnecting and site.management.connectivity.dropped == 1


def test_the_stream_ends_when_its_token_expires(relay):
    site, switchboard, clock = relay
    channel, transport = open_stream(site, clock, ttl=40)
    clock.advance(39)
    assert not transport.value().endswith(b"0\r\n\r\n")
    clock.advance(2)
    assert b"token expired" in transport.value() and transport.value().endswith(b"0\r\n\r\n")
    assert transport.disconnecting and not site.management.connectivity.watchers
    listeners_come_and_go(switchboard, 1)  # nothing more is written
    assert transport.value().endswith(b"0\r\n\r\n")
