"""A subscriber's bounded outgoing queue over real sockets (issue 11, Deliver 4): a
``twistd -n relayd`` subprocess, a raw WebSocket subscriber that stops reading, another that
reads everything (:class:`tests.integration.test_events_http.Subscriber`), and a sustained
publisher -- a raw WebSocket publishing channel (blocking sends with a deadline: it would
time out if the relay stopped reading it) or keep-alive HTTP.  The stalled subscriber is cut
by ``limits.subscriber_queue_messages`` with small events and by
``limits.subscriber_queue_bytes`` with large ones; the other gets every event in order; the
relay's RSS stays bounded while 2,000 events of 16 KiB go by."""

import socket
import time

import psutil
import pytest

from tests.integration.test_events_http import Publisher, Subscriber, wait_listeners
from tests.integration.test_events_websocket import publisher as ws_publisher
from tests.support.rawws import RawWS, hc_url, token
from tests.support.relay import RelayProcess, relay_status, write_config

QUEUE_MESSAGES = 200
QUEUE_BYTES = 256 * 1024
CONFIG = """
[[hybrid_connections]]
path = "qmsg"
kind = "multicast"

[[hybrid_connections]]
path = "qbytes"
kind = "multicast"

[limits]
subscriber_queue_messages = %d
subscriber_queue_bytes = %d
control_stall_timeout = 120
""" % (QUEUE_MESSAGES, QUEUE_BYTES)
CUT = r"subscriber \S+ on %s fell behind .*limits\.%s reached"


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("queue-bounds-relay")
    proc = RelayProcess(workdir, write_config(workdir, extra=CONFIG))
    yield proc
    proc.stop()


def stalled_subscriber(relay, path):
    """A raw HC listener with a small receive buffer that never reads after its handshake."""
    ws = RawWS.__new__(RawWS)
    ws.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws.sock.settimeout(10)
    ws.sock.connect(("127.0.0.1", relay.port))
    ws.buf, ws.status = b"", None
    ws.start(hc_url(relay, path, "listen"), {"ServiceBusAuthorization": token(relay, path)})
    assert ws.finish() == 101
    return ws


def cut_logged(relay, path, limit, since):
    import re

    return re.search(CUT % (path, limit), relay.log_text()[since:]) is not None


def test_small_events_cut_a_stalled_subscriber_at_the_message_bound(relay):
    stalled = stalled_subscriber(relay, "qmsg")
    fast = Subscriber(relay, "qmsg")
    pub = None
    try:
        assert wait_listeners(relay, "qmsg", 2) == 2
        start = relay.log_end()
        cut_before = relay_status(relay)["events"]["multicast"]["cut"]
        pub = ws_publisher(relay, "qmsg")
        assert pub.status == 101
        pub.sock.settimeout(10)  # a send the relay does not take within 10 s fails the test
        sent = 0
        while not cut_logged(relay, "qmsg", "subscriber_queue_messages", start):
            assert sent < 60000, "the stalled subscriber was never cut"
            for _ in range(500):
                pub.send_message(b"%06d" % sent + b"." * 58)
                sent += 1
        for _ in range(500):  # the publisher goes on after the cut
            pub.send_message(b"%06d" % sent + b"." * 58)
            sent += 1
        assert fast.wait_for(sent) == sent, fast.error
        assert [body[:6] for _, body in fast.events] == [b"%06d" % i for i in range(sent)]
        assert fast.closed is None
        assert wait_listeners(relay, "qmsg", 1) == 1
        assert relay_status(relay)["events"]["multicast"]["cut"] == cut_before + 1
        assert not cut_logged(relay, "qmsg", "subscriber_queue_bytes", start)
        print("cut by the message bound after %d events of 64 bytes were published" % sent)
    finally:
        if pub is not None:
            pub.close()
        stalled.close()
        fast.stop()


def test_large_events_cut_a_stalled_subscriber_at_the_byte_bound_and_rss_stays_bounded(relay):
    stalled = stalled_subscriber(relay, "qbytes")
    fast = Subscriber(relay, "qbytes")
    publisher = Publisher(relay, "qbytes")
    process = psutil.Process(relay.proc.pid)
    try:
        assert wait_listeners(relay, "qbytes", 2) == 2
        start = relay.log_end()
        event = b"e" * 16384
        delivered = []
        rss_before = None
        for i in range(2000):
            status, n, _ = publisher.post(b"%06d" % i + event)
            assert status == 202
            delivered.append(int(n))
            if i == 20:
                rss_before = process.memory_info().rss
        # 32 MiB published while one subscriber reads nothing: the relay holds at most its
        # bounded queue (subscriber_queue_bytes) and write window for it, then nothing
        growth = process.memory_info().rss - rss_before
        print("relay RSS growth over 2,000 events of 16 KiB with a stalled subscriber: %d KiB; cut after "
              "event %d" % (growth >> 10, delivered.index(1)))
        assert growth < 8 << 20, growth
        assert delivered[0] == 2 and delivered[-1] == 1, delivered[:3] + delivered[-3:]
        assert fast.wait_for(2000) == 2000, fast.error
        assert [body[:6] for _, body in fast.events] == [b"%06d" % i for i in range(2000)]
        relay.wait_log(CUT % ("qbytes", "subscriber_queue_bytes"), since=start)
        assert not cut_logged(relay, "qbytes", "subscriber_queue_messages", start)
        assert wait_listeners(relay, "qbytes", 1) == 1
    finally:
        publisher.close()
        stalled.close()
        fast.stop()


def test_a_stalled_subscriber_is_closed_with_the_documented_reason(relay):
    """The close frame comes after what the relay's window holds: a subscriber that reads again
    finds the events, then 1008 with the reason naming the limit."""
    stalled = stalled_subscriber(relay, "qbytes")
    publisher = Publisher(relay, "qbytes")
    try:
        assert wait_listeners(relay, "qbytes", 1) == 1
        start = relay.log_end()
        i = 0
        deadline = time.monotonic() + 60
        while not cut_logged(relay, "qbytes", "subscriber_queue_bytes", start):
            assert time.monotonic() < deadline
            assert publisher.post(b"%06d" % i + b"x" * 32768)[0] == 202
            i += 1
        got = []
        while True:
            try:
                opcode, payload = stalled.recv_message(timeout=10)
            except Exception as e:  # Closed
                closed = e
                break
            if opcode == 2:
                got.append(payload[:6])
        assert (closed.code, closed.reason) == (
            1008, "subscriber fell behind: over limits.subscriber_queue_bytes bytes unread; keep reading")
        assert got == [b"%06d" % n for n in range(len(got))]  # in order, none skipped before the cut
    finally:
        publisher.close()
        stalled.close()
