"""The management API (``/$relayd/``) authenticates from the request head and caps bodies before
reading them (issue 8, item 14), against a ``twistd -n relayd`` subprocess over loopback."""

import json
import socket
import time

import pytest

from relayd.wire import sas
from tests.support.relay import ROOT_KEY, RelayProcess, write_config
from tests.support.net import read_response

BIG = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("manage-limits")
    proc = RelayProcess(tmp, write_config(tmp))
    yield proc
    proc.stop()


def token(relay):
    return sas.make_token(relay.http_url + "/", "root", ROOT_KEY, int(time.time()) + 300)


def connect(relay):
    return socket.create_connection(("127.0.0.1", relay.port), timeout=5)


def send_head(relay, head):
    s = connect(relay)
    s.sendall(head.encode("latin-1"))
    return s


def test_tokenless_upload_is_refused_before_its_body_is_read(relay):
    s = send_head(relay, "PUT /$relayd/entities/x HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                         "Content-Length: %d\r\n\r\n" % BIG)
    try:
        s.sendall(b"{" * 65536)  # a first piece of the 200 MB; the rest is never needed
        start = time.monotonic()
        answer = read_response(s, timeout=5)
        assert answer is not None, "no answer to a token-less 200 MB upload without its body"
        status, head, body = answer
        assert status == 401
        assert b"Connection: close" in head
        assert "Manage" in json.loads(body)["error"]["message"]
        assert time.monotonic() - start < 2
        # and the relay closes the connection rather than reading the rest
        s.settimeout(5)
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass
    finally:
        s.close()
    assert "entity x created" not in relay.log_text()


def test_bad_token_is_refused_from_the_head(relay):
    s = send_head(relay, "PUT /$relayd/entities/x HTTP/1.1\r\nHost: relay\r\nAuthorization: SharedAccessSignature "
                         "sr=x&sig=bad&se=1&skn=root\r\nContent-Length: %d\r\n\r\n" % BIG)
    try:
        answer = read_response(s, timeout=5)
        assert answer is not None and answer[0] in (401, 403)
    finally:
        s.close()


def test_oversized_body_gets_413_before_it_is_read(relay):
    s = send_head(relay, "PUT /$relayd/entities/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: %s\r\n"
                         "Content-Length: %d\r\n\r\n" % (relay.port, token(relay), BIG))
    try:
        answer = read_response(s, timeout=5)
        assert answer is not None and answer[0] == 413
        assert "65536 bytes" in json.loads(answer[2])["error"]["message"]
    finally:
        s.close()


def test_oversized_chunked_body_gets_413_and_the_connection_closes(relay):
    s = send_head(relay, "PUT /$relayd/entities/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: %s\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n" % (relay.port, token(relay)))
    try:
        chunk = b"a" * 16384
        answer = None
        for _ in range(20):  # 320 KiB at most
            try:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = read_response(s, timeout=5)
        assert answer is not None and answer[0] == 413
    finally:
        s.close()


def test_management_connections_serve_one_request(relay):
    """A kept-alive management connection would let later requests skip the checks made on the
    head: the relay answers ``Connection: close`` and closes."""
    s = send_head(relay, "GET /$relayd/status HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: %s\r\n\r\n"
                  % (relay.port, token(relay)))
    try:
        status, head, body = read_response(s, timeout=5)
        assert status == 200 and "entities" in json.loads(body)
        assert b"connection: close" in head.lower()
        # a second, token-less request with a large body on the same connection is never read
        try:
            s.sendall(b"PUT /$relayd/entities/y HTTP/1.1\r\nHost: relay\r\nContent-Length: %d\r\n\r\n" % BIG)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(5)
        try:
            rest = s.recv(65536)
        except ConnectionResetError:
            rest = b""
        assert rest == b""
    finally:
        s.close()


def test_authenticated_management_still_works(relay):
    body = b'{"requires_client_authorization": true}'
    s = send_head(relay, "PUT /$relayd/entities/made HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: %s\r\n"
                         "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                  % (relay.port, token(relay), len(body)))
    try:
        s.sendall(body)
        status, head, reply = read_response(s, timeout=5)
        assert status in (200, 201), reply
        assert json.loads(reply)["path"] == "made"
    finally:
        s.close()
