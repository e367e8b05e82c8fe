"""HTTP request relaying: Azure's npm hyco-https@1.4.5 listener behind a real ``twistd -n relayd``,
called with python-requests (and curl)."""

import hashlib
import os
import socket
import subprocess
import time

import pytest
import requests

from relayd.wire import sas
from tests.support.net import recv_all
from tests.support.relay import ROOT_KEY, SEND_KEY, RelayProcess, require_tool, write_config
from tests.interop.test_hyco_ws import NODE_DIR, NodeListener

pytestmark = pytest.mark.interop

HTTP_CONFIG = """
[[hybrid_connections]]
path = "web"
requires_client_authorization = false

[[hybrid_connections]]
path = "secureweb"

[[hybrid_connections]]
path = "quick"
requires_client_authorization = false
response_timeout = 2
"""


class HttpsListener(NodeListener):
    def __init__(self, base, path, env):
        self.proc = subprocess.Popen(
            ["node", "https_listener.js", base, path, "root", ROOT_KEY], cwd=NODE_DIR, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )


@pytest.fixture(scope="module")
def http_relay(tmp_path_factory):
    require_tool("node", "the hyco-https interop tests need Node.js")
    require_tool(os.path.join(NODE_DIR, "node_modules", "hyco-https"),
                 "run: cd tests/interop/node && npm ci --no-audit --no-fund")
    tmp = tmp_path_factory.mktemp("http-relay")
    relay = RelayProcess(tmp, write_config(tmp, extra=HTTP_CONFIG,
                                           relay_extra="[limits]\nhttp_max_body = 209715200\n"))
    listeners = [HttpsListener(relay.url, path, dict(os.environ)) for path in ("web", "secureweb", "quick")]
    try:
        for listener in listeners:
            listener.wait_listening()
        yield relay
    finally:
        errors = [listener.stop() for listener in listeners]
        relay.stop()
        print("listener stderr:", "\n".join(e[-2000:] for e in errors if e))


def pattern(n):
    block = bytes(i % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def test_get_small_over_control_channel(http_relay):
    r = requests.get(http_relay.http_url + "/web/hello?x=1&sb-hc-token=ignored", timeout=20)
    assert r.status_code == 200 and r.text == "hello 1"
    assert r.headers["X-Seen-Via"].endswith("1.1 127.0.0.1:%d" % http_relay.port)  # relay added Via
    assert "1.1" in r.headers["Via"]  # the response came from the listener through the relay
    assert r.cookies.get("a") == "1"


@pytest.mark.parametrize("size", [70_000, 5_000_000])
def test_get_large_response_over_rendezvous(http_relay, size):
    r = requests.get(http_relay.http_url + "/web/big?n=%d" % size, timeout=60)
    assert r.status_code == 200 and len(r.content) == size and r.content == pattern(size)


@pytest.mark.parametrize("size", [0, 10, 60_000, 70_000, 3_000_000])
def test_post_bodies(http_relay, size):
    body = os.urandom(size)
    r = requests.post(http_relay.http_url + "/web/echo", data=body, timeout=60)
    assert r.status_code == 200
    assert r.headers["X-Body-Sha256"] == hashlib.sha256(body).hexdigest()
    assert r.content == body


def test_chunked_upload_goes_by_rendezvous(http_relay):
    chunks = [os.urandom(1000) for _ in range(50)]
    r = requests.post(http_relay.http_url + "/web/echo", data=iter(chunks), timeout=60)
    assert r.status_code == 200 and r.content == b"".join(chunks)


def test_keep_alive_session_reuses_connection(http_relay):
    with requests.Session() as s:
        for i in range(5):
            r = s.post(http_relay.http_url + "/web/echo", data=os.urandom(80_000), timeout=30)
            assert r.status_code == 200
            r = s.get(http_relay.http_url + "/web/hello?x=%d" % i, timeout=30)
            assert r.text == "hello %d" % i


def test_head_and_empty_body_frame_after_body_false(http_relay):
    # hyco-https answers HEAD with "body": false followed by an empty binary frame
    for _ in range(3):
        r = requests.head(http_relay.http_url + "/web/hello?x=1", timeout=20)
        assert r.status_code == 200 and r.content == b""
    assert requests.get(http_relay.http_url + "/web/hello?x=2", timeout=20).text == "hello 2"


def _raw_exchange(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
        c.sendall(request)
        return recv_all(c)


def test_http10_client_gets_a_close_delimited_body(http_relay):
    # (the Host header builds the rendezvous address when public_url is not set)
    host = b"127.0.0.1:%d" % http_relay.port
    reply = _raw_exchange(http_relay.port, b"GET /web/big?n=70000 HTTP/1.0\r\nHost: %s\r\n\r\n" % host)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
    assert body == pattern(70000)


def test_expect_100_continue_is_answered_by_the_relay(http_relay):
    body = os.urandom(70_000)
    with socket.create_connection(("127.0.0.1", http_relay.port), timeout=20) as c:
        c.sendall(b"POST /web/echo HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n" % (http_relay.port, len(body)))
        assert c.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        c.sendall(body)
        data = recv_all(c)
    assert data.startswith(b"HTTP/1.1 200")
    assert b"x-body-sha256: " + hashlib.sha256(body).hexdigest().encode() in data.lower()


def test_curl_get(http_relay):
    require_tool("curl", "curl is used as a third-party HTTP client")
    out = subprocess.run(["curl", "-sS", "-i", http_relay.http_url + "/web/hello?x=curl"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("HTTP/1.1 200") and out.stdout.endswith("hello curl")


def test_errors(http_relay):
    base = http_relay.http_url
    r = requests.get(base + "/nothing-here", timeout=20)
    assert r.status_code == 404 and "no hybrid connection" in r.json()["error"]["message"]
    r = requests.get(base + "/secureweb/hello", timeout=20)
    assert r.status_code == 401
    listen_only = sas.make_token(base + "/secureweb", "listener", "bGlzdGVuLW9ubHkta2V5LWZvci10ZXN0cw==",
                                  int(time.time()) + 60)
    r = requests.get(base + "/secureweb/hello", headers={"ServiceBusAuthorization": listen_only}, timeout=20)
    assert r.status_code == 403
    good = sas.make_token(base + "/secureweb", "sender", SEND_KEY, int(time.time()) + 60)
    r = requests.get(base + "/secureweb/hello?x=ok", headers={"Authorization": good}, timeout=20)
    assert r.status_code == 200 and r.text == "hello ok"
    r = requests.get(base + "/echo/anything", timeout=20)  # an entity with no listener (and auth off? no: 401)
    assert r.status_code == 401
    r = requests.get(base + "/open/x", timeout=20)  # anonymous entity, no listener
    assert r.status_code == 502
    r = requests.get(base + "/quick/slow?ms=5000", timeout=20)  # response_timeout = 2 s
    assert r.status_code == 504
    r = requests.get(base + "/web/hello", headers={"X-Big": "x" * 40_000}, timeout=20)
    assert r.status_code == 431
    with socket.create_connection(("127.0.0.1", http_relay.port), timeout=20) as sock:
        sock.sendall(b"POST /web/echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (300 * 2**20))
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413 ") and b"larger than the relay's limit" in reply
    r = requests.request("CONNECT", base + "/web/x", timeout=20)
    assert r.status_code == 405
