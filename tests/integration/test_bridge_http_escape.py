"""``relayd bridge -H ENTITY:http://host:port/app`` never lets a request leave ``/app``
(issue 8, item 16): dot segments, raw or percent-encoded, get 400 from the bridge; a real
``python -m http.server`` (which normalises paths) serves a directory whose parent holds a secret."""

import json
import socket
import subprocess
import sys

import pytest
import pytest_twisted

from tests.support.net import recv_all
from tests.support.relay import RelayProcess, write_config
from tests.support.relay import Bridge

SECRET = b"TOP-SECRET-outside-the-app-dir"
ESCAPE_CONFIG = """
[[hybrid_connections]]
path = "esc"
requires_client_authorization = false
"""

# Request targets that climb out of /app once a normalising server resolves them.
ESCAPES = [
    "/esc/../secret.txt",
    "/esc/%2e%2e/secret.txt",
    "/esc/%2E%2E/secret.txt",
    "/esc/..%2fsecret.txt",
    "/esc/..%2Fsecret.txt",
    "/esc/.%2e/secret.txt",
    "/esc/%252e%252e/secret.txt",
    "/esc/sub/../../secret.txt",
    "/esc/..",
    "/esc/..\\secret.txt",
    "/esc/..%5csecret.txt",
]


def served_tree(tmp):
    """tmp/www/app/index.html (the published dir) and tmp/www/secret.txt (outside it)."""
    www = tmp / "www"
    (www / "app" / "sub").mkdir(parents=True)
    (www / "app" / "index.html").write_bytes(b"<h1>app</h1>")
    (www / "app" / "sub" / "x.txt").write_bytes(b"sub file")
    (www / "secret.txt").write_bytes(SECRET)
    return www


def start_http_server(directory):
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "-d",
                             str(directory)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port = int(proc.stdout.readline().split("port ")[1].split()[0])
    return proc, port


def raw_get(port, target):
    """One HTTP/1.1 GET with the target sent byte for byte (no client-side normalising)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET " + target.encode("latin-1") + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        reply = recv_all(s)
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


@pytest.fixture(scope="module")
def escape_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("escape")
    www = served_tree(tmp)
    server, server_port = start_http_server(www)
    relay = RelayProcess(tmp, write_config(tmp, extra=ESCAPE_CONFIG))
    bridge = Bridge(tmp, relay, "-H", "esc:http://127.0.0.1:%d/app" % server_port)
    try:
        bridge.wait("-H esc.*online")
        # the server itself does serve the secret to a dot-segment request: the threat is real
        status, _, body = raw_get(server_port, "/app/../secret.txt")
        assert status == 200 and body == SECRET
        yield relay
    finally:
        bridge.stop()
        server.terminate()
        server.wait(10)
        relay.stop()


def test_published_app_is_served(escape_setup):
    status, _, body = raw_get(escape_setup.port, "/esc/index.html")
    assert status == 200 and body == b"<h1>app</h1>"
    status, _, body = raw_get(escape_setup.port, "/esc/sub/x.txt")
    assert status == 200 and body == b"sub file"


@pytest.mark.parametrize("target", ESCAPES)
def test_dot_segments_never_leave_the_app_dir(escape_setup, target):
    status, head, body = raw_get(escape_setup.port, target)
    assert SECRET not in body
    assert status == 400, (head, body[:300])


# -- the bridge's own check, fed the targets a relay would pass on (no door in between) -------


class ControlChannel:
    """Collects what the bridge answers on its control channel."""

    def __init__(self):
        from twisted.internet import defer

        self.sent = []
        self.answered = defer.Deferred()

    def send(self, data):
        self.sent.append(data)
        if isinstance(data, str) and not self.answered.called:
            self.answered.callback(json.loads(data)["response"])

    def send_together(self, *messages):  # a response and its body, in one write
        for m in messages:
            self.send(m)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("target", ESCAPES + ["/esc/%2e%2e%2fsecret.txt", "esc/secret.txt"])
async def test_http_handler_answers_400_to_an_escaping_target(tmp_path, target):
    from types import SimpleNamespace

    from twisted.internet import reactor

    from relayd.client.http import HttpHandler
    from relayd.wire import hc

    server, port = start_http_server(served_tree(tmp_path))
    handler = HttpHandler(reactor, "http://127.0.0.1:%d/app" % port)
    handler.listener = SimpleNamespace(path="esc", info=SimpleNamespace(trust_root=None))
    try:
        channel = ControlChannel()
        handler.serve(hc.Request(None, "r1", target, "GET"), None, None, channel=channel)
        response = await channel.answered
        assert response["statusCode"] == 400, response
        expected = "absolute path starting with '/'" if not target.startswith("/") else "'..' dot segment"
        assert expected in response["statusDescription"], response
        assert not any(SECRET in (s if isinstance(s, bytes) else s.encode()) for s in channel.sent)
        # and a good target through the same handler still works
        channel = ControlChannel()
        handler.serve(hc.Request(None, "r2", "/esc/index.html", "GET"), None, None, channel=channel)
        response = await channel.answered
        assert response["statusCode"] == 200
    finally:
        await handler.pool.closeCachedConnections()
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize("size", [100, 300 * 1024])
def test_escaping_upload_is_refused_and_its_body_dropped(escape_setup, size):
    """A POST to an escaping target: 400 at once, whether its body came on the control channel
    (small) or streams over a rendezvous (large); nothing reaches the service."""
    target = "/esc/%2e%2e/secret.txt"
    with socket.create_connection(("127.0.0.1", escape_setup.port), timeout=20) as s:
        s.sendall(b"POST " + target.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n" % (escape_setup.port, size))
        try:
            s.sendall(b"b" * size)
        except OSError:
            pass  # the relay may answer and close before the whole body is sent
        reply = recv_all(s)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:300]
    assert SECRET not in reply
