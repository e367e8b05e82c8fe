"""The relay in memory for the door-contract suite: the whole relay (every door, one
switchboard) on a ``MemoryReactorClock``, its listening factories connected to clients over
:mod:`tests.support.memory`, and a scripted Hybrid Connections listener that speaks real
WebSocket bytes (Autobahn's client protocol) on its control channel and rendezvous legs."""

import json
import re
from urllib.parse import quote, urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.testing import MemoryReactorClock

from relayd import config
from relayd.wire import sas
from tests.support.memory import Network
from tests.support.relay import ROOT_KEY

ENTITY = "door"
HOST = "relay.test"
EPOCH = 1_800_000_000  # the fake clock's start (unix seconds): tokens are checked against it
TOKEN_LIFETIME = 3600
ACCEPT_TIMEOUT = 30
CONTROL_STALL_TIMEOUT = 5


def settings_for(data_dir, limits=None):
    """The relay's settings: one entity (anonymous senders), a port-mapped TCP door on it and
    a net.tcp door routed by Via.  Ports are fake: the MemoryReactorClock records them."""
    raw = {
        "relay": {"data_dir": str(data_dir), "listen": ["tcp:80:interface=127.0.0.1"],
                  "accept_timeout": ACCEPT_TIMEOUT},
        "rules": [{"name": "root", "key": ROOT_KEY, "rights": ["Manage", "Listen", "Send"]}],
        "hybrid_connections": [{"path": ENTITY, "requires_client_authorization": False}],
        "tcp_ports": [
            {"listen": "tcp:81:interface=127.0.0.1", "mode": "port", "entity": ENTITY, "allow_anonymous": True},
            {"listen": "tcp:82:interface=127.0.0.1", "mode": "nettcp"},
        ],
        "limits": dict({"control_stall_timeout": CONTROL_STALL_TIMEOUT}, **(limits or {})),
    }
    return config.parse(raw, "contract")


class MemoryRelay:
    """The relay service on a fake reactor; ``factories`` maps the fake ports to the factories
    the service listens with (80: the HTTP/WebSocket port, 81: TCP port door, 82: net.tcp)."""

    def __init__(self, data_dir, limits=None):
        from relayd.relay_service import RelayService

        self.clock = MemoryReactorClock()
        self.clock.advance(EPOCH)
        self.network = Network()
        self.service = RelayService(settings_for(data_dir, limits), self.clock)
        self.service.startService()
        self.factories = {port: factory for port, factory, _backlog, _iface in self.clock.tcpServers}

    def connect(self, port, client_protocol):
        """Connect ``client_protocol`` to the relay's fake ``port``; returns the client's transport."""
        server = self.factories[port].buildProtocol(None)
        _server_transport, client_transport = self.network.connect(server, client_protocol, port)
        self.pump()
        return client_transport

    def pump(self):
        self.network.pump()

    def advance(self, seconds, step=1.0):
        """Let ``seconds`` pass on the fake clock, moving bytes after every ``step``."""
        while seconds > 0:
            self.clock.advance(min(step, seconds))
            seconds -= step
            self.pump()

    def token(self, lifetime=TOKEN_LIFETIME, path=ENTITY):
        return sas.make_token("http://%s/%s" % (HOST, path), "root", ROOT_KEY,
                              int(self.clock.seconds()) + lifetime)

    def delete_entity(self, path=ENTITY):
        # What deleting an entity through the management API leads to (Namespace.on_removed ->
        # Switchboard.close_entity); the entity here is declared in the config, which the TCP
        # door needs, and so cannot be deleted through the namespace.
        self.service.switchboard.close_entity(path)
        self.pump()

    def stop(self):
        self.service.stopService()
        self.pump()
        self.service.store.close()


# -- WebSocket clients --------------------------------------------------------------------------

class WebSocketClient(WebSocketClientProtocol):
    """A WebSocket client that records what happens: ``status`` (handshake refused),
    ``opened``, ``messages``, ``close`` ((code, reason) once closed)."""

    status = None
    opened = False
    close_code = None
    closed = False

    def __init__(self):
        super().__init__()
        self.messages = []

    def onOpen(self):
        self.opened = True

    def onMessage(self, payload, is_binary):
        self.messages.append((payload, is_binary))

    def onClose(self, wasClean, code, reason):
        self.closed = True
        self.close_code = code
        m = re.search(r"upgrade failed \[(\d+)\]", reason or "")
        if m and not self.opened:
            self.status = int(m.group(1))

    def received(self):
        return b"".join(p for p, binary in self.messages if binary)


def websocket(relay, url, protocol_class=WebSocketClient, port=80):
    """Open a WebSocket to ``url`` on the relay's ``port``; returns the client protocol."""
    factory = WebSocketClientFactory(url.replace("wss://", "ws://"), reactor=relay.clock)
    factory.setProtocolOptions(openHandshakeTimeout=0, autoFragmentSize=0)
    factory.protocol = protocol_class
    client = factory.buildProtocol(None)
    relay.connect(port, client)
    return client


class ScriptedListener(WebSocketClient):
    """A Hybrid Connections listener's control channel; every offer is kept in ``offers``."""

    def __init__(self):
        super().__init__()
        self.offers = []
        self.pending_binary = []

    def onMessage(self, payload, is_binary):
        super().onMessage(payload, is_binary)
        if not is_binary:
            self.offers.append(json.loads(payload))


def listen(relay, lifetime=TOKEN_LIFETIME):
    url = "ws://%s/$hc/%s?sb-hc-action=listen&sb-hc-token=%s" % (
        HOST, ENTITY, quote(relay.token(lifetime), safe=""))
    control = websocket(relay, url, ScriptedListener)
    assert control.opened, control.status
    return control


def accept(relay, offer):
    """Open the rendezvous leg for an ``accept`` offer; returns it (a WebSocketClient)."""
    return websocket(relay, offer["accept"]["address"])


def reject(relay, offer, status=403, description="go away"):
    """Reject an ``accept`` offer (a rendezvous handshake with sb-hc-statusCode)."""
    address = offer["accept"]["address"] + "&sb-hc-statusCode=%d&sb-hc-statusDescription=%s" % (
        status, quote(description))
    return websocket(relay, address)


def renew(relay, control, lifetime=TOKEN_LIFETIME):
    control.sendMessage(json.dumps({"renewToken": {"token": relay.token(lifetime)}}).encode(), isBinary=False)
    relay.pump()


def respond(relay, control, offer, status=200, body=b""):
    """Answer an HTTP ``request`` offer on the control channel (with ``body`` as one binary
    message after the response, when there is one)."""
    request_id = offer["request"]["id"]
    response = {"response": {"requestId": request_id, "statusCode": status, "statusDescription": "OK",
                             "responseHeaders": {"Content-Type": "text/plain"}, "body": bool(body)}}
    control.sendMessage(json.dumps(response).encode(), isBinary=False)
    if body:
        control.sendMessage(body, isBinary=True)
    relay.pump()


def query(url):
    return dict(p.split("=", 1) for p in urlsplit(url).query.split("&") if "=" in p)
