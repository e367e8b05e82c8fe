"""``relayd bridge -H`` ends the local request when the relayed request is cut short
(issue 8, item 17): a client that aborts mid-upload, the relay's 413 cut-off, or the relay's
rendezvous leg dropping must not leave a local connection (and a bridge file descriptor) behind."""

import os
import socket
import threading

import pytest

from tests.support.relay import Bridge, RelayProcess, write_config
from tests.support.waits import wait_until

KiB = 1 << 10
MiB = 1 << 20
ROUNDS = 20
CUTOFF_CONFIG = """
[limits]
http_max_body = 1572864

[[hybrid_connections]]
path = "upload"
requires_client_authorization = false
"""


class HangingService:
    """A local HTTP service that reads request bodies and never answers: it counts the
    connections the bridge holds open to it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.open = 0
        self.accepted = 0
        self.received = 0
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.open += 1
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.received += len(data)
                if data.startswith(b"GET /stream"):
                    self._stream(conn)
                    break
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                self.open -= 1

    def _stream(self, conn):
        """An endless response body (a 1 GiB Content-Length), sent until the bridge hangs up."""
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\n\r\n" % (1 << 30))
        block = b"z" * (64 * KiB)
        while not self.stopped:
            conn.sendall(block)

    def stop(self):
        self.stopped = True
        self.sock.close()


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


@pytest.fixture
def cutoff_setup(tmp_path):
    service = HangingService()
    relay = RelayProcess(tmp_path, write_config(tmp_path, extra=CUTOFF_CONFIG))
    bridge = Bridge(tmp_path, relay, "-H", "upload:http://127.0.0.1:%d" % service.port)
    try:
        bridge.wait("-H upload.*online")
        yield relay, bridge, service
    finally:
        bridge.stop()
        relay.stop()
        service.stop()


def head(port, length=None, chunked=False):
    lines = ["POST /upload/sink HTTP/1.1", "Host: 127.0.0.1:%d" % port, "Content-Type: application/octet-stream"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append("Content-Length: %d" % length)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def abort_mid_upload(port, service, before):
    """Send half of a 1 MiB upload, wait until the service has some of it, then reset."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(head(port, length=1 * MiB))
    s.sendall(b"x" * (512 * KiB))
    assert wait_until(lambda: service.received > before, 20), "timed out waiting for the upload to reach the local service"
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
    s.close()


def upload_past_the_relay_limit(port):
    """A chunked upload past limits.http_max_body (1.5 MiB): the relay answers 413 and cuts it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        s.sendall(head(port, chunked=True))
        chunk = b"%x\r\n" % (64 * KiB) + b"y" * (64 * KiB) + b"\r\n"
        reply = b""
        for _ in range(40):
            try:
                s.sendall(chunk)
            except OSError:
                break
        s.settimeout(20)
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                reply += data
        except OSError:
            pass
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    finally:
        s.close()


def abort_mid_download(port):
    """Read 1 MiB of an endless download, then reset."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(b"GET /upload/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
    got = 0
    while got < MiB:
        data = s.recv(65536)
        assert data, "the download ended early"
        got += len(data)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()


@pytest.mark.parametrize("how", ["client-abort", "relay-413", "download-abort"])
def test_requests_cut_short_end_their_local_request(cutoff_setup, how):
    relay, bridge, service = cutoff_setup
    baseline_fds = open_fds(bridge.proc.pid)
    for i in range(ROUNDS):
        if how == "client-abort":
            abort_mid_upload(relay.port, service, service.received)
        elif how == "relay-413":
            upload_past_the_relay_limit(relay.port)
        else:
            abort_mid_download(relay.port)
    assert service.accepted >= ROUNDS // 2, "the uploads did not reach the local service"
    # every local request is ended: the service sees its connections close ...
    try:
        assert wait_until(lambda: service.open == 0, 15), "timed out waiting for the local connections to close"
    finally:
        print("%s x%d: local connections still open %d of %d accepted; bridge fds %d -> %d"
              % (how, ROUNDS, service.open, service.accepted, baseline_fds, open_fds(bridge.proc.pid)))
    # ... and the bridge's descriptors come back to where they were
    assert wait_until(lambda: open_fds(bridge.proc.pid) <= baseline_fds + 2, 15), "timed out waiting for the bridge's descriptors to be freed"
    # the bridge still serves: a request reaches the service afterwards
    before = service.accepted
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=20)
    s.sendall(head(relay.port, length=10) + b"0123456789")
    assert wait_until(lambda: service.accepted > before, 15), "timed out waiting for a new request to reach the service"
    s.close()
