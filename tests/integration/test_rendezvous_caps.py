"""Pending rendezvous are capped per entity and in all (issue 8, item 11): senders beyond the
caps get 503 with Retry-After on the WebSocket and the HTTP doors of a real ``twistd`` relay,
and the relay's memory stays bounded with many senders waiting on a listener that never accepts."""

import base64
import os
import select
import socket
import threading
import time

import pytest

from relayd.wire import sas
from tests.support.relay import ROOT_KEY, RelayProcess, write_config

MiB = 1 << 20
PER_ENTITY = 40
TOTAL = 60
RETRY_AFTER = 3
CAPS_CONFIG = """
[limits]
max_pending_rendezvous_per_entity = %d
max_pending_rendezvous = %d
rendezvous_retry_after = %d
max_header_bytes = 65536
# the listeners below read everything: let their control channels queue freely, so that only
# the rendezvous caps bound the waiting senders
control_queue_max = 268435456

[[hybrid_connections]]
path = "slow"
requires_client_authorization = false

[[hybrid_connections]]
path = "slow2"
requires_client_authorization = false
""" % (PER_ENTITY, TOTAL, RETRY_AFTER)


def upgrade(port, target, extra_headers=b""):
    key = base64.b64encode(os.urandom(16))
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
              % (port, key) + extra_headers + b"\r\n")
    return s


def read_head(s, timeout=20):
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.partition(b"\r\n\r\n")[0].decode("latin-1")


class NeverAccepts:
    """A listener control channel that reads everything (so the relay keeps offering it
    senders) and accepts none."""

    def __init__(self, relay, entity):
        token = sas.make_token("%s/%s" % (relay.http_url, entity), "root", ROOT_KEY, int(time.time()) + 300)
        from urllib.parse import quote

        self.sock = upgrade(relay.port, "/$hc/%s?sb-hc-action=listen&sb-hc-token=%s" % (entity, quote(token, safe="")))
        head = read_head(self.sock)
        assert head.startswith("HTTP/1.1 101"), head
        self.offers = 0
        self.running = True
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        self.sock.settimeout(None)
        while self.running:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                return
            if not data:
                return
            self.offers += data.count(b'"accept"')

    def close(self):
        self.running = False
        self.sock.close()


@pytest.fixture
def caps_relay(tmp_path):
    relay = RelayProcess(tmp_path, write_config(tmp_path, extra=CAPS_CONFIG))
    listeners = [NeverAccepts(relay, "slow"), NeverAccepts(relay, "slow2")]
    yield relay
    for listener in listeners:
        listener.close()
    relay.stop()


def status_and_headers(head):
    lines = head.split("\r\n")
    status = int(lines[0].split(" ", 2)[1]) if lines and lines[0].startswith("HTTP/") else None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def answered_now(socks, wait=0.3):
    """The sockets (of ``socks``) that have an answer within ``wait`` seconds."""
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(wait * 1000)]


def test_ws_and_http_senders_beyond_the_caps_get_503_with_retry_after(caps_relay):
    relay = caps_relay
    waiting = [upgrade(relay.port, "/$hc/slow?sb-hc-action=connect") for _ in range(PER_ENTITY)]
    try:
        # all of them are waiting (none has an answer)
        assert answered_now(waiting) == []
        # the next WebSocket sender on that entity: 503 with Retry-After, at once
        s = upgrade(relay.port, "/$hc/slow?sb-hc-action=connect")
        status, headers = status_and_headers(read_head(s, timeout=5))
        s.close()
        assert status == 503, headers
        assert headers.get("retry-after") == str(RETRY_AFTER)
        # an HTTP request to the same entity: 503 with Retry-After too, and a JSON reason
        h = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        h.sendall(b"GET /slow/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % relay.port)
        reply = b""
        while b"max_pending_rendezvous_per_entity" not in reply:
            chunk = h.recv(65536)
            if not chunk:
                break
            reply += chunk
        h.close()
        status, headers = status_and_headers(reply.partition(b"\r\n\r\n")[0].decode("latin-1"))
        assert status == 503 and headers.get("retry-after") == str(RETRY_AFTER), reply[:500]
        # the other entity still has room up to the global cap ...
        others = [upgrade(relay.port, "/$hc/slow2?sb-hc-action=connect") for _ in range(TOTAL - PER_ENTITY)]
        waiting += others
        assert answered_now(others) == []
        # ... and then the global cap answers
        s = upgrade(relay.port, "/$hc/slow2?sb-hc-action=connect")
        head = read_head(s, timeout=5)
        s.close()
        status, headers = status_and_headers(head)
        assert status == 503 and headers.get("retry-after") == str(RETRY_AFTER), head
        assert "max_pending_rendezvous" in head
        # a waiting sender that leaves frees a place
        waiting.pop(0).close()
        deadline = time.time() + 10
        while True:
            s = upgrade(relay.port, "/$hc/slow?sb-hc-action=connect")
            if not answered_now([s], wait=0.5):
                waiting.append(s)
                break
            s.close()
            assert time.time() < deadline, "the place of a sender that left was not freed"
    finally:
        for s in waiting:
            s.close()


def test_many_waiting_senders_with_large_headers_keep_memory_bounded(caps_relay):
    """1,200 senders with 24 KiB of headers each against a listener that never accepts."""
    relay = caps_relay
    header = b"X-Padding: " + b"p" * (24 * 1024) + b"\r\n"
    baseline = relay.rss()
    socks, refused = [], {}

    def collect(wait):
        for s in answered_now(socks, wait=wait):
            status, _ = status_and_headers(read_head(s, timeout=5))
            refused[status] = refused.get(status, 0) + 1
            socks.remove(s)
            s.close()

    try:
        for i in range(1200):
            socks.append(upgrade(relay.port, "/$hc/%s?sb-hc-action=connect" % ("slow", "slow2")[i % 2], header))
            if len(socks) % 100 == 0:
                collect(0)
        deadline = time.time() + 10
        while len(socks) > TOTAL and time.time() < deadline:
            collect(0.2)
        peak = relay.rss()
        print("1200 senders x 24 KiB headers: %d waiting, refused %r; relay RSS %.1f -> %.1f MiB"
              % (len(socks), refused, baseline / MiB, peak / MiB))
        assert peak - baseline < 24 * MiB, (baseline, peak)
        assert len(socks) == TOTAL and refused == {503: 1200 - TOTAL}
    finally:
        for s in socks:
            s.close()
