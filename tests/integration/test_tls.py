"""TLS on ``ssl:`` endpoints works for the clients people use: every client that offers ALPN
(curl, ``openssl s_client -alpn``, Python's ssl with h2 + http/1.1) gets ``http/1.1``; TLS is
1.2 or later; missing, unreadable or wrong key/certificate files stop the relay at start with a
message naming the file.  Real ``twistd -n relayd`` processes on loopback."""

import os
import socket
import ssl
import subprocess
import sys

import pytest

from tests.support.relay import require_tool, twistd_path, write_config
from tests.support.tls import make_ca_and_server


def python_tls_client(relay, alpn=("h2", "http/1.1"), **versions):
    ctx = ssl.create_default_context(cafile=relay.certs["ca.pem"])
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    for name, value in versions.items():
        setattr(ctx, name, value)
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    return ctx.wrap_socket(sock, server_hostname="localhost")


def http_get(tls_sock, path="/"):
    tls_sock.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % path.encode())
    data = b""
    while b"\r\n" not in data:
        chunk = tls_sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_python_ssl_client_offering_h2_and_http11_gets_http11(tls_relay):
    with python_tls_client(tls_relay) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        assert http_get(s).startswith(b"HTTP/1.1 ")


def test_client_without_alpn_still_connects(tls_relay):
    with python_tls_client(tls_relay, alpn=None) as s:
        assert s.selected_alpn_protocol() is None
        assert http_get(s).startswith(b"HTTP/1.1 ")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_2_client_connects_and_tls_1_1_is_refused(tls_relay):
    with python_tls_client(tls_relay, maximum_version=ssl.TLSVersion.TLSv1_2) as s:
        assert s.version() == "TLSv1.2"
        assert s.selected_alpn_protocol() == "http/1.1"
    with pytest.raises(ssl.SSLError):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_relay.port), timeout=10)):
            pass
    assert tls_relay.proc.poll() is None


def test_curl_over_https(tls_relay):
    require_tool("curl", "the https client people use")
    out = subprocess.run(["curl", "-sS", "--cacert", tls_relay.certs["ca.pem"], "-o", os.devnull,
                          "-w", "%{http_code} %{http_version}", "https://localhost:%d/" % tls_relay.port],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    code, version = out.stdout.split()
    assert 200 <= int(code) < 500 and version == "1.1", out.stdout


def test_openssl_s_client_with_alpn(tls_relay):
    require_tool("openssl", "openssl s_client -alpn http/1.1")
    out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % tls_relay.port, "-alpn", "http/1.1",
                          "-CAfile", tls_relay.certs["ca.pem"], "-servername", "localhost"],
                         input="", capture_output=True, text=True, timeout=30)
    assert "ALPN protocol: http/1.1" in out.stdout, out.stdout + out.stderr
    assert "Verify return code: 0 (ok)" in out.stdout


# -- bad key and certificate files ------------------------------------------------------------

def start_failure(tmp_path, listen):
    out = subprocess.run([twistd_path(), "-n", "--pidfile=", "relayd", "--listen", listen], cwd=tmp_path,
                         env=dict(os.environ, RELAYD_DATA_DIR=str(tmp_path / "state")),
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_missing_key_file_stops_the_relay_naming_it(tmp_path):
    certs = make_ca_and_server(tmp_path)
    missing = tmp_path / "nope-key.pem"
    text = start_failure(tmp_path, "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (
        missing, certs["server-cert.pem"]))
    assert "privateKey=%s cannot be read: No such file or directory" % missing in text, text


def test_missing_certificate_file_stops_the_relay_naming_it(tmp_path):
    certs = make_ca_and_server(tmp_path)
    missing = tmp_path / "nope-cert.pem"
    text = start_failure(tmp_path, "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (
        certs["server-key.pem"], missing))
    assert "certKey=%s cannot be read: No such file or directory" % missing in text, text


def test_unreadable_key_file_stops_the_relay_naming_it(tmp_path):
    certs = make_ca_and_server(tmp_path)
    # a directory cannot be read as a file, even by root (who ignores file modes)
    unreadable = tmp_path / "key-dir.pem"
    unreadable.mkdir()
    text = start_failure(tmp_path, "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (
        unreadable, certs["server-cert.pem"]))
    assert "privateKey=%s cannot be read: Is a directory" % unreadable in text, text


def test_certificate_file_without_a_certificate(tmp_path):
    certs = make_ca_and_server(tmp_path)
    text = start_failure(tmp_path, "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (
        certs["server-key.pem"], certs["server-key.pem"]))
    assert "certKey=%s holds no PEM certificate" % certs["server-key.pem"] in text, text


def test_key_that_does_not_match_the_certificate(tmp_path):
    certs = make_ca_and_server(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_ca_and_server(tmp_path / "other")
    text = start_failure(tmp_path, "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s" % (
        other["server-key.pem"], certs["server-cert.pem"]))
    assert "does not match the certificate" in text, text


def test_bad_key_file_in_a_config_file_names_the_key(tmp_path):
    listen = '["ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s"]' % (tmp_path / "k.pem", tmp_path / "c.pem")
    config = write_config(tmp_path, listen=listen)
    out = subprocess.run([twistd_path(), "-n", "--pidfile=", "relayd", "--config", config], cwd=tmp_path,
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert "relay.listen[0]: ssl:0:" in out.stdout + out.stderr
    assert "cannot be read: No such file or directory" in out.stdout + out.stderr
