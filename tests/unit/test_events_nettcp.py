"""Publishing events over net.tcp, in memory: the real TcpDoorProtocol (nettcp mode) on a
StringTransport hands an event entity's session to relayd.transports.events_nettcp, with the real
Switchboard and EventPolicy, scripted listener channels and rendezvous legs, and a fake clock."""

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from relayd import config
from relayd.namespace import Namespace, SqliteStore
from relayd.switchboard import NoListener, Switchboard
from relayd.transports import events_nettcp, tcp
from relayd.transports.http.events import MULTICAST, ONEWAY, EventPolicy
from relayd.wire import hc, nmf
from tests.unit import test_tcp_door

LEG_BUFFER = 4096
CONFIG = {
    "hybrid_connections": [
        {"path": "news", "kind": "multicast", "requires_client_authorization": False, "max_message": 1000},
        {"path": "jobs", "kind": "oneway", "requires_client_authorization": False, "max_message": 1000},
        {"path": "plain", "requires_client_authorization": False},
    ],
    "rules": [{"name": "root", "key": "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ==", "rights": ["Manage", "Listen", "Send"]}],
    "tcp_ports": [{"listen": "tcp:0", "mode": "nettcp"}],
    "limits": {"leg_buffer": LEG_BUFFER},
}
ACK, END = b"\x0b", b"\x07"


def envelope(payload):
    return b"\x06" + nmf.encode_varint(len(payload)) + payload


class ScriptedLeg(test_tcp_door.ScriptedLeg):
    """A listener's rendezvous leg: records what the relay writes to it, and how it was closed."""

    def close(self, code, reason):
        self.closed_with = (code, reason)


class Channel:
    """A listener's control channel: keeps the rendezvous offered to it."""

    listener_id = "scripted"

    def __init__(self):
        self.offers = []

    def offer(self, rendezvous):
        self.offers.append((rendezvous, getattr(rendezvous.offer, "headers", None)))
        return True

    def offer_raw(self, text, body):
        return True

    def close(self, code, reason):
        pass

    def accept(self):
        leg = ScriptedLeg()
        self.offers[-1][0].accept(leg)
        return leg


class Relay:
    def __init__(self, tmp_path, listeners):
        self.settings = config.parse(dict(CONFIG, relay={"data_dir": str(tmp_path)}), "test")
        self.clock = Clock()
        self.store = SqliteStore(str(tmp_path))
        self.switchboard = Switchboard(self.clock)
        self.policies = {ONEWAY: EventPolicy(ONEWAY), MULTICAST: EventPolicy(MULTICAST)}
        self.channels = {}
        for path, n in listeners.items():
            self.channels[path] = [Channel() for _ in range(n)]
            for channel in self.channels[path]:
                self.switchboard.add_listener(path, channel)
        self.door = tcp.TcpDoor(self.settings.tcp_ports[0], Namespace(self.store, self.settings), self.switchboard,
                                self.settings, self.clock, lambda: "relay.test", event_policies=self.policies)

    def connect(self, path, query=""):
        protocol = self.door.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        preamble = nmf.encode_preamble("net.tcp://relay.test/%s%s" % (path, query))
        feed(protocol, preamble)
        return protocol, transport, preamble


@pytest.fixture
def relay(tmp_path):
    made = []

    def make(**listeners):
        r = Relay(tmp_path / str(len(made)), listeners)
        made.append(r)
        return r

    (tmp_path / "0").mkdir()
    (tmp_path / "1").mkdir()
    yield make
    for r in made:
        r.store.close()


def feed(protocol, data, step=1):
    for i in range(0, len(data), step):
        protocol.dataReceived(data[i:i + step])


