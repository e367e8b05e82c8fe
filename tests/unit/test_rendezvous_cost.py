"""Cheap rendezvous on the HC WebSocket door (issue 10 item 4, issue 9 item 3), in memory on the
relay's fake clock (tests/contract/harness.MemoryRelay):

* Autobahn's settings live on one protocol class per factory: no protocol instance carries its
  own copy of the ~29 settings, and Autobahn's per-connection debug line pretty-prints none.
* What the opening handshake left (raw request, parsed headers and query, the 101 response) is
  released once the connection is open: a control channel, a sender and an accept leg keep
  nothing of it.
* Autobahn's timers (opening/closing handshake timeouts, auto-ping) run on the relay's injected
  clock, so advancing the fake clock fires them without real time passing.

These pin the Autobahn behaviour relayd builds on: ``_connectionMade`` copies (and logs) only
the names in ``CONFIG_ATTRS``; its timers go through ``factory._batched_timer``; after
``onOpen`` a server protocol no longer reads its handshake attributes.
"""

import gc
import sys
import types
from urllib.parse import quote

import autobahn.websocket.protocol as ab_protocol
import pytest
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, WebSocketServerProtocol
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock

from relayd.switchboard import Switchboard
from relayd.transports.autobahn_server import HANDSHAKE_LEFTOVERS, HANDSHAKE_REQUEST
from relayd.transports.websocket import HybridProtocol
from tests.contract import harness
from tests.contract.doors import RawClient
from tests.support.memory import Network

MARKER = "x-rendezvous-marker-4f1c2a"
CONTROL_SETTINGS = {"maxMessagePayloadSize", "maxFramePayloadSize", "autoPingInterval", "autoPingTimeout"}


@pytest.fixture
def relay(tmp_path):
    r = harness.MemoryRelay(tmp_path)
    yield r
    r.stop()


class Recording(harness.ScriptedListener):
    """A listener's control channel that records the relay's pings (and answers them)."""

    def __init__(self):
        super().__init__()
        self.pings = []

    def onPing(self, payload):
        self.pings.append(payload)
        super().onPing(payload)


def listen_url(relay):
    return "ws://%s/$hc/%s?sb-hc-action=listen&sb-hc-token=%s&x=%s" % (
        harness.HOST, harness.ENTITY, quote(relay.token(), safe=""), MARKER)


def server_protocols(relay):
    """The relay's live HC protocols by role (data legs that were spliced are no longer
    Autobahn protocols and are not listed)."""
    return {type(p.role).__name__: p for p in gc.get_objects()
            if isinstance(p, HybridProtocol) and p.role is not None and p.factory is relay.service.hybrid}


def connect_sender(relay):
    url = "ws://%s/$hc/%s?sb-hc-action=connect&%s=1" % (harness.HOST, harness.ENTITY, MARKER)
    factory = WebSocketClientFactory(url, reactor=relay.clock, headers={"X-Marker": MARKER})
    factory.setProtocolOptions(openHandshakeTimeout=0, autoFragmentSize=0)
    factory.protocol = harness.WebSocketClient
    sender = factory.buildProtocol(None)
    relay.connect(80, sender)
    return sender


def rendezvous(relay):
    """A control channel and a sender (with a marker header) waiting for it.  Returns the
    client ends and the relay's protocols by role (ControlChannel, Sender)."""
    control = harness.websocket(relay, listen_url(relay), Recording)
    assert control.opened
    sender = connect_sender(relay)
    assert control.offers and not sender.opened
    protocols = server_protocols(relay)
    assert set(protocols) == {"ControlChannel", "Sender"}, protocols
    return control, sender, protocols


# -- settings on the class, not per instance; no pretty-printed debug line -------------------------

