"""relayd.client without a network: connection strings, backoff, and the listener's timing
(reconnects, token renewal) on a MemoryReactorClock, speaking real WebSocket bytes to a
StringTransport."""

import base64
import hashlib
import json
import re
import struct
import types
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from twisted.internet import defer, error as net_error
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from relayd.wire import sas
from relayd.client.connection_string import ConnectionInfo, parse_connection_string
from relayd.client.listener import Backoff, HybridListener

KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="


# -- connection strings ----------------------------------------------------------------------


def test_ws_endpoint_with_port_and_entity_path():
    info = ConnectionInfo.parse("Endpoint=ws://127.0.0.1:9090/;SharedAccessKeyName=root;"
                                "SharedAccessKey=%s;EntityPath=echo" % KEY)
    assert (info.host, info.port, info.secure) == ("127.0.0.1", 9090, False)
    assert (info.rule, info.key, info.entity_path) == ("root", KEY, "echo")
    assert info.ws_base() == "ws://127.0.0.1:9090"
    assert info.http_base() == "http://127.0.0.1:9090"
    assert info.resolve_path(None) == "echo"
    assert info.resolve_path("other/") == "other"
    assert KEY not in repr(info)


def test_keys_are_case_insensitive_and_values_may_contain_equals():
    fields = parse_connection_string(" endpoint = sb://x.example/ ; sharedaccesskey=abc== ;;")
    assert fields == {"endpoint": "sb://x.example/", "sharedaccesskey": "abc=="}


@pytest.mark.parametrize("endpoint, extra, ws_base, http_base", [
    ("sb://relay.example.com/", "", "wss://relay.example.com", "https://relay.example.com"),
    ("sb://relay.example.com:5671/", "", "wss://relay.example.com:5671", "https://relay.example.com:5671"),
    ("sb://127.0.0.1:9090/", "", "ws://127.0.0.1:9090", "http://127.0.0.1:9090"),
    ("sb://localhost/", "", "ws://localhost", "http://localhost"),
    ("sb://relay.example.com:9090/", ";UseTls=false", "ws://relay.example.com:9090", "http://relay.example.com:9090"),
    ("sb://127.0.0.1:9443/", ";UseTls=true", "wss://127.0.0.1:9443", "https://127.0.0.1:9443"),
    ("sb://relay.example.com/", ";UseDevelopmentEmulator=true", "ws://relay.example.com", "http://relay.example.com"),
    ("http://relay.example.com:8080", "", "ws://relay.example.com:8080", "http://relay.example.com:8080"),
    ("https://relay.example.com/", "", "wss://relay.example.com", "https://relay.example.com"),
    ("wss://relay.example.com:443/", "", "wss://relay.example.com", "https://relay.example.com"),
    ("ws://[::1]:9090/", "", "ws://[::1]:9090", "http://[::1]:9090"),
])
def test_endpoint_schemes(endpoint, extra, ws_base, http_base):
    info = ConnectionInfo.parse("Endpoint=%s;SharedAccessKeyName=r;SharedAccessKey=k%s" % (endpoint, extra))
    assert info.ws_base() == ws_base
    assert info.http_base() == http_base


@pytest.mark.parametrize("text, words", [
    ("", ["empty"]),
    ("SharedAccessKeyName=r;SharedAccessKey=k", ["Endpoint"]),
    ("Endpoint=ftp://x/;SharedAccessKeyName=r;SharedAccessKey=k", ["scheme"]),
    ("Endpoint=ws:///;SharedAccessKeyName=r;SharedAccessKey=k", ["host"]),
    ("Endpoint=ws://x:99999/;SharedAccessKeyName=r;SharedAccessKey=k", ["port"]),
    ("Endpoint=ws://x/;SharedAccessKey=k", ["SharedAccessKeyName"]),
    ("Endpoint=ws://x/;SharedAccessKeyName=r", ["SharedAccessKey"]),
    ("Endpoint=ws://x/;UseTls=maybe", ["UseTls"]),
    ("Endpoint=ws://x/;garbage", ["Key=Value"]),
])
def test_bad_connection_strings_name_the_problem(text, words):
    with pytest.raises(ValueError) as e:
        ConnectionInfo.parse(text)
    for word in words:
        assert word in str(e.value)