def test_multicast_session_acked_replayed_to_each_subscriber_and_ended(relay):
    r = relay(news=2)
    protocol, transport, preamble = r.connect("news", "?x=1&sb-hc-token=SECRET")
    assert protocol.state == tcp.PUBLISHING and transport.value() == b""
    feed(protocol, b"\x0c")
    assert transport.value() == ACK  # PreambleAck only after PreambleEnd
    a, b = r.channels["news"]
    assert len(a.offers) == len(b.offers) == 1
    headers = a.offers[0][1]
    assert headers[hc.EVENT_HEADER] == "multicast" and headers["X-Relayd-Transport"] == "nettcp"
    events = [envelope(b"event %d " % i + b"x" * i) for i in range(5)]
    feed(protocol, b"".join(events[:3]), step=3)  # before any subscriber accepted: queued
    leg_a = a.accept()
    head = nmf.rewrite_via(preamble, "net.tcp://relay.test/news?x=1") + b"\x0c"
    assert leg_a.started and leg_a.sent == [head] + events[:3]
    feed(protocol, b"".join(events[3:]), step=2)
    leg_b = b.accept()
    assert leg_a.sent == [head] + events and leg_b.sent == [head] + events
    feed(protocol, END)
    assert transport.value() == ACK + END and transport.disconnecting
    assert leg_a.sent[-2:] == [END, b""] and leg_b.sent[-2:] == [END, b""]
    counts = r.policies[MULTICAST].counts
    assert (counts.published, counts.deliveries, counts.dropped, counts.cut) == (5, 10, 0, 0)
    r.clock.advance(events_nettcp.LEG_END_TIMEOUT)  # legs still open then are closed cleanly
    assert leg_a.closed_with[0] == 1000 and leg_b.closed_with[0] == 1000


def test_oversize_envelope_gets_the_max_message_fault(relay):
    r = relay(news=1)
    protocol, transport, _ = r.connect("news")
    feed(protocol, b"\x0c" + envelope(b"a" * 1000))
    leg = r.channels["news"][0].accept()
    feed(protocol, b"\x06" + nmf.encode_varint(1001), step=1)  # refused from the size alone
    fault = (b"\x08\x52http://schemas.microsoft.com/ws/2006/05/framing/faults/MaxMessageSizeExceededFault")
    assert transport.value() == ACK + fault and transport.disconnecting and protocol.state == tcp.CLOSED
    assert leg.sent[1:] == [envelope(b"a" * 1000), END, b""]  # subscribers: the session ends cleanly


@pytest.mark.parametrize("data, name", [
    (b"\x0c\x05\x01a\x00", "UnsupportedMode"),  # an unsized envelope (streamed transfer)
    (b"\x0c\x0b", "UnsupportedMode"),
    (b"\x09\x13application/ssl-tls", "UpgradeInvalid"),
])
def test_malformed_records_get_their_fault(relay, data, name):
    r = relay(news=1)
    protocol, transport, _ = r.connect("news")
    feed(protocol, data)
    assert transport.value().endswith(nmf.fault(name)) and transport.disconnecting


def test_streamed_mode_is_refused(relay):
    r = relay(news=1)
    protocol = r.door.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    feed(protocol, nmf.encode_preamble("net.tcp://relay.test/news", mode=nmf.MODE_SINGLETON_UNSIZED))
    assert transport.value() == nmf.fault(nmf.UNSUPPORTED_MODE)
    assert r.channels["news"][0].offers == []


def test_oneway_without_listener_is_endpoint_unavailable_at_the_preamble(relay):
    r = relay()
    protocol, transport, _ = r.connect("jobs")
    assert transport.value() == nmf.fault(nmf.ENDPOINT_UNAVAILABLE) and transport.disconnecting


def test_oneway_goes_to_one_listener(relay):
    r = relay(jobs=2)
    protocol, transport, _ = r.connect("jobs")
    feed(protocol, b"\x0c" + envelope(b"one") + envelope(b"two"))
    offered = [c for c in r.channels["jobs"] if c.offers]
    assert len(offered) == 1 and offered[0].offers[0][1][hc.EVENT_HEADER] == "oneway"
    leg = offered[0].accept()
    assert leg.sent[1:] == [envelope(b"one"), envelope(b"two")]
    leg.partner.close(1001, "gone")  # its leg ends: the next event is refused
    feed(protocol, envelope(b"three"))
    assert transport.value() == ACK + nmf.fault(nmf.ENDPOINT_UNAVAILABLE)
    counts = r.policies[ONEWAY].counts
    assert (counts.published, counts.deliveries, counts.dropped) == (3, 2, 1)


def test_multicast_without_subscribers_accepts_and_drops(relay):
    r = relay()
    protocol, transport, _ = r.connect("news")
    feed(protocol, b"\x0c" + envelope(b"a") + envelope(b"b") + END)
    assert transport.value() == ACK + END
    counts = r.policies[MULTICAST].counts
    assert (counts.published, counts.deliveries, counts.dropped) == (2, 0, 2)


