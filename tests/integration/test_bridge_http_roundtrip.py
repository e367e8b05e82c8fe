"""Small HTTP requests through relayd and ``relayd bridge -H`` (issue 10, small HTTP requests):
what their round trip depends on besides CPU, checked on real sockets.

* The bridge's WebSockets to the relay have Nagle's algorithm off: Autobahn's client applied
  its ``tcpNoDelay`` option before copying it onto the protocol, so the bridge's control
  channel kept Nagle on, and an answer written as two frames (the response, then its body)
  waited for the relay's delayed ACK -- 40 ms per request, 165 requests/s with 8 clients.
* A response and its body go to the relay as one write (:meth:`RelayedConnection.send_together`),
  byte for byte at the frame-length boundaries, both as bytes and through the relay.
* The bridge keeps its connections to the local service: many requests, few connections.
"""

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import pytest_twisted
import requests

from relayd.wire import wsframe
from tests.support.relay import Bridge, RelayProcess, write_config

WEB_CONFIG = """
[[hybrid_connections]]
path = "web"
requires_client_authorization = false
"""
# body sizes at the WebSocket length-encoding boundaries, up to the control channel's 64 KiB
SIZES = [1, 125, 126, 127, 65535, 65536]


def pattern(n):
    block = bytes(i % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


# -- Nagle -------------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_the_bridge_control_channel_has_nagle_off(relay):
    from twisted.internet import reactor
    from twisted.web import resource as web_resource

    from relayd.client.connection_string import ConnectionInfo
    from relayd.client.http import serve_resource
    from tests.support.relay import ROOT_KEY

    class Hello(web_resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            return b"hello"

    info = ConnectionInfo.from_url(relay.url, rule="root", key=ROOT_KEY)
    forwarder = await serve_resource(reactor, info, "open", Hello())
    try:
        sock = forwarder.listener.channel.transport.getHandle()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), "the control channel keeps Nagle on"
    finally:
        await forwarder.stop()


# -- a response and its body in one write ---------------------------------------------------------

class WriteRecorder:
    """A transport that records each write call (the connection has no socket for direct writes)."""

    def __init__(self):
        self.calls = []

    def write(self, data):
        assert isinstance(data, bytes), "Twisted's transports take bytes only"
        self.calls.append(data)

    def writeSequence(self, buffers):
        self.calls.append(b"".join(buffers))


def unmasked_frames(data):
    """``[(opcode, fin, payload)]`` of the masked client frames in ``data`` (whole)."""
    frames, at = [], 0
    while at < len(data):
        header, size = wsframe.parse_header(data, at)
        assert header.masked, "a client frame must be masked"
        payload = bytearray(data[at + size:at + size + header.length])
        wsframe.xor_mask(payload, header.mask)
        frames.append((header.opcode, header.fin, bytes(payload)))
        at += size + header.length
    return frames


@pytest.mark.parametrize("size", SIZES)
def test_send_together_writes_both_messages_in_one_write(size):
    from relayd.client.websocket import RelayedConnection

    conn = RelayedConnection()
    conn.transport = WriteRecorder()
    conn.state = conn.STATE_OPEN
    body = bytearray(pattern(size))
    conn.send_together('{"response":{}}', body)
    assert len(conn.transport.calls) == 1
    assert unmasked_frames(conn.transport.calls[0]) == [
        (wsframe.TEXT, True, b'{"response":{}}'), (wsframe.BINARY, True, pattern(size))]
    assert body == pattern(size), "the caller's buffer was masked in place"


# -- through the relay and a bridge -H process ----------------------------------------------------

class CountingService(ThreadingHTTPServer):
    """An HTTP/1.1 keep-alive service counting the connections it accepted."""

    daemon_threads = True

    def __init__(self):
        self.accepted = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    def get_request(self):
        conn = super().get_request()
        with self.lock:
            self.accepted += 1
        return conn


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        size = int(self.path.rsplit("/", 1)[-1])
        body = pattern(size)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http-roundtrip")
    service = CountingService()
    threading.Thread(target=service.serve_forever, daemon=True).start()
    relay = RelayProcess(tmp, write_config(tmp, extra=WEB_CONFIG))
    bridge = Bridge(tmp, relay, "-H", "web:http://127.0.0.1:%d" % service.server_address[1])
    try:
        bridge.wait("-H web.*online")
        yield relay, service
    finally:
        bridge.stop()
        relay.stop()
        service.shutdown()
        service.server_close()


def test_bodies_at_frame_boundaries_arrive_whole(web):
    relay, _ = web
    with requests.Session() as s:
        for size in SIZES:
            r = s.get("%s/web/%d" % (relay.http_url, size), timeout=20)
            assert r.status_code == 200 and r.content == pattern(size), size


def test_many_requests_reuse_few_service_connections(web):
    relay, service = web
    clients, each = 4, 50
    before = service.accepted
    failures = []

    def client():
        with requests.Session() as s:
            for _ in range(each):
                r = s.get(relay.http_url + "/web/100", timeout=20)
                if r.status_code != 200 or r.content != pattern(100):
                    failures.append((r.status_code, r.content[:100]))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:3]
    # at most one connection per request in flight, kept for the next ones
    assert service.accepted - before <= 2 * clients, (service.accepted - before, clients * each)