def test_shared_access_signature_is_used_as_is():
    info = ConnectionInfo.parse("Endpoint=ws://h:1/;SharedAccessSignature=SharedAccessSignature sr=a&sig=b&se=1&skn=c")
    assert info.key is None
    assert info.token_for("echo") == "SharedAccessSignature sr=a&sig=b&se=1&skn=c"
    anonymous = ConnectionInfo.parse("Endpoint=ws://h:1/")
    assert anonymous.token_for("echo") is None


def test_token_for_verifies_for_the_entity_and_expires_on_time():
    info = ConnectionInfo.parse("Endpoint=ws://127.0.0.1:9090/;SharedAccessKeyName=root;SharedAccessKey=" + KEY)
    token = info.token_for("echo", ttl=100, now=1000.2)
    rules = [sas.Rule("root", KEY, frozenset({sas.LISTEN, sas.SEND}))]
    verified = sas.verify_token(token, "http://127.0.0.1/echo", rules, sas.LISTEN, 1100)
    assert verified.expires == 1101  # rounded up, never shorter than asked
    with pytest.raises(sas.Forbidden):
        sas.verify_token(token, "http://127.0.0.1/other", rules, sas.LISTEN, 1000)


def test_hc_url_quotes_path_suffix_and_query():
    info = ConnectionInfo.from_url("ws://h:1")
    url = info.hc_url("a b/c", "x/y z", [("q", "1 2&3"), ("sb-hc-action", "connect")])
    assert url == "ws://h:1/$hc/a%20b/c/x/y%20z?q=1%202%263&sb-hc-action=connect"


def args(**kw):
    base = dict(connection_string=None, url=None, rule=None, key=None, path="echo")
    base.update(kw)
    return types.SimpleNamespace(**base)


def test_from_args_connection_string_and_overrides():
    cs = "Endpoint=sb://127.0.0.1:9090/;SharedAccessKeyName=root;SharedAccessKey=" + KEY
    info = ConnectionInfo.from_args(args(connection_string=cs), environ={})
    assert (info.ws_base(), info.rule, info.key) == ("ws://127.0.0.1:9090", "root", KEY)
    info = ConnectionInfo.from_args(args(connection_string=cs, url="wss://relay.example.com",
                                         rule="other", key="k2"), environ={})
    assert (info.ws_base(), info.rule, info.key) == ("wss://relay.example.com", "other", "k2")


def test_from_args_url_rule_and_key_from_environment():
    info = ConnectionInfo.from_args(args(url="ws://127.0.0.1:9090", rule="root"), environ={"RELAYD_KEY": KEY})
    assert (info.rule, info.key) == ("root", KEY)
    cs = "Endpoint=ws://127.0.0.1:9090/;SharedAccessKeyName=root;SharedAccessKey=" + KEY
    info = ConnectionInfo.from_args(args(), environ={"RELAYD_CONNECTION_STRING": cs})
    assert info.port == 9090 and info.key == KEY


@pytest.mark.parametrize("kw, env, require, words", [
    ({}, {}, True, ["-x", "--url"]),
    ({"url": "ws://h:1"}, {}, True, ["--rule", "--key"]),
    ({"url": "ws://h:1", "rule": "root"}, {}, True, ["--key", "RELAYD_KEY"]),
    ({"url": "ws://h:1", "key": "k"}, {}, True, ["--rule"]),
    ({"url": "ws://h:1", "key": "k"}, {}, False, ["--rule"]),
    ({"url": "ws://h:1"}, {"RELAYD_KEY": "k"}, True, ["--rule"]),
    ({"url": "nope://h"}, {}, False, ["scheme"]),
])
def test_from_args_errors_name_the_missing_part(kw, env, require, words):
    with pytest.raises(ValueError) as e:
        ConnectionInfo.from_args(args(**kw), require_key=require, environ=env)
    for word in words:
        assert word in str(e.value)


def test_from_args_anonymous_sender_allowed_when_no_key_required():
    info = ConnectionInfo.from_args(args(url="ws://h:1"), require_key=False, environ={"RELAYD_KEY": "k"})
    assert info.key is None and info.token_for("open") is None


# -- backoff ----------------------------------------------------------------------------------


