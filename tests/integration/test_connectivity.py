"""Connectivity status (issue 12 item 3) over real sockets: a ``twistd -n relayd`` subprocess,
listeners and senders of relayd's SDK, the management API read with http.client and the
server-sent event stream read with a plain HTTP client (http.client, one line at a time)."""

import http.client
import json
import socket
import threading
import time

import pytest
import pytest_twisted
from twisted.internet import reactor

from relayd.client import ConnectionInfo, HybridListener, RelayConnectError, connect
from tests.support.manage import call, manage_token
from tests.support.rawws import RawWS, hc_url, token as hc_token
from tests.support.relay import LISTEN_KEY, ROOT_KEY, SEND_KEY, RelayProcess, write_config
from tests.support.waits import wait_for, wait_until

WATCHERS = 3
EXTRA = """
[limits]
status_watchers = %d
""" % WATCHERS


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("connectivity")
    proc = RelayProcess(workdir, write_config(workdir, extra=EXTRA))
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def no_watchers_left(relay):
    yield
    # every test closes its streams: the next one starts with none open
    assert wait_until(lambda: call(relay, "GET", "connectivity")[1]["watchers"] == 0, timeout=10), \
        "the relay still counts a closed stream"


class Stream:
    """``GET /$relayd/connectivity/stream`` read by a thread: ``events`` as (id, name, data)
    and the comment lines, in order; ``ended`` once the relay ends the response."""

    def __init__(self, relay, query="", token=None, last_event_id=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=30)
        headers = {"Authorization": token or manage_token(relay)}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self.conn.request("GET", "/$relayd/connectivity/stream" + query, headers=headers)
        self.sock = self.conn.sock  # http.client lets go of it once a Connection: close answer comes
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.events, self.comments, self.retry = [], [], None
        self.ended = threading.Event()
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = json.loads(self.response.read())

    def _read(self):
        fields = {}
        try:
            while True:
                line = self.response.readline()
                if not line:
                    break
                line = line.decode("utf-8").rstrip("\n")
                if not line:
                    if "event" in fields:
                        self.events.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
                    fields = {}
                elif line.startswith(":"):
                    self.comments.append(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value
                    if name == "retry":
                        self.retry = int(fields[name])
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            self.ended.set()

    def names(self):
        return [name for _, name, _ in self.events]

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # the reading thread sees the end
        except OSError:
            pass
        self.ended.wait(5)
        self.sock.close()
        self.conn.close()


def info(relay, rule="root", key=ROOT_KEY):
    return ConnectionInfo.parse("Endpoint=ws://127.0.0.1:%d/;SharedAccessKeyName=%s;SharedAccessKey=%s"
                                % (relay.port, rule, key))


class Gate:
    """A listener's on_accept: accepts (and closes at once) or rejects, as ``reject`` says."""

    def __init__(self):
        self.reject = False
        self.opened = []

    def __call__(self, request):
        if self.reject:
            request.reject(403, "closed for the test")
            return
        request.accept().addCallback(self.opened.append)


async def listener(relay, path, gate, listener_id=None):
    lst = HybridListener(reactor, info(relay), path, gate, listener_id=listener_id)
    await lst.start()
    return lst


def status_of(relay, path):
    code, body = call(relay, "GET", "connectivity/" + path)
    assert code == 200, body
    return body


# -- state ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_get_shows_offline_then_online_since_then_offline(relay):
    before = status_of(relay, "echo")
    assert before["online"] is False and before["listeners"] == 0 and before["kind"] == "hybrid_connection"
    assert before["since"] <= time.time()
    t0 = time.time()
    lst = await listener(relay, "echo", Gate())
    try:
        now = status_of(relay, "echo")
        assert now["online"] is True and now["listeners"] == 1 and t0 - 1 <= now["since"] <= time.time()
        code, entity = call(relay, "GET", "entities/echo")
        assert code == 200
        assert entity["online"] is True and entity["online_since"] == now["since"] and entity["offline_since"] is None
        code, everything = call(relay, "GET", "connectivity")
        rows = {e["path"]: e for e in everything["entities"]}
        assert set(rows) == {"echo", "open", "few", "scoped"} and rows["echo"]["online"] is True
        assert rows["open"]["online"] is False
        code, only = call(relay, "GET", "connectivity?entity=ECHO")
        assert [e["path"] for e in only["entities"]] == ["echo"]
    finally:
        t1 = time.time()
        await lst.stop()
    await wait_for(lambda: status_of(relay, "echo")["online"] is False)
    after = status_of(relay, "echo")
    assert after["listeners"] == 0 and t1 - 1 <= after["since"] <= time.time()
    code, entity = call(relay, "GET", "entities/echo")
    assert entity["online"] is False and entity["online_since"] is None and entity["offline_since"] == after["since"]
    assert call(relay, "GET", "connectivity/nothing-here")[0] == 404


# -- the stream -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stream_carries_the_azure_events_in_order_with_the_entity(relay):
    echo_only = Stream(relay, "?entity=echo")
    everything = Stream(relay)
    assert echo_only.status == everything.status == 200
    assert echo_only.response.getheader("content-type").startswith("text/event-stream")
    gate = Gate()
    try:
        lst = await listener(relay, "echo", gate, listener_id="listener-one")
        other = await listener(relay, "open", Gate())
        conn = await connect(reactor, info(relay, "sender", SEND_KEY), "echo")
        await wait_for(lambda: gate.opened)
        await conn.close()
        gate.reject = True
        with pytest.raises(RelayConnectError):
            await connect(reactor, info(relay, "sender", SEND_KEY), "echo")
        await lst.stop()
        await other.stop()
        expected = ["NewListenerRegistered", "EntityOnline", "SenderListenerConnectionEstablished",
                    "ListenerRejectedConnection", "ListenerUnregistered", "EntityOffline"]
        await wait_for(lambda: len(echo_only.events) >= len(expected))
        assert echo_only.names() == expected
        assert {data["entity"] for _, _, data in echo_only.events} == {"echo"}
        registered, _, established, rejected, gone, offline = [data for _, _, data in echo_only.events]
        assert registered["listener"] == gone["listener"] == established["listener"] == "listener-one"
        assert registered["listeners"] == 1 and gone["listeners"] == 0 and offline["listeners"] == 0
        assert rejected["status"] == 403 and rejected["reason"] == "closed for the test"
        assert established["tracking_id"] and rejected["tracking_id"]
        assert all(abs(data["time"] - time.time()) < 30 for _, _, data in echo_only.events)
        ids = [event_id for event_id, _, _ in echo_only.events]
        assert len(set(ids)) == len(ids) and echo_only.retry == 2000
        # the unfiltered stream has the other entity's events too, each in its place
        await wait_for(lambda: everything.names().count("EntityOffline") >= 2)
        assert [n for n, (_, _, d) in zip(everything.names(), everything.events) if d["entity"] == "echo"] == expected
        assert [n for n, (_, _, d) in zip(everything.names(), everything.events) if d["entity"] == "open"] == [
            "NewListenerRegistered", "EntityOnline", "ListenerUnregistered", "EntityOffline"]
    finally:
        echo_only.close()
        everything.close()


@pytest_twisted.ensureDeferred
async def test_a_watcher_that_reconnects_with_last_event_id_misses_nothing(relay):
    _, state = call(relay, "GET", "connectivity")
    lst = await listener(relay, "few", Gate())
    await lst.stop()
    await wait_for(lambda: status_of(relay, "few")["online"] is False)
    late = Stream(relay, "?entity=few", last_event_id=state["last_event_id"])  # opened after it all
    try:
        await wait_for(lambda: len(late.events) >= 4)
        assert late.names() == ["NewListenerRegistered", "EntityOnline", "ListenerUnregistered", "EntityOffline"]
    finally:
        late.close()


def test_the_watcher_cap_answers_503_with_the_limit(relay):
    streams = [Stream(relay) for _ in range(WATCHERS)]
    try:
        assert [s.status for s in streams] == [200] * WATCHERS, [getattr(s, "body", None) for s in streams]
        over = Stream(relay)
        assert over.status == 503
        assert "limits.status_watchers" in over.body["error"]["message"]
        assert over.response.getheader("retry-after")
        streams.pop().close()
        wait_until(lambda: call(relay, "GET", "connectivity")[1]["watchers"] == WATCHERS - 1)
        again = Stream(relay)
        assert again.status == 200
        streams.append(again)
    finally:
        for s in streams:
            s.close()


def test_no_token_is_401_and_a_listen_token_403(relay):
    for path in ("connectivity/stream", "connectivity", "connectivity/echo"):
        conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
        conn.request("GET", "/$relayd/" + path)
        response = conn.getresponse()
        assert response.status == 401 and "Manage" in json.loads(response.read())["error"]["message"]
        conn.close()
    assert Stream(relay, token=manage_token(relay, "listener", LISTEN_KEY)).status in (401, 403)
    assert call(relay, "GET", "connectivity", rule="listener", key=LISTEN_KEY)[0] in (401, 403)


def test_the_stream_ends_when_its_token_expires(relay):
    stream = Stream(relay, token=manage_token(relay, ttl=2))
    try:
        assert stream.status == 200
        assert stream.ended.wait(10), "the stream outlived its token"
        assert any("token expired" in c for c in stream.comments)
    finally:
        stream.close()


def test_a_listener_whose_token_expires_is_reported_before_it_goes(relay):
    stream = Stream(relay, "?entity=scoped")
    try:
        ctl = RawWS(relay.port).start(hc_url(relay, "scoped", "listen", sb_hc_id="short-lived"),
                                      {"ServiceBusAuthorization": hc_token(relay, "scoped", ttl=1)})
        assert ctl.finish() == 101
        assert wait_until(lambda: len(stream.events) >= 4, timeout=10), stream.names()
        assert stream.names() == ["NewListenerRegistered", "EntityOnline", "ListenerClosingFromExpiredToken",
                                  "ListenerUnregistered", "EntityOffline"][:len(stream.events)]
        assert wait_until(lambda: len(stream.events) == 5, timeout=10), stream.names()
        assert stream.events[2][2]["listener"] == "short-lived"
        ctl.close()
    finally:
        stream.close()


# -- a watcher that does not read ------------------------------------------------------------

CHURN_BATCH = 20
LONG_ID = "x" * 2000  # cut by the relay (connectivity.MAX_DETAIL): events stay small


def churn(relay, rounds):
    """``rounds`` times: CHURN_BATCH raw listeners on echo register, then all go."""
    for _ in range(rounds):
        socks = [RawWS(relay.port).start(hc_url(relay, "echo", "listen", sb_hc_id=LONG_ID + str(i)),
                                         {"ServiceBusAuthorization": hc_token(relay, "echo")})
                 for i in range(CHURN_BATCH)]
        for ws in socks:
            assert ws.finish() == 101, ws.status
        for ws in socks:
            ws.close()
        wait_until(lambda: status_of(relay, "echo")["listeners"] == 0, timeout=10)


STALLED_ROUNDS = 300  # ~5 MB of events sent while the watcher does not read
RSS_BOUND = 2 << 20


def test_a_watcher_that_stops_reading_is_dropped_and_the_relay_does_not_grow(relay):
    churn(relay, 30)  # warm up: the ring full, first-time allocations made
    rss_before = relay.rss()
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", relay.port))
    stalled.sendall(("GET /$relayd/connectivity/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: %s\r\n\r\n"
                     % (relay.port, manage_token(relay))).encode())
    assert wait_until(lambda: call(relay, "GET", "connectivity")[1]["watchers"] == 1)
    dropped_before = call(relay, "GET", "connectivity")[1]["watchers_dropped"]
    _, first = call(relay, "GET", "connectivity")
    dropped_at = None
    for rounds in range(1, STALLED_ROUNDS + 1):
        churn(relay, 1)
        if dropped_at is None and call(relay, "GET", "connectivity")[1]["watchers_dropped"] > dropped_before:
            dropped_at = rounds
    rss_after = relay.rss()
    _, last = call(relay, "GET", "connectivity")
    events = int(last["last_event_id"].split("-")[1]) - int(first["last_event_id"].split("-")[1])
    print("stalled watcher dropped after %s of %d rounds (%d events); relay RSS %+d bytes"
          % (dropped_at, STALLED_ROUNDS, events, rss_after - rss_before))
    assert dropped_at is not None, "a watcher that does not read was not dropped"
    assert last["watchers"] == 0
    assert "it did not read its stream" in relay.log_text()
    assert rss_after - rss_before < RSS_BOUND, "relay RSS grew %d bytes over %d events" % (
        rss_after - rss_before, events)
    stalled.close()
