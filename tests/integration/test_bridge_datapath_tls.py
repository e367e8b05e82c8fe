"""The bridge agents over wss:// (issue 10 item 3): TLS to the relay keeps Twisted's ordinary
read and write path (fastio declines a TLS transport) and carries the same frames: 8 MiB each
way at once through ``bridge -L`` -> relayd (TLS) -> ``bridge -R``, with a half-close, byte for
byte."""

import hashlib
import os
import socket
import threading

from tests.support.net import free_port
from tests.support.relay import Bridge


def _read_all(sock):
    digest = hashlib.sha256()
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)


def test_8_mib_each_way_through_bridges_over_wss(tls_relay, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", tls_relay.certs["ca.pem"])  # the agents trust the test CA
    tls_relay.url = "wss://127.0.0.1:%d" % tls_relay.port
    up, down = os.urandom((8 << 20) + 17), os.urandom((8 << 20) + 33)
    service = socket.socket()
    service.bind(("127.0.0.1", 0))
    service.listen(1)
    remote = Bridge(tmp_path, tls_relay, "-R", "echo:127.0.0.1:%d" % service.getsockname()[1])
    port = free_port()
    local = Bridge(tmp_path, tls_relay, "-L", "127.0.0.1:%d:echo" % port)
    got = {}

    def serve():
        service.settimeout(30)
        conn, _ = service.accept()
        conn.settimeout(60)
        with conn:
            sender = threading.Thread(target=conn.sendall, args=(down,))
            sender.start()
            got["up"] = _read_all(conn)
            sender.join(60)
            conn.shutdown(socket.SHUT_WR)

    try:
        remote.wait(r"online")
        local.wait(r"listening on")
        server = threading.Thread(target=serve)
        server.start()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
            def send():
                c.sendall(up)
                c.shutdown(socket.SHUT_WR)

            writer = threading.Thread(target=send)
            writer.start()
            got["down"] = _read_all(c)
            writer.join(60)
        server.join(60)
        assert got == {"up": hashlib.sha256(up).hexdigest(), "down": hashlib.sha256(down).hexdigest()}, (
            remote.text()[-2000:], local.text()[-2000:])
    finally:
        local.stop()
        remote.stop()
        service.close()
