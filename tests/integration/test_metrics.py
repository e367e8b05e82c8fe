"""``GET /$relayd/metrics``, ``/$relayd/healthz`` and the status' version and uptime (issue 12 item 4)
on a real ``twistd -n relayd`` with a separate ``[metrics] listen`` address, scraped with
prometheus_client's own parser over real sockets.

* Bytes relayed are counted as they flow: while 200 MB go paced through a WebSocket rendezvous,
  every scrape shows more bytes than the one before, well before the transfer ends.
* ``relayd_active_listeners`` follows listeners 0 -> 2 -> 1; listener connections and
  disconnects are counted; the rendezvous setup histogram counts each accepted rendezvous.
* HTTP requests by status, events published/dropped, connections by door and their end codes.
* A deleted entity's series disappear.
* Access: no token 401, a Listen-only token 403, the metrics address without a token 200;
  healthz without a token; status has version and uptime.
"""

import http.client
import json
import os
import socket
import struct
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

import relayd
from relayd.wire import sas
from tests.support.manage import call, manage_token, relay_of_its_own
from tests.support.rawws import RawWS, frame, hc_url, listen, pair, token
from tests.support.relay import LISTEN_KEY, PORT_DOOR_CONFIG

EXTRA = """
[[hybrid_connections]]
path = "news"
kind = "multicast"
requires_client_authorization = false
""" + PORT_DOOR_CONFIG + """
[metrics]
listen = "tcp:0:interface=127.0.0.1"
"""

TRANSFER = 200 * 1024 * 1024
CHUNK = 2 * 1024 * 1024
ZERO_KEY = b"\0\0\0\0"  # a masked frame whose payload needs no XOR (the test's CPU goes to I/O)


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    yield from relay_of_its_own(tmp_path_factory, "metrics", extra=EXTRA)


@pytest.fixture(scope="module")
def metrics_port(relay):
    return relay.door_port("relayd metrics")