def test_settings_are_shared_by_the_class_not_copied_into_each_instance(relay):
    _, _, protocols = rendezvous(relay)
    factory = relay.service.hybrid
    names = set(WebSocketServerProtocol.CONFIG_ATTRS)
    for role, protocol in protocols.items():
        own = names & set(vars(protocol))
        allowed = CONTROL_SETTINGS if role == "ControlChannel" else set()
        assert own <= allowed, "%s carries its own copy of %s" % (role, sorted(own - allowed))
        for name in names - allowed:
            assert getattr(protocol, name) == getattr(factory, name), name
        print("%s: %d instance attributes, dict %d bytes" % (
            role, len(vars(protocol)), sys.getsizeof(vars(protocol))))
    # the control channel's own limits (set per role) still apply to it alone
    control = protocols["ControlChannel"]
    assert control.maxMessagePayloadSize == factory.limits.control_message_max
    assert protocols["Sender"].maxMessagePayloadSize == 0


def test_settings_changed_on_the_factory_reach_new_connections(relay):
    factory = relay.service.hybrid
    factory.setProtocolOptions(closeHandshakeTimeout=7)
    _, _, protocols = rendezvous(relay)
    assert all(p.closeHandshakeTimeout == 7 for p in protocols.values())


def test_no_connection_pretty_prints_its_settings(relay, monkeypatch):
    formatted = []
    real = ab_protocol.pformat

    def spy(obj, *args, **kwargs):
        if isinstance(sys._getframe(1).f_locals.get("self"), HybridProtocol):  # not the clients
            formatted.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(ab_protocol, "pformat", spy)
    rendezvous(relay)
    # Autobahn's _connectionMade pretty-prints one (name, value, source) triple per setting it
    # copied; with the settings on the class there is nothing to copy and nothing to format.
    assert formatted and all(obj == [] for obj in formatted), formatted[:1]


# -- handshake leftovers ------------------------------------------------------------------------------

def _holds_marker(obj, depth, seen, skip):
    if id(obj) in seen or depth < 0:
        return None
    seen.add(id(obj))
    if isinstance(obj, (str, bytes, bytearray)):
        text = obj if isinstance(obj, str) else bytes(obj).decode("latin-1")
        return repr(obj[:80]) if MARKER in text.lower() else None
    if isinstance(obj, (int, float, type(None), type, types.ModuleType, types.FunctionType)) \
            or isinstance(obj, skip):
        return None
    if isinstance(obj, dict):
        children = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif hasattr(obj, "__dict__") or hasattr(obj, "__slots__"):
        children = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
        for slot in getattr(type(obj), "__slots__", ()):
            children.append(getattr(obj, slot, None))
    else:
        return None
    for child in children:
        found = _holds_marker(child, depth - 1, seen, skip)
        if found:
            return found
    return None


def holds_marker(start, relay):
    """Where the connection's own state (not the shared factory, switchboard, clock, network
    or the client ends in this process) still holds the marker the handshake carried."""
    skip = (Factory, Network, WebSocketClientProtocol, Switchboard, MemoryReactorClock)
    return _holds_marker(start, 8, set(), skip)


def test_handshake_leftovers_are_released(relay):
    control, sender, protocols = rendezvous(relay)
    # a sender waiting for a listener keeps no more than it needs to complete its handshake
    waiting = protocols["Sender"]
    kept = [name for name in HANDSHAKE_REQUEST if name in vars(waiting)]
    assert kept == [], "a waiting sender holds %s" % kept
    assert holds_marker(vars(waiting).copy(), relay) is None
    # an open control channel keeps nothing of its handshake
    channel = protocols["ControlChannel"]
    kept = [name for name in HANDSHAKE_LEFTOVERS if name in vars(channel)]
    assert kept == [], "a control channel holds %s after open" % kept
    found = holds_marker(channel, relay)
    assert found is None, "the control channel still holds its handshake: %s" % found
    # the relayed connection, once open, holds nothing of either handshake
    leg = harness.accept(relay, control.offers[-1])
    relay.pump()
    assert sender.opened and leg.opened
    for transport in relay.network.transports:
        if not isinstance(transport.protocol, WebSocketClientProtocol):
            found = holds_marker(transport.protocol, relay)
            assert found is None, "%r still holds a handshake: %s" % (transport.protocol, found)
    # ... and all still works: data relayed both ways, a renewToken checked on the same hosts
    sender.sendMessage(b"ping", isBinary=True)
    leg.sendMessage(b"pong", isBinary=True)
    relay.pump()
    assert leg.received() == b"ping" and sender.received() == b"pong"
    harness.renew(relay, control, lifetime=7200)
    assert not control.closed
    control.sendMessage(b'{"renewToken": {"token": "SharedAccessSignature sr=x&sig=y&se=1&skn=root"}}',
                        isBinary=False)
    relay.pump()
    assert control.closed and control.close_code == 1008


