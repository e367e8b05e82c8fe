"""What the HTTP relaying door refuses before routing or forwarding (issue 8, items 16 and 19):
targets that climb out of their entity with dot segments (raw or percent-encoded), malformed
``Content-Length`` values and control characters in header values -- against a ``twistd -n
relayd`` subprocess over loopback, on a first request and on a kept-alive later one."""

import socket

import pytest

from relayd.transports.http.request import HttpError, normalise_path
from tests.support.net import read_response


@pytest.fixture
def relay(shared_relay):
    """The worker's shared relay: these tests leave it as they found it."""
    return shared_relay


def ask(relay, raw, keepalive_first=False):
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    try:
        if keepalive_first:
            s.sendall(b"GET /open/x HTTP/1.1\r\nHost: relay\r\n\r\n")
            assert read_response(s)[0] == 502  # no listener; the connection stays open
        s.sendall(raw)
        return read_response(s)
    finally:
        s.close()


ESCAPES = [
    "/open/../secret.txt",
    "/open/%2e%2e/secret.txt",
    "/open/%2E%2E/secret.txt",
    "/open/..%2fsecret.txt",
    "/open/..%2Fsecret.txt",
    "/open/%2e%2e%2fsecret.txt",
    "/open/a/../../secret.txt",
    "/open/x%2F..%2F..%2Fsecret.txt",
    "/open/..",
    "/open/%2e%2e",
    "/open/../echo/x",
    "/echo/../open/x",
    "http://relay/open/../secret.txt",
]


@pytest.mark.parametrize("keepalive_first", [False, True])
@pytest.mark.parametrize("target", ESCAPES)
def test_targets_escaping_their_entity_get_400(relay, target, keepalive_first):
    answer = ask(relay, b"GET %s HTTP/1.1\r\nHost: relay\r\n\r\n" % target.encode(), keepalive_first)
    assert answer is not None and answer[0] == 400, (target, answer)
    assert b"dot segment" in answer[2]


@pytest.mark.parametrize("target", ["/open/a/../b", "/open/./b", "/open/%2e/b", "/open/a%2F..%2Fb"])
def test_dot_segments_inside_the_entity_are_routed(relay, target):
    answer = ask(relay, b"GET %s HTTP/1.1\r\nHost: relay\r\n\r\n" % target.encode())
    assert answer is not None and answer[0] == 502  # routed to 'open' (no listener connected)


def test_normalise_path():
    assert normalise_path("/open/a/../b") == "/open/b"
    assert normalise_path("/open/./b/") == "/open/b/"
    assert normalise_path("/open/a%2F..%2Fb") == "/open/b"
    assert normalise_path("/open/plain%20name") == "/open/plain%20name"  # untouched without dot segments
    with pytest.raises(HttpError) as e:
        normalise_path("/open/../x", entity_depth=1)
    assert e.value.status == 400
    with pytest.raises(HttpError):
        normalise_path("/a/b/../x", entity_depth=2)
    assert normalise_path("/a/b/c/../x", entity_depth=2) == "/a/b/x"


BAD_HEADS = [
    b"POST /open/x HTTP/1.1\r\nHost: relay\r\nContent-Length: +5\r\n\r\nhello",
    b"POST /open/x HTTP/1.1\r\nHost: relay\r\nContent-Length: 0_5\r\n\r\nhello",
    b"POST /open/x HTTP/1.1\r\nHost: relay\r\nContent-Length: 5e0\r\n\r\nhello",
    b"POST /open/x HTTP/1.1\r\nHost: relay\r\nContent-Length: \xd9\xa5\r\n\r\nhello",
    b"GET /open/x HTTP/1.1\r\nHost: relay\r\nX-Injected: a\nEvil: 1\r\n\r\n",
    b"GET /open/x HTTP/1.1\r\nHost: relay\r\nX-Injected: a\rEvil: 1\r\n\r\n",
    b"GET /open/x HTTP/1.1\r\nHost: relay\r\nX-Injected: a\x00b\r\n\r\n",
    b"GET /open/x HTTP/1.1\r\nHost: relay\r\nX-Inj\x00ected: a\r\n\r\n",
]


@pytest.mark.parametrize("keepalive_first", [False, True])
@pytest.mark.parametrize("raw", BAD_HEADS)
def test_malformed_heads_get_400(relay, raw, keepalive_first):
    answer = ask(relay, raw, keepalive_first)
    assert answer is not None and answer[0] == 400, (raw, answer)


def test_plain_content_length_still_accepted(relay):
    answer = ask(relay, b"POST /open/x HTTP/1.1\r\nHost: relay\r\nContent-Length: 5\r\n\r\nhello")
    assert answer is not None and answer[0] == 502
