"""SOAP entities under hostile uploads (issue 8, item 13), against a ``twistd -n relayd``
subprocess over loopback: a token in the HTTP head is checked before the body is read;
envelopes whose token can only be inside them (``RelayAccessToken``) share a global byte
budget and a deadline; large envelopes are parsed without stalling other connections."""

import socket
import threading
import time

import psutil
import pytest

from relayd.wire import sas
from tests.support.relay import SEND_KEY, RelayProcess, write_config
from tests.support.net import read_response

MiB = 1 << 20
CONFIG = """
[[hybrid_connections]]
path = "secure"
kind = "soap"

[[hybrid_connections]]
path = "anon"
kind = "soap"
requires_client_authorization = false

[limits]
soap_unauthenticated_budget = 8388608
soap_unauthenticated_timeout = 2.0
"""
ENVELOPE = (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><x>%s</x>'
            b'</s:Body></s:Envelope>')


@pytest.fixture
def relay(tmp_path):
    proc = RelayProcess(tmp_path, write_config(tmp_path, extra=CONFIG))
    yield proc
    proc.stop()


def head(path, length, extra=""):
    return ("POST /%s HTTP/1.1\r\nHost: relay\r\nContent-Type: text/xml; charset=utf-8\r\n"
            "SOAPAction: \"urn:x\"\r\n%sContent-Length: %d\r\n\r\n" % (path, extra, length)).encode()


def test_header_token_is_checked_before_the_body_is_read(relay):
    bad = sas.make_token(relay.http_url + "/secure", "sender", "d3Jvbmcta2V5LWZvci10ZXN0cw==",
                          int(time.time()) + 300)
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    try:
        s.sendall(head("secure", 4 * MiB - 1024, "ServiceBusAuthorization: %s\r\n" % bad))
        answer = read_response(s, timeout=3)  # no body sent at all
        assert answer is not None, "the relay waited for the body before checking the header token"
        status, _, body = answer
        assert status == 401 and b"Fault" in body and b"signature" in body
    finally:
        s.close()


def test_envelope_token_still_wins_over_a_service_authorization_header(relay):
    """``Authorization: Bearer ...`` is the service's own header: relayd reads the envelope and
    authorises with its RelayAccessToken (here: no listener, so a 502 fault after the check)."""
    token = sas.make_token("http://relay/secure", "sender", SEND_KEY, int(time.time()) + 300)
    header = (b'<s:Header><RelayAccessToken xmlns="http://schemas.microsoft.com/netservices/2009/05/servicebus/'
              b'connect">' + token.encode().replace(b"&", b"&amp;") + b"</RelayAccessToken></s:Header><s:Body>")
    body = (ENVELOPE % b"1").replace(b"<s:Body>", header)
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    try:
        s.sendall(head("secure", len(body), "Authorization: Bearer service-token\r\n") + body)
        status, _, reply = read_response(s)
        assert status == 502 and b"Fault" in reply, reply
    finally:
        s.close()


def test_tokenless_uploads_are_bounded_in_memory_and_time(relay):
    """20 clients each send all but the last byte of a 4 MiB envelope with no token in the head
    (so the relay can only find one inside the envelope) and hold the connection."""
    proc = psutil.Process(relay.proc.pid)
    baseline = proc.memory_info().rss
    size = 4 * MiB - 1024
    payload = ENVELOPE % (b"a" * (size - len(ENVELOPE) + 2))
    assert len(payload) == size
    socks = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        s.sendall(head("secure", size))
        s.setblocking(False)
        socks.append([s, 0, b""])
    start = time.monotonic()
    peak = baseline
    closed = {}
    while len(closed) < len(socks) and time.monotonic() - start < 10:
        for i, entry in enumerate(socks):
            if i in closed:
                continue
            s, sent, got = entry
            if sent < size - 1:
                try:
                    entry[1] += s.send(payload[sent:min(size - 1, sent + 256 * 1024)])
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    closed[i] = (time.monotonic() - start, got)
                    continue
            try:
                chunk = s.recv(65536)
                if not chunk:
                    closed[i] = (time.monotonic() - start, got)
                else:
                    entry[2] += chunk
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed[i] = (time.monotonic() - start, entry[2])
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.01)
    for s, _, _ in socks:
        s.close()
    assert len(closed) == 20, "%d of 20 token-less uploads still open after 10 s" % (20 - len(closed))
    assert max(t for t, _ in closed.values()) < 2.0 + 2.5
    answers = [got.split(b" ", 2)[1] for _, got in closed.values() if got]
    assert set(answers) <= {b"503", b"408"}, answers
    assert answers.count(b"408") <= 2  # the budget admits two 4 MiB envelopes at a time
    grown = (peak - baseline) / MiB
    print("20 held token-less 4 MiB uploads: peak RSS +%.1f MiB, all closed in %.2f s"
          % (grown, max(t for t, _ in closed.values())))
    assert grown < 30, "relay RSS grew by %.0f MiB for 20 held token-less uploads" % grown


def _big_envelope():
    inner = b"<a/>" * ((4 * MiB - 2048) // 4)
    return ENVELOPE % inner


def test_large_envelope_parse_does_not_stall_other_connections(relay):
    token = sas.make_token(relay.http_url + "/anon", "sender", SEND_KEY, int(time.time()) + 300)
    body = _big_envelope()
    done = threading.Event()
    parsed = []

    def send_big():
        try:
            for _ in range(3):
                s = socket.create_connection(("127.0.0.1", relay.port), timeout=20)
                s.sendall(head("anon", len(body), "ServiceBusAuthorization: %s\r\n" % token) + body)
                parsed.append(read_response(s, timeout=20))
                s.close()
        finally:
            done.set()

    worker = threading.Thread(target=send_big)
    worker.start()
    worst = 0.0
    count = 0
    try:
        while not done.is_set():
            s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            t = time.monotonic()
            s.sendall(b"GET /open/x HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
            answer = read_response(s, timeout=10)
            worst = max(worst, time.monotonic() - t)
            count += 1
            s.close()
            assert answer is not None and answer[0] == 502
    finally:
        worker.join(60)
    # each big envelope parsed (no listener: 502 fault after the parse) ...
    assert [a[0] for a in parsed if a] == [502, 502, 502], parsed
    # ... while small requests kept being answered promptly
    print("%d small requests during 3 large parses; worst latency %.3f s" % (count, worst))
    assert count > 3
    assert worst < 0.3, "a small request waited %.2f s behind a large envelope's parse" % worst