def test_handshake_attributes_exist_until_open(relay, monkeypatch):
    """The names relayd drops are the ones Autobahn sets: each is there when onConnect runs."""
    seen = {}
    real = HybridProtocol.onConnect

    def on_connect(self, request):
        seen.update({name: name in vars(self) for name in HANDSHAKE_LEFTOVERS if name != "http_response_data"})
        return real(self, request)

    monkeypatch.setattr(HybridProtocol, "onConnect", on_connect)
    control = harness.websocket(relay, listen_url(relay))
    assert control.opened and seen and all(seen.values()), seen


# -- Autobahn's timers on the relay's clock -------------------------------------------------------------

def test_open_handshake_timeout_fires_on_the_relay_clock(relay):
    factory = relay.service.hybrid
    client = RawClient(b"GET /$hc/door?sb-hc-action=listen HTTP/1.1\r\nHost: relay.test\r\n")
    relay.network.connect(factory.buildProtocol(None), client)
    relay.pump()
    timeout = factory.openHandshakeTimeout
    assert timeout > 0
    relay.advance(timeout - 1.5, step=0.5)
    assert client.lost is None
    relay.advance(2, step=0.5)
    assert client.lost is not None, "the opening handshake outlived its %g s timeout on the relay's clock" % timeout


def test_auto_ping_and_its_timeout_run_on_the_relay_clock(relay):
    limits = relay.service.settings.limits
    control = harness.websocket(relay, listen_url(relay), Recording)
    assert control.opened
    relay.advance(limits.control_ping_interval + 1.5)
    assert len(control.pings) == 1 and not control.closed
    # a listener that stops reading (no pong) is dropped after the ping timeout
    relay.network.stall(control.transport)
    relay.advance(limits.control_ping_interval + limits.control_ping_timeout + 2.5)
    relay.network.stall(control.transport, False)
    relay.pump()
    assert control.closed


def test_close_handshake_timeout_fires_on_the_relay_clock(relay):
    control = harness.websocket(relay, listen_url(relay), Recording)
    assert control.opened
    relay.network.stall(control.transport)  # never reads the relay's close frame, never answers
    relay.delete_entity()  # the relay closes the control channel with 1001
    factory = relay.service.hybrid
    relay.advance(factory.closeHandshakeTimeout + 1.5, step=0.5)
    relay.network.stall(control.transport, False)
    relay.pump()
    assert control.closed and control.close_code != 1001, \
        "the relay waited for the close handshake beyond its timeout (code %r)" % control.close_code


# -- no per-connection send queue -----------------------------------------------------------------

def test_no_send_queue_until_a_sync_write(relay):
    """Autobahn's queue for "sync"/chopped writes exists only once such a write is made; plain
    writes (the 101, control messages, frames) go straight to the transport as before."""
    control, sender, protocols = rendezvous(relay)
    for role, protocol in protocols.items():
        assert "send_queue" not in vars(protocol), role
    channel = protocols["ControlChannel"]
    channel.sendMessage(b'{"x":1}', isBinary=False)
    relay.pump()
    assert control.offers[-1] == {"x": 1}
    channel.sendData(b"\x82\x02hi", sync=True)  # a sync write: queued, sent, queue now its own
    relay.pump()
    assert "send_queue" in vars(channel) and not channel.send_queue
    assert control.messages[-1] == (b"hi", True)
