"""Hostile input on the HC door gets a clean answer, never a traceback, and a storm of refused
handshakes does not flood the log (issue 8, item 19), against a ``twistd -n relayd`` process."""

import os
import re
import time

import pytest

from tests.support.relay import SharedRelay
from tests.support.rawws import Closed, RawWS, frame, hc_url, listen


@pytest.fixture(scope="module")
def _relay_process(tmp_path_factory):
    proc = SharedRelay(tmp_path_factory.mktemp("ws-hostile"),
                       extra="\n[limits]\nrefusal_log_burst = 5\nrefusal_log_interval = 1\n")
    yield proc
    proc.stop()


@pytest.fixture
def relay(_relay_process):
    """The module's relay, lent to one test at a time; each test reads the log from where it
    ended when the test began (``since``)."""
    relay = _relay_process
    relay.check_borrowed()
    relay.since = relay.log_end()
    yield relay
    relay.check_returned()


def log_size(relay):
    return os.path.getsize(relay.log_path)


@pytest.mark.parametrize("payload", [
    b"[" * 20000 + b"]" * 20000,
    b'{"response":{"requestId":"r","statusCode":1e400,"body":false}}',
], ids=["deep-json", "statusCode-1e400"])
def test_hostile_control_messages_are_answered_cleanly(relay, payload):
    ctl = listen(relay, "echo")
    try:
        ctl.send(frame(1, payload))
        ctl.send(frame(9, b"still there?"))
        fin, opcode, data = ctl.recv_frame(timeout=5)
        assert (opcode, data) == (10, b"still there?"), "the control channel must survive a bad message"
        end = time.monotonic() + 5
        while "bad control message" not in relay.log_text()[relay.since:]:
            assert time.monotonic() < end
            time.sleep(0.05)
    finally:
        ctl.close()
    assert "Traceback" not in relay.log_text()


def test_frame_length_of_2_to_the_63_closes_the_control_channel_with_1002(relay):
    ctl = listen(relay, "echo")
    try:
        ctl.send(frame(2, b"", length=1 << 63)[:10] + b"\x01\x02\x03\x04" + b"x" * 100)
        with pytest.raises(Closed) as e:
            ctl.recv_message(timeout=5)
        assert e.value.code == 1002
    finally:
        ctl.close()
    assert "Traceback" not in relay.log_text()


def test_refusal_storm_is_logged_rate_limited(relay):
    before = log_size(relay)
    n = 300
    for _ in range(n):
        s = RawWS(relay.port).start(hc_url(relay, "echo", "connect"))  # no token: 401
        assert s.finish() == 401
        s.close()
    grown = log_size(relay) - before
    # Before: three lines and ~1.1 KB per refusal (330 KB here).  Now: the first 5 per second.
    assert grown < 30 * 1024, "the log grew by %d bytes for %d refusals" % (grown, n)
    end = time.monotonic() + 5
    while True:
        text = relay.log_text()[relay.since:]
        logged = len(re.findall(r"HC connect on \S+ from \S+ denied: 401", text))
        summarised = sum(int(c) for c in re.findall(r"HC connect: (\d+) more handshakes refused with 401", text))
        if logged + summarised == n:
            break
        assert time.monotonic() < end, (logged, summarised, text[-2000:])
        time.sleep(0.1)
    assert summarised > 0