class FixedRng:
    def __init__(self, *values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def test_backoff_full_jitter_schedule_is_capped_and_resets():
    b = Backoff(1, 60, FixedRng(0.5))
    assert [b.next() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    b.reset()
    assert b.next() == 0.5
    b = Backoff(1, 60, FixedRng(0.0, 0.999, 0.25))
    assert [round(b.next(), 3) for _ in range(4)] == [0.0, 1.998, 1.0, 2.0]
    b = Backoff(0.5, 4, FixedRng(0.999999))
    assert all(d < 4 for d in (b.next() for _ in range(100)))  # no overflow, never past the cap
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(5, 1)


# -- the listener on a memory reactor ------------------------------------------------------------

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def client_frames(data):
    """(opcode, payload) of masked client-to-server frames."""
    out, i = [], 0
    while i < len(data):
        b0, b1 = data[i], data[i + 1]
        i += 2
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", data[i:i + 2])[0]
            i += 2
        elif n == 127:
            n = struct.unpack(">Q", data[i:i + 8])[0]
            i += 8
        mask = data[i:i + 4] if b1 & 0x80 else b"\0\0\0\0"
        i += 4 if b1 & 0x80 else 0
        out.append((b0 & 0x0F, bytes(c ^ mask[j % 4] for j, c in enumerate(data[i:i + n]))))
        i += n
    return out


def server_text(text):
    payload = text.encode("utf-8")
    if len(payload) < 126:
        return bytes([0x81, len(payload)]) + payload
    return bytes([0x81, 126]) + struct.pack(">H", len(payload)) + payload


class Wire:
    """One control-channel attempt: the real client protocol on a StringTransport."""

    def __init__(self, reactor, index):
        host, port, factory, timeout, _ = reactor.tcpClients[index]
        self.factory = factory
        self.proto = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        self.proto.makeConnection(self.transport)
        head = self.transport.value().decode("latin-1")
        self.request_line = head.split("\r\n", 1)[0]
        self.headers = dict(line.split(": ", 1) for line in head.split("\r\n\r\n")[0].split("\r\n")[1:])
        self.transport.clear()

    def answer(self, status=101, reason="Switching Protocols"):
        if status == 101:
            key = self.headers["Sec-WebSocket-Key"]
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            self.proto.dataReceived(
                ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        else:
            self.proto.dataReceived(("HTTP/1.1 %d %s\r\n\r\n" % (status, reason)).encode())
            self.proto.connectionLost(Failure(net_error.ConnectionDone()))

    def sent(self):
        frames = client_frames(self.transport.value())
        self.transport.clear()
        return frames

    def drop(self):
        self.proto.connectionLost(Failure(net_error.ConnectionLost()))


def token_expiry(token):
    return int(re.search(r"se=(\d+)", token).group(1))


def make_listener(clock, **kw):
    info = ConnectionInfo.parse("Endpoint=ws://127.0.0.1:9090/;SharedAccessKeyName=root;SharedAccessKey=" + KEY)
    events = []
    kw.setdefault("keepalive", 0)  # Autobahn's ping timers run on the global reactor
    kw.setdefault("rng", FixedRng(0.5))
    kw.setdefault("backoff", (1, 60))  # full jitter, steps of 1 s (the default before issue 13)
    listener = HybridListener(clock, info, "echo", kw.pop("on_accept", lambda r: None),
                              on_status=lambda s, d: events.append((s, d)), **kw)
    return listener, events


def test_listener_handshake_carries_listen_token_and_id():
    clock = MemoryReactorClock()
    clock.advance(1000)
    listener, events = make_listener(clock, listener_id="L1", token_ttl=100)
    started = listener.start()
    wire = Wire(clock, 0)
    assert wire.request_line.startswith("GET /$hc/echo?sb-hc-action=listen&sb-hc-id=L1 HTTP/1.1")
    token = wire.headers["ServiceBusAuthorization"]
    assert token_expiry(token) == 1100
    wire.answer()
    assert started.called and listener.state == "online"
    assert [s for s, _ in events] == ["connecting", "online"]
    assert "sb-hc-token" not in events[0][1] and "sig=" not in events[0][1]


def test_renew_token_at_80_percent_of_its_lifetime():
    clock = MemoryReactorClock()
    clock.advance(1000)
    listener, events = make_listener(clock, token_ttl=100)
    listener.start()
    wire = Wire(clock, 0)
    wire.answer()
    clock.advance(79.9)
    assert wire.sent() == []
    clock.advance(0.1)
    ((opcode, payload),) = wire.sent()
    assert opcode == 1
    token = json.loads(payload)["renewToken"]["token"]
    assert payload == b'{"renewToken":{"token":"%s"}}' % token.encode()  # as hyco-ws sends it
    assert token_expiry(token) == 1180
    assert listener.token_expires == 1180
    clock.advance(79.9)
    assert wire.sent() == []
    clock.advance(0.1)
    ((_, payload),) = wire.sent()
    assert token_expiry(json.loads(payload)["renewToken"]["token"]) == 1260
    assert [d for s, d in events if s == "renewed"] == [1180, 1260]
    # once the channel is gone, no more renewals
    wire.drop()
    clock.advance(500)
    assert wire.sent() == []


def test_failed_attempts_back_off_and_reset_after_online():
    clock = MemoryReactorClock()
    listener, events = make_listener(clock, backoff=(1, 8))
    listener.start()
    delays = []
    for attempt, delay in enumerate([0.5, 1, 2, 4, 4]):
        assert len(clock.tcpClients) == attempt + 1
        Wire(clock, attempt).answer(401, "Unauthorized: bad signature")
        status, err = events[-2]
        assert status == "error" and err.status == 401 and "bad signature" in err.description
        assert events[-1] == ("retry", delay)
        delays.append(delay)
        clock.advance(delay - 0.01)
        assert len(clock.tcpClients) == attempt + 1  # not before the delay
        clock.advance(0.01)
    # connection refused counts the same way, with no HTTP status
    factory = clock.tcpClients[5][2]
    factory.clientConnectionFailed(None, Failure(net_error.ConnectionRefusedError()))
    assert events[-2][0] == "error" and events[-2][1].status is None
    assert events[-1] == ("retry", 4)
    clock.advance(4)
    wire = Wire(clock, 6)
    wire.answer()
    assert events[-1] == ("online", listener.listener_id)
    # online resets the backoff: after a drop the next attempt comes after base * 0.5
    wire.drop()
    assert events[-2][0] == "offline" and events[-2][1].code == 1006
    assert events[-1] == ("retry", 0.5)
    clock.advance(0.5)
    assert len(clock.tcpClients) == 8


def test_stop_cancels_the_pending_retry():
    clock = MemoryReactorClock()
    listener, events = make_listener(clock)
    started = listener.start()
    Wire(clock, 0).answer(503, "Service Unavailable")
    assert events[-1] == ("retry", 0.5)
    failures = []
    started.addErrback(failures.append)
    d = listener.stop()
    assert d.called
    assert failures and failures[0].check(defer.CancelledError)
    clock.advance(3600)
    assert len(clock.tcpClients) == 1
    assert listener.state == "stopped"


def online_listener(**kw):
    """A listener whose control channel is open: ``(clock, listener, wire)``."""
    clock = MemoryReactorClock()
    listener, _ = make_listener(clock, **kw)
    listener.start()
    wire = Wire(clock, 0)
    wire.answer()
    return clock, listener, wire


def test_accept_message_reaches_on_accept_with_parsed_fields():
    requests = []
    clock, listener, wire = online_listener(on_accept=requests.append)
    msg = {"accept": {
        "address": "ws://127.0.0.1:9090/$hc/echo/a/b%20c?x=1&sb-hc-action=accept&sb-hc-id=K",
        "id": "K", "connectHeaders": {"Sec-WebSocket-Protocol": "p1, p2", "X-A": "1"},
        "remoteEndpoint": {"address": "10.0.0.1", "port": 5}}}
    payload = json.dumps(msg).encode()
    wire.proto.dataReceived(bytes([0x81, 126]) + struct.pack(">H", len(payload)) + payload)
    (request,) = requests
    assert request.id == "K"
    assert request.path_suffix == "/a/b c"
    assert request.query == {"x": "1"}
    assert request.subprotocols == ["p1", "p2"]
    assert request.header("x-a") == "1"
    assert request.remote_endpoint == {"address": "10.0.0.1", "port": 5}
    # reject appends the status to the address as is
    d = request.reject(418, "I'm a\r\nteapot")
    url = clock.tcpClients[1][2].url
    q = parse_qs(urlsplit(url).query)
    assert q["sb-hc-id"] == ["K"] and q["sb-hc-statusCode"] == ["418"]
    assert q["sb-hc-statusDescription"] == ["I'm a teapot"]
    Wire(clock, 1).answer(410, "Gone")
    assert d.called and d.result is None
    assert request.answered
    again = request.accept()
    failures = []
    again.addErrback(failures.append)
    assert failures


def test_on_accept_false_rejects_with_403():
    clock = MemoryReactorClock()
    listener, events = make_listener(clock, on_accept=lambda r: False)
    listener.start()
    wire = Wire(clock, 0)
    wire.answer()
    wire.proto.dataReceived(server_text(json.dumps(
        {"accept": {"address": "ws://h:1/$hc/echo?sb-hc-id=Z", "id": "Z"}})))
    url = clock.tcpClients[1][2].url
    assert "sb-hc-statusCode=403" in url and unquote(url).endswith("Rejected by the listener")


def test_accept_message_without_address_is_ignored():
    requests = []
    clock, listener, wire = online_listener(on_accept=requests.append)
    wire.proto.dataReceived(server_text('{"accept":{"id":"x"}}'))
    wire.proto.dataReceived(server_text('{"accept":{"address":"ws://h:1/$hc/echo","id":"y"}}'))
    assert [r.id for r in requests] == ["y"]
    assert len(clock.tcpClients) == 1 and wire.sent() == []


def test_request_without_http_handler_is_answered_501():
    clock, listener, wire = online_listener()
    wire.proto.dataReceived(server_text(
        '{"request":{"address":"ws://h:1/$hc/echo?sb-hc-action=request&sb-hc-id=R","id":"R",'
        '"requestTarget":"/echo","method":"GET","requestHeaders":{},"body":false}}'))
    assert wire.sent() == [(1, b'{"response":{"requestId":"R","statusCode":501,"statusDescription":'
                               b'"Not Implemented","responseHeaders":{},"body":false}}')]
    wire.proto.dataReceived(server_text('{"request":{"address":"ws://h:1/$hc/echo","id":"S"}}'))
    assert wire.sent() == [] and len(clock.tcpClients) == 1  # a rendezvous call: nothing to serve it


def test_keepalive_pings_and_drops_a_silent_channel():
    clock = MemoryReactorClock()
    listener, events = make_listener(clock, keepalive=10)
    listener.start()
    wire = Wire(clock, 0)
    wire.answer()
    clock.advance(9.9)
    assert wire.sent() == []
    clock.advance(0.1)
    ((opcode, _),) = wire.sent()
    assert opcode == 9  # ping
    clock.advance(5)
    wire.proto.dataReceived(b"\x8a\x00")  # pong
    clock.advance(5)
    ((opcode, _),) = wire.sent()
    assert opcode == 9 and not wire.transport.disconnecting  # answered: ping again
    clock.advance(9.9)
    assert not wire.transport.disconnecting
    clock.advance(0.1)  # nothing came back within 10 s of that ping
    assert wire.transport.disconnecting
    wire.drop()
    status, closed = events[-2]
    assert status == "offline" and closed.code == 1006 and "keepalive" in closed.reason
    assert events[-1][0] == "retry"


def test_relay_traffic_counts_as_an_answer():
    clock = MemoryReactorClock()
    listener, events = make_listener(clock, keepalive=10)
    listener.start()
    wire = Wire(clock, 0)
    wire.answer()
    clock.advance(10)
    assert [op for op, _ in wire.sent()] == [9]
    for _ in range(5):
        clock.advance(3)
        wire.proto.dataReceived(b"\x89\x00")  # the relay's own ping, not a pong to ours
        assert [op for op, _ in wire.sent()] == [10]  # answered with a pong
        clock.advance(7)
        assert [op for op, _ in wire.sent()] == [9]  # heard from the relay: just ping again
    assert not wire.transport.disconnecting and listener.state == "online"
