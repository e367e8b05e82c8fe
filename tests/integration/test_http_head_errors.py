"""The HTTP door's own error answers to HEAD requests (issue 12 follow-up): the head a GET would
get, and no body -- a body after a HEAD's head is read by a kept-alive client as the start of the
next response.  Raw sockets against a ``twistd -n relayd`` subprocess; the exact bytes are framed
by hand."""

import socket
import time

import pytest

READ_TIMEOUT = 5.0


@pytest.fixture
def relay(shared_relay):
    """The worker's shared relay (entities echo, open, few, scoped; no listener left behind)."""
    return shared_relay


def read_until_closed(sock):
    sock.settimeout(READ_TIMEOUT)
    data = b""
    deadline = time.monotonic() + READ_TIMEOUT
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the relay did not close the connection; got %r" % data)


def read_head(sock, data=b""):
    """The first response head in the stream (up to its blank line) and the bytes after it."""
    sock.settimeout(READ_TIMEOUT)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the relay closed before a whole head: %r" % data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def status_and_length(head):
    lines = head.split(b"\r\n")
    fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
    return int(lines[0].split(b" ")[1]), int(fields[b"content-length"]), fields


def split_one_response(data):
    """(status, head, body) of the one whole response ``data`` must be, to the byte."""
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data
    status, length, _ = status_and_length(head)
    assert len(rest) == length, "after a %d head: %d bytes, Content-Length %d: %r" % (status, len(rest), length, rest)
    return status, head, rest


@pytest.mark.parametrize("target, expected", [
    ("/no-such-entity/x", 404),  # no entity at the path
    ("/open/x", 502),  # an entity with no listener
])
def test_a_head_refused_by_the_relay_gets_no_body_and_the_connection_serves_the_next_request(relay, target,
                                                                                              expected):
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=READ_TIMEOUT)
    try:
        sock.sendall(b"HEAD %s HTTP/1.1\r\nHost: relay\r\n\r\n" % target.encode())
        head, after = read_head(sock)
        status, length, fields = status_and_length(head)
        assert status == expected, head
        assert fields[b"content-type"] == b"application/json" and length > 0  # what GET would get
        assert b"connection" not in fields  # kept alive
        # the same connection: a GET, then the relay closes; every byte after the HEAD's head is its answer
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n" % target.encode())
        rest = after + read_until_closed(sock)
        got, get_head, body = split_one_response(rest)
        assert got == expected and body.startswith(b'{"error"'), rest
        assert status_and_length(get_head)[1] == length  # HEAD's Content-Length is GET's
    finally:
        sock.close()


def test_a_head_refused_with_a_close_gets_its_head_only(relay):
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=READ_TIMEOUT)
    try:
        sock.sendall(b"HEAD /open/../secret HTTP/1.1\r\nHost: relay\r\n\r\n")
        data = read_until_closed(sock)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert status_and_length(head)[0] == 400 and b"Connection: close" in head, data
        assert rest == b"", data
    finally:
        sock.close()


@pytest.mark.parametrize("target", ["/no-such-entity/x", "/open/x"])
def test_a_relay_error_to_a_request_asking_connection_close_closes_it(relay, target):
    """Found with the HEAD tests: an error raised while routing (404) kept a connection the
    client had asked to close (the client waited for the idle timeout)."""
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=READ_TIMEOUT)
    try:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n" % target.encode())
        status, head, body = split_one_response(read_until_closed(sock))
        assert status in (404, 502) and body.startswith(b'{"error"'), head
    finally:
        sock.close()
