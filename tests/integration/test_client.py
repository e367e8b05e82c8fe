"""relayd's own client (listener, sender, netcat CLI) against a real relay on loopback.

The in-process ``relay`` fixture runs the relay in the test's reactor; the CLI tests use the
worker's shared ``twistd -n relayd`` subprocesses (``shared_relay``, ``tls_relay``).
"""

import os
import random
import subprocess
import time
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor

from relayd.client import (
    Backoff, ConnectionClosed, ConnectionInfo, HybridListener, RelayConnectError, connect,
)
from tests.support.net import free_port
from tests.support.cli import REPO, cli, cli_env, connection_string, start_listen
from tests.support.relay import LISTEN_KEY, ROOT_KEY, SEND_KEY, write_config
from tests.support.tls import make_ca_and_server
from tests.support.waits import sleep, wait_for



def info_for(relay, rule="root", key=ROOT_KEY, extra=""):
    return ConnectionInfo.parse("Endpoint=ws://127.0.0.1:%d/;SharedAccessKeyName=%s;SharedAccessKey=%s%s"
                                % (relay.port, rule, key, extra))


class Recorder:
    """on_status events with their monotonic time."""

    def __init__(self):
        self.events = []

    def __call__(self, status, detail):
        self.events.append((time.monotonic(), status, detail))

    def of(self, status):
        return [(t, d) for t, s, d in self.events if s == status]

    def names(self):
        return [s for _, s, _ in self.events]


def echo_on_accept(accepted=None):
    """An on_accept that accepts and echoes every message with its type."""

    def on_accept(request):
        if accepted is not None:
            accepted.append(request)

        def opened(conn):
            conn.on_message = conn.send

        request.accept().addCallback(opened)

    return on_accept


async def start_listener(relay, path="echo", on_accept=None, **kw):
    kw.setdefault("on_status", Recorder())
    listener = HybridListener(reactor, info_for(relay, **kw.pop("cred", {})), path,
                              on_accept or echo_on_accept(), **kw)
    await listener.start()
    return listener


# -- messages ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_listener_accepts_and_echoes_text_and_binary(relay):
    accepted = []
    listener = await start_listener(relay, on_accept=echo_on_accept(accepted))
    try:
        conn = await connect(reactor, info_for(relay, "sender", SEND_KEY), "echo")
        blob = os.urandom(300_000)
        conn.send("héllo wörld")
        conn.send(blob)
        conn.send(b"")
        conn.send("")
        assert await conn.receive() == "héllo wörld"
        assert await conn.receive() == blob
        assert await conn.receive() == b""
        assert await conn.receive() == ""
        assert len(accepted) == 1 and len(listener.connections) == 1
        (leg,) = listener.connections
        leg_closed = leg.closed
        code, _ = await conn.close(1000, "done")
        assert code == 1000
        assert await leg_closed == (1000, "done")  # the listener sees the sender's code and reason
        await wait_for(lambda: not listener.connections)
        with pytest.raises(ConnectionClosed):
            await conn.receive()
    finally:
        await listener.stop()


@pytest_twisted.ensureDeferred
async def test_accept_request_carries_suffix_query_headers_id_and_subprotocol(relay):
    requests = []

    def on_accept(request):
        requests.append(request)
        chosen = "chat.v2" if "chat.v2" in request.subprotocols else None
        return request.accept(lambda conn: setattr(conn, "on_message", conn.send), subprotocol=chosen)

    listener = await start_listener(relay, on_accept=on_accept)
    try:
        conn = await connect(reactor, info_for(relay, "sender", SEND_KEY), "echo", suffix="sub/dir",
                             query={"x": "1", "name": "a b&c"}, headers={"X-Custom": "v1"},
                             subprotocols=["chat.v1", "chat.v2"], sender_id="my-trace-id")
        (request,) = requests
        assert request.id == "my-trace-id"
        assert request.path_suffix == "/sub/dir"
        assert request.query == {"x": "1", "name": "a b&c"}
        assert request.header("x-custom") == "v1"
        assert request.subprotocols == ["chat.v1", "chat.v2"]
        assert request.remote_endpoint.get("address") == "127.0.0.1"
        assert "servicebusauthorization" not in {k.lower() for k in request.connect_headers}
        assert conn.subprotocol == "chat.v2"
        conn.send(b"\x00\x01")
        assert await conn.receive() == b"\x00\x01"
        await conn.close()
    finally:
        await listener.stop()


