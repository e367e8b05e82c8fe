"""The lean HTTP/1.1 client ``relayd bridge -H`` calls its local service with for the requests
of its control channel (relayd/client/http_local.py), against a scripted service on a raw
socket, through a ``twistd`` relay and a ``relayd bridge`` process: every response framing
(chunked, to the close, HEAD, 204, 304, a 100 Continue first), headers kept, a broken answer
turned into 503, and a kept connection the service closed retried on a new one."""

import socket
import threading

import pytest
import requests

from tests.support.relay import Bridge, RelayProcess, write_config

CONFIG = """
[[hybrid_connections]]
path = "svc"
requires_client_authorization = false
"""

ANSWERS = {
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
                b"5\r\nhello\r\n1;ext=1\r\n \r\n7\r\nchunked\r\n0\r\nX-Trailer: t\r\n\r\n",
    "/to-the-close": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close",
    "/no-content": b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n",
    "/not-modified": b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
    "/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/cookies": b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 3\r\n\r\nyum",
    "/garbage": b"THIS IS NOT HTTP\r\n\r\n",
    "/status-099": b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
    "/bare-lf": b"HTTP/1.1 200 OK\r\nX-A: 1\nX-B: 2\r\nContent-Length: 0\r\n\r\n",
    "/bad-chunks": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnope\r\n0\r\n\r\n",
    "/then-close": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbye!",
}
CLOSES_AFTER = {"/to-the-close", "/garbage", "/status-099", "/bare-lf", "/bad-chunks", "/then-close"}


class ScriptedService:
    """Answers each request with ANSWERS[path] (HEAD: the head of /head's answer only)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.requests = []
        self.raw_heads = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ")
                headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
                length = int(headers.get("content-length", "0"))
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                with self.lock:
                    self.requests.append((method, target, headers, body))
                    self.raw_heads.append(head)
                if method == "HEAD":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Head: yes\r\n\r\n")
                    continue
                conn.sendall(ANSWERS[target])
                if target in CLOSES_AFTER:
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.sock.close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http-local-client")
    service = ScriptedService()
    relay = RelayProcess(tmp, write_config(tmp, extra=CONFIG))
    bridge = Bridge(tmp, relay, "-H", "svc:http://127.0.0.1:%d" % service.port)
    try:
        bridge.wait("-H svc.*online")
        yield relay.http_url + "/svc", service
    finally:
        bridge.stop()
        relay.stop()
        service.stop()


def test_chunked_body_with_extensions_and_trailers(svc):
    url, _ = svc
    r = requests.get(url + "/chunked", timeout=20)
    assert r.status_code == 200 and r.content == b"hello chunked"
    assert r.headers["Content-Type"] == "text/plain"


def test_body_to_the_close(svc):
    url, _ = svc
    r = requests.get(url + "/to-the-close", timeout=20)
    assert r.status_code == 200 and r.content == b"until the close"


@pytest.mark.parametrize("path, status, header", [
    ("/no-content", 204, ("X-Kind", "none")), ("/not-modified", 304, ("ETag", '"v1"'))])
def test_answers_without_a_body(svc, path, status, header):
    url, _ = svc
    with requests.Session() as s:
        for _ in range(3):  # the connection is kept and stays in step
            r = s.get(url + path, timeout=20)
            assert r.status_code == status and r.content == b""
            assert r.headers[header[0]] == header[1]


def test_head_gets_the_head_only(svc):
    url, _ = svc
    with requests.Session() as s:
        for _ in range(3):
            r = s.head(url + "/anything", timeout=20)
            assert r.status_code == 200 and r.headers["X-Head"] == "yes" and r.content == b""
        assert s.get(url + "/cookies", timeout=20).content == b"yum"  # and the next one is whole


def test_a_100_continue_is_skipped(svc):
    url, _ = svc
    r = requests.get(url + "/continue", timeout=20)
    assert r.status_code == 200 and r.content == b"ok"


def test_multi_valued_headers_and_a_small_post(svc):
    url, service = svc
    r = requests.get(url + "/cookies", timeout=20)
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    r = requests.post(url + "/cookies", data=b"x" * 1000, headers={"X-Mine": "1"}, timeout=20)
    assert r.status_code == 200
    method, target, headers, body = service.requests[-1]
    assert (method, target, body) == ("POST", "/cookies", b"x" * 1000)
    assert headers["x-mine"] == "1" and headers["content-length"] == "1000"


@pytest.mark.parametrize("path", ["/garbage", "/status-099", "/bare-lf", "/bad-chunks"])
def test_a_broken_answer_is_a_503(svc, path):
    url, _ = svc
    r = requests.get(url + path, timeout=20)
    if path == "/bad-chunks":  # the head was good: it went out; the body stops short
        assert r.status_code in (200, 503)
    else:
        assert r.status_code == 503
        assert "cannot reach its local service" in r.reason


def test_kept_connections_the_service_closed_are_retried(svc):
    url, service = svc
    with requests.Session() as s:
        for _ in range(20):
            r = s.get(url + "/then-close", timeout=20)
            assert r.status_code == 200 and r.content == b"bye!"


def test_header_names_reach_the_service_as_the_sender_wrote_them(svc):
    """The whole request is written as it came (Twisted's Agent rewrote x-lower-case as
    X-Lower-Case), in the sender's order, with the framing the bridge adds."""
    url, service = svc
    r = requests.get(url + "/cookies", headers={"x-lower-case": "1", "X-UPPER": "2"}, timeout=20)
    assert r.status_code == 200
    head = service.raw_heads[-1].decode("latin-1").split("\r\n")
    assert head[0] == "GET /cookies HTTP/1.1"
    names = [line.split(":", 1)[0] for line in head[1:]]
    assert "x-lower-case" in names and "X-UPPER" in names, names
    assert names.index("x-lower-case") < names.index("X-UPPER")