def get(port, path, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type"), resp.read()
    finally:
        conn.close()


def scrape(relay):
    """{(sample name, sorted labels): value} from the relay's port, with a Manage token."""
    status, ctype, body = get(relay.port, "/$relayd/metrics", {"Authorization": manage_token(relay)})
    assert status == 200, body
    assert ctype.startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def up_bytes(relay, entity="echo"):
    return value(scrape(relay), "relayd_bytes_transferred_total", entity=entity, direction="up")


def wait_until(check, timeout=10, what="the condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("%s did not hold within %s s" % (what, timeout))
        time.sleep(0.02)


def test_bytes_increase_while_a_long_transfer_flows(relay):
    ctl, sender, leg = pair(relay)
    received = [0]
    errors = []
    expected = TRANSFER + (TRANSFER // CHUNK) * 10  # each frame: a 10-byte header from the relay

    def drain():
        try:
            leg.sock.settimeout(30)
            got = len(leg.buf)
            while got < expected:
                data = leg.sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("the leg closed after %d bytes" % got)
                got += len(data)
                received[0] = got
        except Exception as e:  # reported by the test thread
            errors.append(e)

    def send():
        try:
            payload = os.urandom(CHUNK)
            head = struct.pack("!BBQ", 0x82, 0x80 | 127, CHUNK) + ZERO_KEY
            for _ in range(TRANSFER // CHUNK):
                sender.sock.sendall(head + payload)
                time.sleep(0.02)  # paced: the transfer lasts a few seconds
        except Exception as e:
            errors.append(e)

    before = up_bytes(relay)
    reader = threading.Thread(target=drain, daemon=True)
    writer = threading.Thread(target=send, daemon=True)
    reader.start()
    writer.start()
    during = []
    try:
        while reader.is_alive() and not errors:
            counted = up_bytes(relay)
            if received[0] < expected:
                during.append(counted)
            time.sleep(0.2)
        reader.join(30)
        writer.join(30)
        assert not errors, errors
        assert received[0] == expected
        # scraped while the transfer flowed: each scrape more than the one before, some well
        # before the end (counted as the bytes flow, not when the connection closes)
        assert len(during) >= 3, during
        assert all(b > a for a, b in zip(during, during[1:])), during
        assert 0 < during[len(during) // 2] - before < TRANSFER
        after = up_bytes(relay)
        assert after - before >= TRANSFER  # the frames as read from the sender (headers too)
        samples = scrape(relay)
        assert value(samples, "relayd_active_connections", entity="echo") == 1
        assert value(samples, "relayd_door_active_connections", door="websocket") == 1
    finally:
        for s in (ctl, sender, leg):
            s.close()
    wait_until(lambda: value(scrape(relay), "relayd_active_connections", entity="echo") == 0,
               what="the connection leaving the live registry")
    # its end line (relayd.logs.log_end): door, entity, peer, close code, bytes each way, duration, tracking
    line = relay.wait_log(r"websocket echo from 127\.0\.0\.1:\d+: (\d+), (\d+) bytes up, (\d+) bytes down "
                          r"in ([\d.]+) s \(tracking ([0-9a-f-]{36})\)")
    assert int(line.group(2)) >= TRANSFER and float(line.group(4)) > 0.5
    samples = scrape(relay)
    assert value(samples, "relayd_sender_disconnects_total", entity="echo") >= 1
    assert value(samples, "relayd_door_connections_total", door="websocket") >= 1
    ends = sum(v for (name, labels), v in samples.items()
               if name == "relayd_connection_ends_total" and ("door", "websocket") in labels)
    assert ends >= 1


def test_active_listeners_follow_listeners(relay):
    def listeners():
        return value(scrape(relay), "relayd_active_listeners", entity="few")

    start = scrape(relay)
    assert ("relayd_active_listeners", (("entity", "few"),)) in start  # every entity has its series
    assert value(start, "relayd_active_listeners", entity="few") == 0
    first = listen(relay, "few")
    second = listen(relay, "few")
    try:
        wait_until(lambda: listeners() == 2, what="2 active listeners")
        first.close()
        wait_until(lambda: listeners() == 1, what="1 active listener")
        samples = scrape(relay)
        assert value(samples, "relayd_listener_connections_total", entity="few", outcome="success") \
            - value(start, "relayd_listener_connections_total", entity="few", outcome="success") == 2
        assert value(samples, "relayd_listener_disconnects_total", entity="few") \
            - value(start, "relayd_listener_disconnects_total", entity="few") == 1
        # with two listeners again, one more is over max_listeners = 2: refused, a client error
        third = listen(relay, "few")
        wait_until(lambda: listeners() == 2, what="2 active listeners again")
        refused = RawWS(relay.port).start(hc_url(relay, "few", "listen"), {"ServiceBusAuthorization": token(relay, "few")})
        assert refused.finish() == 403
        refused.close()
        third.close()
        samples = scrape(relay)
        assert value(samples, "relayd_listener_connections_total", entity="few", outcome="client_error") \
            - value(start, "relayd_listener_connections_total", entity="few", outcome="client_error") == 1
        assert value(samples, "relayd_listener_connection_requests_total", entity="few") \
            - value(start, "relayd_listener_connection_requests_total", entity="few") == 4
    finally:
        second.close()
    wait_until(lambda: listeners() == 0, what="no active listener")


def test_rendezvous_setup_histogram_counts_each_accept(relay):
    before = value(scrape(relay), "relayd_rendezvous_setup_seconds_count")
    for _ in range(3):
        for s in pair(relay):
            s.close()
    samples = scrape(relay)
    assert value(samples, "relayd_rendezvous_setup_seconds_count") - before == 3
    assert value(samples, "relayd_rendezvous_setup_seconds_bucket", le="+Inf") \
        == value(samples, "relayd_rendezvous_setup_seconds_count")
    assert value(samples, "relayd_rendezvous_setup_seconds_sum") > 0


def test_http_requests_and_events_are_counted(relay):
    before = scrape(relay)
    # no listener on "open": the relay answers 502; no entity at all: 404
    for path, status in (("/open/x", 502), ("/no-such-entity", 404), ("/open/y", 502)):
        got, _, _ = get(relay.port, path)
        assert got == status
    # an event published to a multicast entity without subscribers: 202, dropped
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
    conn.request("POST", "/news", body=b"hello", headers={"Content-Type": "text/plain"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 202
    after = scrape(relay)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("relayd_http_requests_total", status="502", outcome="server_error") == 2
    assert grew("relayd_http_requests_total", status="404", outcome="client_error") == 1
    assert grew("relayd_http_requests_total", status="202", outcome="success") == 1
    assert grew("relayd_events_total", kind="multicast", outcome="published") == 1
    assert grew("relayd_events_total", kind="multicast", outcome="dropped") == 1


def test_a_relayed_http_request_is_counted_and_logged(relay):
    """A request answered by a listener over its control channel: one http connection, its body
    bytes each way, the status; and one end line per request, relayed or answered by the relay."""
    ctl = listen(relay, "open")
    since = relay.log_end()
    before = scrape(relay)
    answer = []

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
        conn.request("POST", "/open/hello?sb-hc-token=not-logged", body=b"x" * 1000)
        resp = conn.getresponse()
        answer.append((resp.status, resp.read()))
        conn.close()

    t = threading.Thread(target=client, daemon=True)
    t.start()
    try:
        request = ctl.recv_json()["request"]
        ctl.send_message(json.dumps({"response": {"requestId": request["id"], "statusCode": 201,
                                                  "body": True}}).encode(), binary=False)
        ctl.send_message(b"y" * 300)
        t.join(10)
        assert answer == [(201, b"y" * 300)]
    finally:
        ctl.close()
    samples = wait_until(lambda: (lambda s: value(s, "relayd_active_connections", entity="open") == 0 and s)(scrape(relay)),
                         what="the request leaving the live registry")

    def grew(name, **labels):
        return value(samples, name, **labels) - value(before, name, **labels)

    assert grew("relayd_http_requests_total", status="201", outcome="success") == 1
    assert grew("relayd_sender_connections_total", entity="open", outcome="success") == 1
    assert grew("relayd_door_connections_total", door="http") == 1
    assert grew("relayd_connection_ends_total", door="http", code="201", outcome="success") == 1
    line = relay.wait_log(r"http open from 127\.0\.0\.1:\d+: 201, (\d+) bytes up, (\d+) bytes down", since=since)
    assert (int(line.group(1)), int(line.group(2))) == (1000, 300)
    # requests the relay answers itself end with a line too (no token in it)
    get(relay.port, "/no-such-entity?sb-hc-token=not-logged")
    relay.wait_log(r"http /no-such-entity from 127\.0\.0\.1:\d+: 404, 0 bytes up, 0 bytes down", since=since)
    assert "not-logged" not in relay.log_text()[since:]


def test_a_tcp_door_stream_is_counted_as_it_flows_and_logged(relay):
    """A port-mapped TCP door: the client's bytes up, the listener leg's down, while the stream is
    open; one end line when it ends."""
    port = relay.door_port("port door (tcp)")
    ctl = listen(relay, "tcp")
    since = relay.log_end()
    before = scrape(relay)
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    leg = None
    try:
        leg = RawWS(relay.port).start(ctl.recv_json()["accept"]["address"])
        assert leg.finish() == 101
        client.sendall(b"u" * 5000)
        got = 0
        while got < 5000:
            _, opcode, payload = leg.recv_frame()
            got += len(payload)
        leg.send(frame(2, b"d" * 700))
        assert recv_exactly(client, 700) == b"d" * 700
        samples = scrape(relay)  # while the stream is open

        def grew(name, **labels):
            return value(samples, name, **labels) - value(before, name, **labels)

        assert grew("relayd_bytes_transferred_total", entity="tcp", direction="up") == 5000
        assert grew("relayd_bytes_transferred_total", entity="tcp", direction="down") >= 700  # + its frame header
        assert value(samples, "relayd_active_connections", entity="tcp") == 1
        assert value(samples, "relayd_door_active_connections", door="port") == 1
        client.close()  # the client's half: the stream goes on until the listener's leg closes too
        leg.send(frame(8, struct.pack("!H", 1000)))
        line = relay.wait_log(r"port tcp from 127\.0\.0\.1:\d+: (\d+), 5000 bytes up, (\d+) bytes down",
                              since=since)
        assert line.group(1) == "1000" and int(line.group(2)) >= 700
    finally:
        for s in (client, leg, ctl):
            if s is not None:
                s.close()


def test_a_refused_tcp_door_connection_is_a_sender_client_error(relay):
    """No listener on the port door's entity: the connection is refused (closed), counted."""
    port = relay.door_port("port door (tcp)")
    before = scrape(relay)
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        client.settimeout(10)
        assert client.recv(100) == b""  # closed by the relay
    finally:
        client.close()
    samples = scrape(relay)
    assert value(samples, "relayd_sender_connections_total", entity="tcp", outcome="client_error") \
        - value(before, "relayd_sender_connections_total", entity="tcp", outcome="client_error") == 1


def recv_exactly(sock, n):
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            raise ConnectionError("closed after %d bytes" % len(out))
        out += data
    return out


def test_a_deleted_entitys_series_go_away(relay):
    assert call(relay, "PUT", "entities/brief", {"requires_client_authorization": False})[0] in (200, 201)
    ctl = listen(relay, "brief")
    try:
        wait_until(lambda: value(scrape(relay), "relayd_active_listeners", entity="brief") == 1,
                   what="the new entity's listener")
    finally:
        ctl.close()
    assert call(relay, "DELETE", "entities/brief")[0] in (200, 204)
    assert not [k for k in scrape(relay) if ("entity", "brief") in k[1]]


def test_access(relay, metrics_port):
    status, _, body = get(relay.port, "/$relayd/metrics")
    assert status == 401, body
    listen_only = sas.make_token("http://127.0.0.1:%d/" % relay.port, "listener", LISTEN_KEY, int(time.time()) + 300)
    status, _, body = get(relay.port, "/$relayd/metrics", {"Authorization": listen_only})
    assert status == 403, body
    # the separate metrics address: no token, the same exposition
    for path in ("/metrics", "/$relayd/metrics"):
        status, ctype, body = get(metrics_port, path)
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        assert {"relayd_bytes_transferred", "relayd_active_listeners", "relayd_rendezvous_setup_seconds"} <= names
    assert get(metrics_port, "/$relayd/status")[0] == 404  # nothing else there
    assert get(metrics_port, "/healthz")[:3:2] == (200, b"ok\n")


def test_healthz_and_status(relay):
    status, ctype, body = get(relay.port, "/$relayd/healthz")
    assert (status, body) == (200, b"ok\n") and ctype.startswith("text/plain")
    code, st = call(relay, "GET", "status")
    assert code == 200
    assert st["version"] == relayd.__version__
    assert 0 < st["uptime"] < 3600
    time.sleep(0.05)
    assert call(relay, "GET", "status")[1]["uptime"] > st["uptime"]
    assert set(st["traffic"]) >= {"bytes_up", "bytes_down", "connections", "connections_by_door"}
    assert json.dumps(st)  # plain JSON