@pytest_twisted.ensureDeferred
async def test_accept_with_a_protocol_factory_streams_bytes(relay):
    class Echo(protocol.Protocol):
        def dataReceived(self, data):
            self.transport.write(data)

    listener = await start_listener(
        relay, on_accept=lambda request: request.accept(protocol.Factory.forProtocol(Echo)))
    try:
        conn = await connect(reactor, info_for(relay), "echo")
        conn.send("text goes back as bytes")
        assert await conn.receive() == b"text goes back as bytes"
        conn.send(b"x" * 100_000)
        got = b""
        while len(got) < 100_000:
            got += await conn.receive()
        assert got == b"x" * 100_000
        await conn.close()
    finally:
        await listener.stop()


@pytest_twisted.ensureDeferred
async def test_paused_connection_stops_reading_until_resumed(relay):
    conns = []
    listener = await start_listener(relay, on_accept=lambda r: r.accept(conns.append))
    try:
        sender = await connect(reactor, info_for(relay), "echo")
        (leg,) = conns
        received = []
        leg.pauseProducing()
        leg.on_data = received.append
        for _ in range(32):
            sender.send(b"y" * 65536)
        await sleep(0.5)
        assert received == []
        leg.resumeProducing()
        await wait_for(lambda: sum(map(len, received)) == 32 * 65536)
        await sender.close()
    finally:
        await listener.stop()


# -- rejections and errors -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reject_propagates_status_and_description_to_sender(relay):
    outcomes = []

    def on_accept(request):
        d = request.reject(451, "not today, thanks")
        d.addCallback(outcomes.append)

    listener = await start_listener(relay, on_accept=on_accept)
    try:
        with pytest.raises(RelayConnectError) as e:
            await connect(reactor, info_for(relay, "sender", SEND_KEY), "echo")
        assert e.value.status == 451
        assert "not today, thanks" in e.value.description
        await wait_for(lambda: outcomes == [None])  # the reject handshake ended in 410 as it should
    finally:
        await listener.stop()


@pytest_twisted.ensureDeferred
async def test_on_accept_false_rejects_403_and_exception_rejects_500(relay):
    verdicts = iter([False, defer.succeed(False), "boom"])

    def on_accept(request):
        v = next(verdicts)
        if v == "boom":
            raise RuntimeError("listener bug")
        return v

    listener = await start_listener(relay, on_accept=on_accept)
    try:
        for status in (403, 403, 500):
            with pytest.raises(RelayConnectError) as e:
                await connect(reactor, info_for(relay), "echo")
            assert e.value.status == status, e.value
    finally:
        await listener.stop()


@pytest_twisted.ensureDeferred
async def test_sender_errors_carry_http_status(relay):
    with pytest.raises(RelayConnectError) as e:
        await connect(reactor, info_for(relay), "echo")
    assert e.value.status == 404 and "listener" in e.value.description
    with pytest.raises(RelayConnectError) as e:
        await connect(reactor, info_for(relay, "sender", "d3Jvbmcta2V5LXdyb25nLWtleQ=="), "echo")
    assert e.value.status == 401
    with pytest.raises(RelayConnectError) as e:
        await connect(reactor, info_for(relay, "listener", LISTEN_KEY), "echo")
    assert e.value.status == 403
    with pytest.raises(RelayConnectError) as e:
        await connect(reactor, info_for(relay), "no-such-entity")
    assert e.value.status == 404
    dead = ConnectionInfo.parse("Endpoint=ws://127.0.0.1:%d/;SharedAccessKeyName=root;SharedAccessKey=%s"
                                % (free_port(), ROOT_KEY))
    with pytest.raises(RelayConnectError) as e:
        await connect(reactor, dead, "echo", timeout=5)
    assert e.value.status is None and "cannot reach" in e.value.description


