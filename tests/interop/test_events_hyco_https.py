"""Event distribution to Azure's npm hyco-https@1.4.5 listeners, unchanged (issue 11): two of them
and a raw HC listener subscribe to a multicast entity of a real ``twistd -n relayd`` and each
receives every one of 1,000 events, in order, published over HTTP keep-alive; the 204s the SDK
answers with are dropped by the relay."""

import os
import subprocess
import threading
import time

import pytest

from tests.integration.test_events_http import BUS_CONFIG, Publisher, Subscriber, wait_listeners
from tests.interop.test_hyco_ws import NODE_DIR, NodeListener
from tests.support.relay import ROOT_KEY, RelayProcess, require_tool, write_config

pytestmark = pytest.mark.interop

EVENTS = 1000


class NodeSubscriber(NodeListener):
    """tests/interop/node/event_subscriber.js: prints one ``EVENT ...`` line per event (read by
    a thread here; ``stop`` is the node listener's)."""

    def __init__(self, relay, path):
        self.proc = subprocess.Popen(
            ["node", "event_subscriber.js", relay.url, path, "root", ROOT_KEY], cwd=NODE_DIR,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.lines = []
        self.listening = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line == "LISTENING":
                self.listening.set()
            elif line.startswith("EVENT "):
                self.lines.append(line)

    def wait_for(self, n, timeout=60):
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.02)
        return len(self.lines)


@pytest.fixture
def relay(tmp_path):
    require_tool("node", "the hyco-https interop tests need Node.js")
    require_tool(os.path.join(NODE_DIR, "node_modules", "hyco-https"),
                 "run: cd tests/interop/node && npm ci --no-audit --no-fund")
    proc = RelayProcess(tmp_path, write_config(tmp_path, extra=BUS_CONFIG))
    yield proc
    proc.stop()


def test_hyco_https_subscribers_receive_every_event_in_order(relay):
    node = [NodeSubscriber(relay, "bus") for _ in range(2)]
    raw = Subscriber(relay, "bus")
    publisher = None
    try:
        for sub in node:
            assert sub.listening.wait(20), sub.stop()
        assert wait_listeners(relay, "bus", 3) == 3
        publisher = Publisher(relay, "bus")
        for i in range(EVENTS):
            assert publisher.post(b"event %d" % i, "text/plain", path="bus/feed")[:2] == (202, "3")
        expected = ["EVENT POST /bus/feed text/plain event %d" % i for i in range(EVENTS)]
        for sub in node:
            assert sub.wait_for(EVENTS) == EVENTS
            assert sub.lines == expected
        assert raw.wait_for(EVENTS) == EVENTS
        assert [body for _, body in raw.events] == [b"event %d" % i for i in range(EVENTS)]
        assert wait_listeners(relay, "bus", 3) == 3  # the SDK's answers cost no subscriber its channel
    finally:
        if publisher is not None:
            publisher.close()
        raw.stop()
        errors = [sub.stop() for sub in node]
    assert not any("error" in (e or "") for e in errors), errors
