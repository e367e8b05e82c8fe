"""The Hybrid Connections WebSocket door over real loopback sockets, with a plain WebSocket
client on both sides (no relayd client code)."""

import json
import os
import time
import urllib.request
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import pytest_twisted
from twisted.internet import defer

from relayd.wire import sas
from tests.support.relay import LISTEN_KEY, ROOT_KEY, SEND_KEY
from tests.wsclient import HandshakeFailed, connect
from tests.support.waits import sleep, wait_for


def token(relay, path, rule="root", key=ROOT_KEY, ttl=3600):
    return sas.make_token("%s/%s" % (relay.http_url, path), rule, key, int(time.time()) + ttl)


def hc_url(relay, path, action, **params):
    query = "sb-hc-action=" + action + "".join("&%s=%s" % (k.replace("_", "-"), quote(str(v), safe=""))
                                              for k, v in params.items())
    sep = "&" if "?" in path else "?"
    return "%s/$hc/%s%s%s" % (relay.url, path, sep, query)


async def listen(relay, path="echo", **kw):
    headers = {"ServiceBusAuthorization": token(relay, path, **kw)}
    return await connect(hc_url(relay, path, "listen"), headers=headers)


async def expect_status(d, status):
    with pytest.raises(HandshakeFailed) as e:
        await d
    assert e.value.status == status, e.value
    return e.value


async def pair(relay, path="echo", sender_headers=None, protocols=None, listener_protocols=None,
               sender_path=None):
    listener = await listen(relay, path)
    headers = {"ServiceBusAuthorization": token(relay, path, "sender", SEND_KEY)}
    headers.update(sender_headers or {})
    sender_d = connect(hc_url(relay, sender_path or path, "connect"), headers=headers, protocols=protocols)
    accept = (await listener.next_json())["accept"]
    leg = await connect(accept["address"], protocols=listener_protocols)
    sender = await sender_d
    return listener, accept, leg, sender


@pytest_twisted.ensureDeferred
async def test_echo_through_relay_preserves_types_and_boundaries(relay):
    listener, accept, leg, sender = await pair(relay)
    sender.sendMessage("héllo".encode("utf-8"), isBinary=False)
    blob = os.urandom(300_000)
    sender.sendMessage(blob, isBinary=True)
    sender.sendMessage(b"", isBinary=True)
    assert await leg.messages.get() == ("héllo".encode("utf-8"), False)
    assert await leg.messages.get() == (blob, True)
    assert await leg.messages.get() == (b"", True)
    leg.sendMessage(b"back", isBinary=True)
    leg.sendMessage("text back".encode(), isBinary=False)
    assert await sender.messages.get() == (b"back", True)
    assert await sender.messages.get() == (b"text back", False)
    sender.sendClose(4321, "bye now")
    code, reason = await leg.closed
    assert (code, reason) == (4321, "bye now")
    await sender.closed
    listener.sendClose(1000)
    await listener.closed


@pytest_twisted.ensureDeferred
async def test_accept_message_shape(relay):
    listener, accept, leg, sender = await pair(
        relay, sender_headers={"X-Custom": "v1"}, sender_path="echo/sub/path?x=1&y=two",
    )
    assert set(accept) >= {"address", "id", "connectHeaders"}
    address = urlsplit(accept["address"])
    assert address.scheme == "ws" and address.netloc == "127.0.0.1:%d" % relay.port
    assert address.path == "/$hc/echo/sub/path"
    q = parse_qs(address.query)
    assert q["sb-hc-action"] == ["accept"] and q["x"] == ["1"] and q["y"] == ["two"]
    assert len(q["sb-hc-id"][0]) == 32
    headers = accept["connectHeaders"]
    assert headers["X-Custom"] == "v1"
    assert "Sec-WebSocket-Key" in headers and "Sec-WebSocket-Version" in headers
    assert "Sec-WebSocket-Extensions" not in headers
    assert "ServiceBusAuthorization" not in headers  # the relay token never reaches the listener
    assert accept["remoteEndpoint"]["address"] == "127.0.0.1"
    # no compression on either leg, even when offered
    assert sender.websocket_extensions_in_use == [] and leg.websocket_extensions_in_use == []
    for c in (sender, leg, listener):
        c.sendClose(1000)