@pytest_twisted.ensureDeferred
async def test_anonymous_sender_on_open_entity(relay):
    listener = await start_listener(relay, path="open")
    try:
        anonymous = ConnectionInfo.parse("Endpoint=ws://127.0.0.1:%d/" % relay.port)
        conn = await connect(reactor, anonymous, "open")
        conn.send("hi")
        assert await conn.receive() == "hi"
        await conn.close()
    finally:
        await listener.stop()


@pytest_twisted.ensureDeferred
async def test_listener_and_sender_over_wss_verify_the_relay_certificate(tmp_path):
    from twisted.internet import ssl

    from relayd import config
    from relayd.relay_service import RelayService

    certs = make_ca_and_server(tmp_path)
    listen = '["ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s"]' % (
        certs["server-key.pem"], certs["server-cert.pem"])
    service = RelayService(config.load(write_config(tmp_path, listen=listen)), reactor)
    service.startService()
    try:
        await service.whenListening()
        cs = "Endpoint=sb://127.0.0.1:%d/;SharedAccessKeyName=root;SharedAccessKey=%s;UseTls=true" % (
            service.ports[0].getHost().port, ROOT_KEY)
        info = ConnectionInfo.parse(cs)
        assert info.ws_base().startswith("wss://")
        with open(certs["ca.pem"], "rb") as f:
            info.trust_root = ssl.Certificate.loadPEM(f.read())
        requests = []
        listener = HybridListener(reactor, info, "echo", echo_on_accept(requests))
        await listener.start()
        try:
            conn = await connect(reactor, info, "echo")
            assert requests[0].address.startswith("wss://")
            conn.send("over tls")
            assert await conn.receive() == "over tls"
            await conn.close()
            # without the CA the certificate is refused: TLS is really verified
            untrusted = ConnectionInfo.parse(cs)
            with pytest.raises(RelayConnectError) as e:
                await connect(reactor, untrusted, "echo", timeout=5)
            assert e.value.status is None
        finally:
            await listener.stop()
    finally:
        await service.stopService()
        service.store.close()


# -- reconnecting, backoff, renewal ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bad_key_backs_off_instead_of_looping(relay):
    status = Recorder()
    seed = 1234
    listener = HybridListener(reactor, info_for(relay, "root", "YmFkLWtleS1iYWQta2V5LWJhZC1rZXk="), "echo",
                              echo_on_accept(), on_status=status, backoff=(0.2, 0.8),
                              rng=random.Random(seed))
    started = listener.start()
    await wait_for(lambda: len(status.of("retry")) >= 4, timeout=15)
    assert not started.called
    await listener.stop()
    with pytest.raises(defer.CancelledError):
        await started

    errors = status.of("error")
    assert errors and all(d.status == 401 for _, d in errors), errors
    assert "online" not in status.names()
    expected = Backoff(0.2, 0.8, random.Random(seed))
    delays = [d for _, d in status.of("retry")]
    assert delays == pytest.approx([expected.next() for _ in delays])
    # ceilings 0.2, 0.4, 0.8, 0.8, ...: every attempt waits its delay, never a tight loop
    attempts = [t for t, _ in status.of("connecting")]
    assert len(attempts) >= 4, status.names()
    for (t0, t1, delay) in zip(attempts, attempts[1:], delays):
        assert t1 - t0 >= delay * 0.95


