"""The TCP door's states (preamble -> routing -> paired -> half-closed -> closed) and the shared
half-close helper (relayd.pipe.HalfClose), in memory: the real TcpDoorProtocol on a
StringTransport, a scripted listener leg, a fake clock."""

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from relayd import config, pipe
from relayd.interfaces import IRendezvousLeg
from relayd.namespace import Namespace, SqliteStore
from relayd.switchboard import Switchboard
from relayd.transports import tcp
from relayd.wire import nmf

CONFIG = {
    "hybrid_connections": [{"path": "open", "requires_client_authorization": False}],
    "rules": [{"name": "root", "key": "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ==", "rights": ["Manage", "Listen", "Send"]}],
    "tcp_ports": [{"listen": "tcp:0", "mode": "port", "entity": "open"},
                  {"listen": "tcp:0", "mode": "nettcp"}],
    "limits": {"open_handshake_timeout": 3},
}


class HalfClosingTransport(StringTransport):
    """A StringTransport that records a shut-down write half."""

    write_shut = False
    aborted = False

    def loseWriteConnection(self):
        self.write_shut = True

    def abortConnection(self):
        self.aborted = True
        super().abortConnection()


@implementer(IRendezvousLeg)
class ScriptedLeg:
    """A listener's rendezvous leg: records what the door sends it."""

    partner = None
    pause_reader = None
    selected_protocol = None

    def __init__(self):
        self.transport = StringTransport()
        self.sent = []
        self.closed_with = None
        self.started = False

    def start_data_leg(self):
        self.started = True

    def notify_on_lost(self, callback):
        pass

    def begin_message(self, is_binary):
        pass

    def frame_begin(self, length):
        pass

    def frame_data(self, data):
        pass

    def end_message(self):
        pass

    def send_message(self, data):
        self.sent.append(data)

    def close(self, code, reason):
        self.closed_with = code


class Channel:
    entity_path = "open"
    listener_id = "scripted"

    def offer(self, rendezvous):
        self.rendezvous = rendezvous
        return True

    def offer_raw(self, text, body):
        return True

    def close(self, code, reason):
        pass


@pytest.fixture
def doors(tmp_path):
    settings = config.parse(dict(CONFIG, relay={"data_dir": str(tmp_path)}), "test")
    clock = Clock()
    store = SqliteStore(str(tmp_path))
    namespace = Namespace(store, settings)
    switchboard = Switchboard(clock)
    channel = Channel()
    switchboard.add_listener("open", channel)
    made = [tcp.TcpDoor(spec, namespace, switchboard, settings, clock, lambda: "relay.test")
            for spec in settings.tcp_ports]
    yield made, channel, clock
    store.close()


def connect(door):
    protocol = door.buildProtocol(None)
    transport = HalfClosingTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def pair(doors):
    (port_door, _), channel, _ = doors
    protocol, transport = connect(port_door)
    assert protocol.state == tcp.ROUTING and transport.producerState == "paused"
    leg = ScriptedLeg()
    channel.rendezvous.accept(leg)
    assert protocol.state == tcp.PAIRED and leg.started and protocol.partner is leg
    return protocol, transport, leg


def test_port_mode_pairs_and_half_closes_both_ways(doors):
    protocol, transport, leg = pair(doors)
    protocol.dataReceived(b"hello")
    assert leg.sent == [b"hello"]
    protocol.readConnectionLost()  # the client's EOF: the marker goes to the listener
    assert leg.sent[-1] == b"" and protocol.state == tcp.HALF_CLOSED and not transport.disconnecting
    protocol.begin_message(True)
    protocol.frame_data(b"bye")
    protocol.end_message()
    protocol.begin_message(True)
    protocol.end_message()  # the listener's marker: both directions ended
    assert transport.value() == b"bye" and transport.disconnecting
    protocol.connectionLost(None)
    assert protocol.state == tcp.CLOSED and leg.closed_with == 1000


def test_the_listeners_marker_shuts_only_the_write_half(doors):
    protocol, transport, leg = pair(doors)
    protocol.begin_message(True)
    protocol.end_message()
    assert transport.write_shut and not transport.disconnecting and protocol.state == tcp.HALF_CLOSED
    protocol.dataReceived(b"more")  # the other direction still flows
    assert leg.sent == [b"more"]


@pytest.mark.parametrize("code, reset", [(1000, False), (None, False), (1001, True), (1006, True), (1011, True)])
def test_a_leg_ending_mid_stream_resets_the_client(doors, code, reset):
    protocol, transport, leg = pair(doors)
    protocol.close(code, "")
    assert protocol.state == tcp.CLOSED and transport.aborted is reset and transport.disconnecting


def test_a_leg_ending_after_its_marker_is_a_clean_end(doors):
    protocol, transport, leg = pair(doors)
    protocol.begin_message(True)
    protocol.end_message()
    protocol.close(1006, "")
    assert not transport.aborted and transport.disconnecting


def test_nettcp_preamble_then_routing_then_closed_on_an_unknown_entity(doors):
    (_, nettcp_door), _, clock = doors
    protocol, transport = connect(nettcp_door)
    assert protocol.state == tcp.PREAMBLE
    preamble = nmf.encode_preamble("net.tcp://relay.test/nothing-here")
    for i in range(len(preamble)):
        protocol.dataReceived(preamble[i:i + 1])
    assert protocol.state == tcp.CLOSED and transport.value() == nmf.fault("EndpointNotFound")
    clock.advance(10)  # the preamble deadline was cancelled with the preamble read
    assert transport.value() == nmf.fault("EndpointNotFound")


def test_nettcp_preamble_deadline(doors):
    (_, nettcp_door), _, clock = doors
    protocol, transport = connect(nettcp_door)
    protocol.dataReceived(nmf.encode_preamble("net.tcp://relay.test/open")[:5])
    clock.advance(2.9)
    assert transport.value() == b""
    clock.advance(0.2)
    assert protocol.state == tcp.CLOSED and transport.value() == nmf.fault(nmf.SERVER_TOO_BUSY)


def test_no_going_back():
    protocol = tcp.TcpDoorProtocol(door=None)
    protocol._to(tcp.PREAMBLE)
    with pytest.raises(RuntimeError):
        protocol._to(tcp.PAIRED)


def test_half_close_helper_closes_when_both_directions_ended():
    transport = HalfClosingTransport()
    half = pipe.HalfClose(transport)
    assert not half.half_closed
    assert half.read_ended() is False and half.half_closed and not transport.disconnecting
    half.marker_received()
    assert transport.disconnecting and not transport.write_shut

    transport = HalfClosingTransport()
    half = pipe.HalfClose(transport)
    half.marker_received()
    assert transport.write_shut and not transport.disconnecting
    assert half.read_ended() is True and transport.disconnecting
