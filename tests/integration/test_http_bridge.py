"""``relayd bridge -H`` publishing local HTTP services through a ``twistd`` relayd, called with
python-requests: small and large bodies both ways, multi-valued headers, 100 MiB upload and
download with the relay's memory bounded, and a twisted.web Resource served in-process."""

import hashlib
import io
import subprocess
import sys
import threading
import time

import pytest
import pytest_twisted
import requests

from tests.support.relay import ROOT_KEY, RelayProcess, write_config
from tests.support.relay import Bridge

MiB = 1 << 20
HTTP_CONFIG = """
[[hybrid_connections]]
path = "site"
requires_client_authorization = false

[[hybrid_connections]]
path = "files"
requires_client_authorization = false
"""


def pattern(n):
    block = bytes(i % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http-bridge")
    relay = RelayProcess(tmp, write_config(tmp, extra=HTTP_CONFIG))
    backend = subprocess.Popen([sys.executable, "-m", "tests.support.backend"], stdout=subprocess.PIPE, text=True)
    port = int(backend.stdout.readline().split()[1])
    (tmp / "www").mkdir()
    (tmp / "www" / "page.html").write_text("<h1>static</h1>")
    static = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "-d",
                               str(tmp / "www")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    static_port = int(static.stdout.readline().split("port ")[1].split()[0])
    # the Azure connection-string form (sb:// on a loopback host means plain ws://)
    cs = "Endpoint=sb://127.0.0.1:%d/;SharedAccessKeyName=root;SharedAccessKey=%s" % (relay.port, ROOT_KEY)
    bridge = Bridge(tmp, relay, "-H", "site:http://127.0.0.1:%d" % port,
                    "-H", "files:http://127.0.0.1:%d" % static_port, connection_string=cs)
    try:
        bridge.wait("-H site.*online")
        bridge.wait("-H files.*online")
        yield relay
    finally:
        bridge.stop()
        backend.terminate()
        static.terminate()
        relay.stop()


def test_python_http_server_through_bridge(published):
    r = requests.get(published.http_url + "/files/page.html", timeout=20)
    assert r.status_code == 200 and r.text == "<h1>static</h1>"
    assert requests.get(published.http_url + "/files/missing", timeout=20).status_code == 404


def test_multi_valued_set_cookie_survives(published):
    r = requests.get(published.http_url + "/site/hello?x=1", timeout=20)
    assert r.status_code == 200 and r.text == "hello 1"
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    assert r.cookies.get("a") == "1" and r.cookies.get("b") == "2"


def test_local_502_is_not_passed_as_relay_status(published):
    r = requests.get(published.http_url + "/site/status?code=502", timeout=20)
    assert r.status_code == 500 and "Via" in r.headers


@pytest.mark.parametrize("size", [0, 100, 70_000, 5 * MiB])
def test_post_sizes(published, size):
    body = pattern(size)
    r = requests.post(published.http_url + "/site/sha", data=body, timeout=60)
    assert r.status_code == 200
    assert r.json() == {"length": size, "sha256": hashlib.sha256(body).hexdigest()}


class Pattern(io.RawIOBase):
    """100 MiB of request body generated on the fly (the test holds none of it)."""

    def __init__(self, n):
        self.left = n
        self.digest = hashlib.sha256()
        self.offset = 0

    def readable(self):
        return True

    def read(self, size=-1):
        size = min(self.left, 256 * 1024 if size is None or size < 0 else size)
        if size <= 0:
            return b""
        block = pattern(size + self.offset % 251)[self.offset % 251:]
        self.digest.update(block)
        self.left -= len(block)
        self.offset += len(block)
        return block

    def __len__(self):
        return self.left


@pytest.mark.slow
def test_100_mib_upload_and_download_with_bounded_relay_memory(published):
    baseline = published.rss()
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(published.rss())
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        n = 100 * MiB
        body = Pattern(n)
        chunks = iter(lambda: body.read(256 * 1024), b"")  # a chunked upload, streamed
        r = requests.post(published.http_url + "/site/sha", data=chunks, timeout=300)
        assert r.status_code == 200, r.text[:500]
        assert r.json() == {"length": n, "sha256": body.digest.hexdigest()}
        with requests.get(published.http_url + "/site/big?n=%d" % n, stream=True, timeout=300) as r:
            assert r.status_code == 200
            digest, got = hashlib.sha256(), 0
            for chunk in r.iter_content(1 << 20):
                digest.update(chunk)
                got += len(chunk)
        assert got == n
        assert digest.hexdigest() == hashlib.sha256(pattern(n)).hexdigest()
    finally:
        stop.set()
        t.join()
    peak = max(samples)
    print("100 MiB up+down: relay RSS %.1f -> peak %.1f MiB" % (baseline / MiB, peak / MiB))
    assert peak - baseline < 24 * MiB, (baseline, peak)


@pytest_twisted.ensureDeferred
async def test_twisted_web_resource_served_over_the_relay(relay):
    """relayd.client.http.serve_resource: a Resource in this process answers relayed requests."""
    from twisted.internet import reactor, threads
    from twisted.web import resource as web_resource

    from relayd.client.connection_string import ConnectionInfo
    from relayd.client.http import serve_resource
    from tests.support.relay import ROOT_KEY

    class Hello(web_resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            return b"resource says " + request.path

    info = ConnectionInfo.from_url(relay.url, rule="root", key=ROOT_KEY)
    forwarder = await serve_resource(reactor, info, "open", Hello())
    try:
        r = await threads.deferToThread(requests.get, relay.http_url + "/open/a/b?c=d", timeout=20)
        assert r.status_code == 200 and r.text == "resource says /a/b"
    finally:
        await forwarder.stop()