@pytest_twisted.ensureDeferred
async def test_listener_reconnects_after_the_relay_drops_its_channel(relay):
    status = Recorder()
    listener = await start_listener(relay, on_status=status, backoff=(0.1, 1))
    try:
        switchboard = relay.service.switchboard
        assert switchboard.listener_count("echo") == 1
        # the relay closes the control channel (what it does when an entity is deleted)
        switchboard.close_entity("echo")
        await wait_for(lambda: len(status.of("online")) == 2)
        (offline,) = [d for _, d in status.of("offline")]
        assert offline.code == 1001
        # now an abrupt drop of the TCP connection, no closing handshake
        (channel,) = switchboard._listeners["echo"]
        channel.transport.abortConnection()
        await wait_for(lambda: len(status.of("online")) == 3)
        assert status.of("offline")[-1][1].code == 1006
        assert switchboard.listener_count("echo") == 1
        conn = await connect(reactor, info_for(relay), "echo")
        conn.send("still here")
        assert await conn.receive() == "still here"
        await conn.close()
    finally:
        await listener.stop()


@pytest_twisted.ensureDeferred
async def test_silent_control_channel_is_dropped_and_replaced(relay):
    status = Recorder()
    listener = await start_listener(relay, on_status=status, keepalive=0.5, backoff=(0.1, 1))
    switchboard = relay.service.switchboard
    (channel,) = switchboard._listeners["echo"]
    channel.transport.pauseProducing()  # the relay stops reading: pings go unanswered
    try:
        await wait_for(lambda: len(status.of("online")) == 2, timeout=10)
        (offline,) = [d for _, d in status.of("offline")]
        assert offline.code == 1006 and "keepalive" in offline.reason
        # about 2 x keepalive after going online, not at once
        assert status.of("offline")[0][0] - status.of("online")[0][0] >= 0.9
    finally:
        channel.transport.resumeProducing()  # let the relay notice the old socket is gone
    await wait_for(lambda: switchboard.listener_count("echo") == 1)
    conn = await connect(reactor, info_for(relay), "echo")
    conn.send("pong")
    assert await conn.receive() == "pong"
    await conn.close()
    await listener.stop()


@pytest_twisted.ensureDeferred
async def test_token_renewal_keeps_the_channel_past_the_first_tokens_expiry(relay):
    status = Recorder()
    listener = await start_listener(relay, on_status=status, token_ttl=3)
    # a listener with a fixed 3-second token cannot renew: the relay closes it with 1008
    fixed = ConnectionInfo.parse(
        "Endpoint=ws://127.0.0.1:%d/;SharedAccessSignature=%s"
        % (relay.port, info_for(relay).token_for("echo", ttl=3)))
    fixed_status = Recorder()
    control = HybridListener(reactor, fixed, "echo", echo_on_accept(), on_status=fixed_status,
                             backoff=(30, 60))
    await control.start()
    try:
        # the fixed 3-second token expires; the renewing listener renews twice meanwhile
        await wait_for(lambda: fixed_status.of("offline") and len(status.of("renewed")) >= 2, timeout=15)
        assert [d.code for _, d in fixed_status.of("offline")] == [1008]
        assert status.of("offline") == [] and len(status.of("online")) == 1
        assert len(status.of("renewed")) >= 2
        assert listener.token_expires > time.time()
        conn = await connect(reactor, info_for(relay), "echo")
        conn.send("renewed")
        assert await conn.receive() == "renewed"
        await conn.close()
    finally:
        await control.stop()
        await listener.stop()


@pytest_twisted.ensureDeferred
async def test_stop_closes_accepted_connections_and_goes_offline(relay):
    status = Recorder()
    listener = await start_listener(relay, on_status=status)
    conn = await connect(reactor, info_for(relay), "echo")
    closed = conn.closed
    await listener.stop()
    code, reason = await closed
    assert code == 1001
    assert relay.service.switchboard.listener_count("echo") == 0
    assert status.names()[-1] == "offline"
    await sleep(0.3)
    assert status.names()[-1] == "offline"  # no reconnect after stop()
    with pytest.raises(RelayConnectError) as e:
        await connect(reactor, info_for(relay), "echo")
    assert e.value.status == 404


# -- the CLI: relayd listen / relayd connect --------------------------------------------------