def test_a_subscriber_that_falls_behind_is_cut_and_others_go_on(relay):
    r = relay(news=2)
    protocol, transport, _ = r.connect("news")
    feed(protocol, b"\x0c")
    slow, fast = (c.accept() for c in r.channels["news"])
    feed(protocol, envelope(b"1"))
    slow.transport.producer.pauseProducing()  # its connection holds over limits.leg_buffer
    feed(protocol, envelope(b"2") + envelope(b"3"))
    assert slow.closed_with == (1008, events_nettcp.LEG_BEHIND) and envelope(b"2") not in slow.sent
    assert fast.sent[1:] == [envelope(b"1"), envelope(b"2"), envelope(b"3")]
    counts = r.policies[MULTICAST].counts
    assert (counts.published, counts.deliveries, counts.cut) == (3, 4, 1)


def test_a_subscriber_that_does_not_accept_is_cut_past_leg_buffer(relay):
    r = relay(news=1)
    protocol, transport, _ = r.connect("news")
    feed(protocol, b"\x0c")
    rv = r.channels["news"][0].offers[0][0]
    sent = 0
    while not rv.done:
        feed(protocol, envelope(b"x" * 900), step=4096)
        sent += 1
    assert sent <= LEG_BUFFER // 900 + 1 and r.switchboard.pending_count() == 0
    assert r.policies[MULTICAST].counts.cut == 1


def test_what_the_service_sends_back_is_dropped_and_bounded(relay):
    r = relay(news=1)
    protocol, transport, _ = r.connect("news")
    feed(protocol, b"\x0c")
    leg = r.channels["news"][0].accept()
    sub = leg.partner
    sub.begin_message(True)
    sub.frame_data(ACK)
    sub.end_message()
    assert leg.closed_with is None and transport.value() == ACK
    sub.frame_data(b"x" * events_nettcp.READBACK_MAX)
    assert leg.closed_with == (1008, events_nettcp.LEG_READBACK)


def test_an_idle_publisher_is_closed(relay):
    r = relay(news=1)
    protocol, transport, _ = r.connect("news")
    feed(protocol, b"\x0c" + envelope(b"a")[:2])
    leg = r.channels["news"][0].accept()
    r.clock.advance(events_nettcp.PUBLISHER_IDLE_TIMEOUT - 1)
    feed(protocol, envelope(b"a")[2:])  # a whole record re-arms the deadline
    r.clock.advance(events_nettcp.PUBLISHER_IDLE_TIMEOUT - 1)
    assert not transport.disconnecting
    r.clock.advance(1)
    assert transport.value() == ACK + nmf.fault(nmf.SERVER_TOO_BUSY) and transport.disconnecting
    assert leg.sent[-2:] == [END, b""]


def test_preamble_end_within_the_preamble_deadline(relay):
    r = relay(news=1)
    protocol, transport, _ = r.connect("news")
    r.clock.advance(r.settings.limits.open_handshake_timeout - 0.1)
    assert transport.value() == b""
    r.clock.advance(0.2)
    assert transport.value() == nmf.fault(nmf.SERVER_TOO_BUSY) and transport.disconnecting
    assert r.channels["news"][0].offers == []


def test_publisher_gone_without_end_still_ends_each_subscriber_cleanly(relay):
    r = relay(news=1)
    protocol, transport, _ = r.connect("news")
    feed(protocol, b"\x0c" + envelope(b"a") + envelope(b"b")[:2])
    protocol.connectionLost(None)
    leg = r.channels["news"][0].accept()  # accepted after the publisher left: still the whole session
    assert leg.sent[1:] == [envelope(b"a"), END, b""]


def test_plain_entities_still_get_a_stream(relay):
    r = relay(plain=1)
    protocol, transport, _ = r.connect("plain")
    assert protocol.state == tcp.ROUTING and hc.EVENT_HEADER not in r.channels["plain"][0].offers[0][1]


def test_switchboard_offers_to_the_listener_asked_for(relay):
    r = relay(news=3)
    channels = r.channels["news"]
    for _ in range(5):
        rv = r.switchboard.open_rendezvous("news", listener=channels[1])
        assert rv.listener is channels[1]
    r.switchboard.remove_listener("news", channels[2])
    with pytest.raises(NoListener):
        r.switchboard.open_rendezvous("news", listener=channels[2])