@pytest_twisted.ensureDeferred
async def test_sender_id_and_subprotocol(relay):
    listener = await listen(relay)
    headers = {"ServiceBusAuthorization": token(relay, "echo")}
    sender_d = connect(hc_url(relay, "echo", "connect", sb_hc_id="trace-42"), headers=headers,
                       protocols=["chat.v1", "chat.v2"])
    accept = (await listener.next_json())["accept"]
    assert accept["id"] == "trace-42"
    offered = accept["connectHeaders"]["Sec-WebSocket-Protocol"]
    assert [p.strip() for p in offered.split(",")] == ["chat.v1", "chat.v2"]
    leg = await connect(accept["address"], protocols=["chat.v2"])
    sender = await sender_d
    assert sender.response.protocol == "chat.v2"
    assert leg.websocket_protocol_in_use == "chat.v2"
    for c in (sender, listener):
        c.sendClose(1000)


@pytest_twisted.ensureDeferred
async def test_reject_passes_listener_status(relay):
    listener = await listen(relay)
    sender_d = connect(hc_url(relay, "echo", "connect"),
                       headers={"ServiceBusAuthorization": token(relay, "echo")})
    accept = (await listener.next_json())["accept"]
    reject = accept["address"] + "&sb-hc-statusCode=451&sb-hc-statusDescription=" + quote("Not here")
    await expect_status(connect(reject), 410)
    failure = await expect_status(sender_d, 451)
    assert "Not here" in failure.reason
    # the id is one-time: accepting after the reject fails
    await expect_status(connect(accept["address"]), 403)
    listener.sendClose(1000)


@pytest_twisted.ensureDeferred
async def test_accept_deadline(relay):
    relay.service.switchboard.accept_timeout = 0.5
    listener = await listen(relay)
    sender_d = connect(hc_url(relay, "echo", "connect"),
                       headers={"ServiceBusAuthorization": token(relay, "echo")})
    accept = (await listener.next_json())["accept"]
    failure = await expect_status(sender_d, 504)
    assert "did not accept" in failure.reason and "TrackingId:" in failure.reason
    await expect_status(connect(accept["address"]), 403)
    listener.sendClose(1000)


@pytest_twisted.ensureDeferred
async def test_handshake_errors(relay):
    f = await expect_status(connect(hc_url(relay, "nope", "listen"),
                                    headers={"ServiceBusAuthorization": token(relay, "nope")}), 404)
    assert "TrackingId:" in f.reason
    await expect_status(connect(hc_url(relay, "echo", "listen")), 401)
    await expect_status(connect(hc_url(relay, "echo", "connect")), 401)
    bad = token(relay, "echo", key="d3Jvbmcta2V5LWZvci10ZXN0cw==")
    await expect_status(connect(hc_url(relay, "echo", "listen"), headers={"ServiceBusAuthorization": bad}), 401)
    expired = sas.make_token(relay.http_url + "/echo", "root", ROOT_KEY, int(time.time()) - 5)
    f = await expect_status(connect(hc_url(relay, "echo", "listen"), headers={"Authorization": expired}), 401)
    assert "expired" in f.reason
    # a Send-only rule cannot listen; a Listen-only rule cannot send
    await expect_status(connect(hc_url(relay, "echo", "listen"),
                                headers={"ServiceBusAuthorization": token(relay, "echo", "sender", SEND_KEY)}), 403)
    await expect_status(connect(hc_url(relay, "echo", "connect"),
                                headers={"ServiceBusAuthorization": token(relay, "echo", "listener", LISTEN_KEY)}), 403)
    # a token for another entity
    await expect_status(connect(hc_url(relay, "echo", "listen"),
                                headers={"ServiceBusAuthorization": token(relay, "open")}), 403)
    await expect_status(connect(hc_url(relay, "echo", "dance")), 400)
    # no listener
    f = await expect_status(connect(hc_url(relay, "echo", "connect"),
                                    headers={"ServiceBusAuthorization": token(relay, "echo")}), 404)
    assert "no listener" in f.reason


@pytest_twisted.ensureDeferred
async def test_token_in_query_and_anonymous_entity(relay):
    t = token(relay, "open")
    listener = await connect(hc_url(relay, "open", "listen", sb_hc_token=t))
    sender_d = connect(hc_url(relay, "open", "connect"))  # anonymous sender allowed here
    accept = (await listener.next_json())["accept"]
    leg = await connect(accept["address"])
    sender = await sender_d
    sender.sendMessage(b"x", isBinary=True)
    assert await leg.messages.get() == (b"x", True)
    for c in (sender, listener):
        c.sendClose(1000)