def _start_listen(relay, tmp_path, stdin, path="echo", env=None):
    err_path = tmp_path / "listen.err"
    return start_listen(relay, err_path, stdin, path=path, env=env), err_path


def test_cli_connect_pipes_stdin_to_listen_stdout(shared_relay, tmp_path):
    data = os.urandom(200_000)
    # the listener's stdin is at EOF: it half-closes and still receives everything (issue 8 item 20)
    listen, err_path = _start_listen(shared_relay, tmp_path, subprocess.DEVNULL)
    try:
        sender = subprocess.run(cli("connect", "echo", "--url", shared_relay.url, "--rule", "sender",
                                     "--key", SEND_KEY),
                                input=data, capture_output=True, env=cli_env(), cwd=REPO, timeout=60)
        assert sender.returncode == 0, sender.stderr
        out, _ = listen.communicate(timeout=30)
        assert listen.returncode == 0, err_path.read_bytes()
        assert out == data
    finally:
        if listen.poll() is None:
            listen.kill()


def test_cli_listen_stdin_reaches_connect_stdout(shared_relay, tmp_path):
    data = os.urandom(150_000)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    with open(source, "rb") as stdin:
        listen, err_path = _start_listen(shared_relay, tmp_path, stdin)
    try:
        sender = subprocess.Popen(cli("connect", "echo", "-x", connection_string(shared_relay, "sender", SEND_KEY)),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=cli_env(), cwd=REPO)
        # the listener's end of file half-closes: the sender's stdout ends, and the sender's
        # own end of file then closes the connection
        out = sender.stdout.read()
        sender.stdin.close()
        err = sender.stderr.read()
        sender.wait(30)
        listen.wait(30)
        assert listen.returncode == 0, err_path.read_bytes()
        assert sender.returncode == 0, err
        assert out == data
    finally:
        for p in (listen, sender):
            if p.poll() is None:
                p.kill()


def test_cli_reports_errors_with_exit_status(shared_relay, tmp_path):
    r = subprocess.run(cli("connect", "echo", "-x", connection_string(shared_relay)), input=b"",
                       capture_output=True, env=cli_env(), cwd=REPO, timeout=60)
    assert r.returncode == 1 and b"404" in r.stderr, r.stderr
    r = subprocess.run(cli("listen", "echo", "-x", connection_string(shared_relay, "root", "d3Jvbmcta2V5LWZvci10ZXN0cw==")),
                       input=b"", capture_output=True, env=cli_env(), cwd=REPO, timeout=60)
    assert r.returncode == 1 and b"401" in r.stderr, r.stderr
    r = subprocess.run(cli("listen", "echo", "--url", shared_relay.url), input=b"",
                       capture_output=True, env=cli_env(), cwd=REPO, timeout=60)
    assert r.returncode == 2 and b"--rule" in r.stderr, r.stderr


def test_cli_over_wss_with_ssl_cert_file(tls_relay, tmp_path):
    certs = tls_relay.certs
    relay = SimpleNamespace(url="wss://127.0.0.1:%d" % tls_relay.port)
    env = dict(cli_env(), SSL_CERT_FILE=certs["ca.pem"])
    data = os.urandom(50_000)
    listen, err_path = _start_listen(relay, tmp_path, subprocess.DEVNULL, env=env)
    try:
        sender = subprocess.run(cli("connect", "echo", "-x", connection_string(relay, "sender", SEND_KEY)),
                                input=data, capture_output=True, env=env, cwd=REPO, timeout=60)
        assert sender.returncode == 0, sender.stderr
        out, _ = listen.communicate(timeout=30)
        assert listen.returncode == 0 and out == data, err_path.read_bytes()
    finally:
        if listen.poll() is None:
            listen.kill()
    # without the CA: refused
    r = subprocess.run(cli("connect", "echo", "-x", connection_string(relay, "sender", SEND_KEY)), input=b"",
                       capture_output=True, env=cli_env(), cwd=REPO, timeout=60)
    assert r.returncode == 1 and b"cannot connect" in r.stderr, r.stderr
