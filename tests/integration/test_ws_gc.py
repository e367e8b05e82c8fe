"""Closed connections are freed without a garbage collection (issue 8, item 15): a relay runs
in a process with the collector disabled (tests/support/gc_relay.py) and reports how many
WebSocket protocols, transports and flow-control producers are alive; after senders, accept
legs and control channels have come and gone in every way (clean close, refused handshake,
sender leaving while waiting, protocol error, ping flood), the counts go back to zero."""

import os
import select
import socket
import subprocess
import sys
import time

import pytest

from tests.support.relay import stop_process, write_config
from tests.support.rawws import Closed, RawWS, frame, hc_url, listen, pair


class GcRelay:
    def __init__(self, tmp_path):
        self.log = str(tmp_path / "relay.log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.gc_relay", write_config(tmp_path), self.log],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        self.last = None
        self.port = None
        self._next(30)
        self.host = "127.0.0.1"
        self.url = "ws://127.0.0.1:%d" % self.port
        self.http_url = "http://127.0.0.1:%d" % self.port

    def _next(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the relay exited: %s" % open(self.log).read()[-3000:])
            parts = line.split()
            if parts and parts[0] == "PORT":
                self.port = int(parts[1])
                self.last = tuple(int(x) for x in parts[3:6])
                return self.last
        raise TimeoutError("no report from the relay")

    def wait_counts(self, expected, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._next(5) == expected:
                return self.last
        return self.last

    def stop(self):
        stop_process(self.proc)


@pytest.fixture
def gc_relay(tmp_path):
    relay = GcRelay(tmp_path)
    yield relay
    relay.stop()


def test_closed_connections_are_freed_without_garbage_collection(gc_relay):
    relay = gc_relay
    assert relay.wait_counts((0, 0, 0), 5) == (0, 0, 0)
    # a relayed exchange, closed cleanly from the sender's side
    ctl, sender, leg = pair(relay, "open")
    sender.send_message(b"hello")
    assert leg.recv_message() == (2, b"hello")
    sender.send(frame(8, b"\x03\xe8bye"))
    with pytest.raises(Closed):
        leg.recv_message()
    leg.send(frame(8, b"\x03\xe8"))
    for s in (sender, leg):
        s.close()
    # a sender that leaves while waiting, and refused handshakes
    waiting = RawWS(relay.port).start(hc_url(relay, "open", "connect"))
    ctl.recv_json()
    waiting.close()
    for url in (hc_url(relay, "nowhere", "connect"), hc_url(relay, "echo", "connect")):
        s = RawWS(relay.port).start(url)
        assert s.finish() in (401, 404)
        s.close()
    # a protocol error closed by the relay, and a ping flood cut short
    ctl2, sender, leg = pair(relay, "open", ctl=ctl)
    sender.send(frame(3, b"bad"))
    with pytest.raises(Closed):
        leg.recv_message()
    for s in (sender, leg):
        s.close()
    ctl, sender, leg = pair(relay, "open", ctl=ctl)
    sender.sock.settimeout(1)
    flood = b"".join(frame(9, os.urandom(125)) for _ in range(2000))
    try:
        for _ in range(100):
            sender.sock.sendall(flood)
    except socket.timeout:
        pass
    for s in (sender, leg, ctl):
        s.close()
    # a control channel the relay closes (token expired is slow; use a second one closed by us)
    ctl = listen(relay, "echo")
    ctl.close()
    counts = relay.wait_counts((0, 0, 0), 8)
    assert counts == (0, 0, 0), "still alive after every connection closed (protocols, transports, producers): %r" % (counts,)