@pytest_twisted.ensureDeferred
async def test_entity_level_rule(relay):
    scoped = sas.make_token(relay.http_url + "/scoped", "scoped-send",
                             "c2NvcGVkLXNlbmQta2V5LWZvci10ZXN0cw==", int(time.time()) + 60)
    listener = await listen(relay, "scoped")
    sender_d = connect(hc_url(relay, "scoped", "connect"), headers={"ServiceBusAuthorization": scoped})
    accept = (await listener.next_json())["accept"]
    await connect(accept["address"])
    sender = await sender_d
    # the entity rule does not work on another entity
    await expect_status(connect(hc_url(relay, "echo", "connect"), headers={"ServiceBusAuthorization": scoped}), 401)
    for c in (sender, listener):
        c.sendClose(1000)


@pytest_twisted.ensureDeferred
async def test_max_listeners(relay):
    a = await listen(relay, "few")
    b = await listen(relay, "few")
    f = await expect_status(listen(relay, "few"), 403)
    assert "max_listeners" in f.reason
    a.sendClose(1000)
    await a.closed
    c = await listen(relay, "few")
    for x in (b, c):
        x.sendClose(1000)


@pytest_twisted.ensureDeferred
async def test_token_expiry_closes_control_channel_unless_renewed(relay):
    short = sas.make_token(relay.http_url + "/echo", "root", ROOT_KEY, int(time.time()) + 2)
    dying = await connect(hc_url(relay, "echo", "listen"), headers={"ServiceBusAuthorization": short})
    renewed = await connect(hc_url(relay, "echo", "listen"), headers={"ServiceBusAuthorization": short})
    renewed.sendMessage(json.dumps({"renewToken": {"token": token(relay, "echo")}}).encode(), isBinary=False)
    code, reason = await dying.closed
    assert code == 1008 and "expired" in reason
    # both tokens expired at the same time: a ping answered after that shows the renewed
    # channel was kept
    pong = defer.Deferred()
    renewed.onPong = pong.callback
    renewed.sendPing(b"still there?")
    assert await pong == b"still there?"
    assert renewed.state == renewed.STATE_OPEN  # no close frame came before the pong
    # a bad renewal closes with 1008 too
    renewed.sendMessage(json.dumps({"renewToken": {"token": "SharedAccessSignature sr=x"}}).encode(), isBinary=False)
    code, reason = await renewed.closed
    assert code == 1008 and "renewToken" in reason


def _manage(relay, method, path, body=None):
    t = sas.make_token(relay.http_url + "/", "root", ROOT_KEY, int(time.time()) + 60)
    req = urllib.request.Request(relay.http_url + "/$relayd/entities/" + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": t})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


@pytest_twisted.ensureDeferred
async def test_deleting_entity_closes_channels_with_1001(relay):
    from twisted.internet import threads

    status, body = await threads.deferToThread(_manage, relay, "PUT", "temp", {"max_listeners": 3})
    assert status == 201 and body["max_listeners"] == 3
    listener, accept, leg, sender = await pair(relay, "temp")
    status, body = await threads.deferToThread(_manage, relay, "DELETE", "temp")
    assert status == 200
    for c in (listener, leg, sender):
        code, reason = await c.closed
        assert code == 1001, (code, reason)
    await expect_status(listen(relay, "temp"), 404)


@pytest_twisted.ensureDeferred
async def test_relay_pings_control_channels_and_reports_listener_counts(relay):
    from twisted.internet import threads

    relay.service.hybrid.limits.control_ping_interval = 2
    listener = await listen(relay)
    pinged = []
    listener.onPing = lambda payload: (pinged.append(payload), listener.sendPong(payload))
    for _ in range(60):  # the ping interval is 2 s (Autobahn's timers are whole-second batched)
        if pinged:
            break
        await sleep(0.1)
    assert pinged, "the relay did not ping the idle control channel within 6 s"
    status, body = await threads.deferToThread(_manage, relay, "GET", "echo")
    assert status == 200 and body["listeners"] == 1
    listener.sendClose(1000)
    await listener.closed
    await wait_for(lambda: relay.service.switchboard.listener_count("echo") == 0)
    status, body = await threads.deferToThread(_manage, relay, "GET", "echo")
    assert body["listeners"] == 0


@pytest_twisted.ensureDeferred
async def test_create_on_listen_is_opt_in_and_needs_manage(relay):
    await expect_status(listen(relay, "brand/new"), 404)  # off by default
    relay.service.namespace.create_on_listen = True
    await expect_status(connect(hc_url(relay, "brand/new", "listen"), headers={
        "ServiceBusAuthorization": token(relay, "brand/new", "listener", LISTEN_KEY)}), 403)
    listener = await listen(relay, "brand/new")  # root rule: Manage
    assert relay.service.namespace.get("brand/new") is not None
    listener.sendClose(1000)
