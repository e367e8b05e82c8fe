"""Shared fixtures: a relay in this process (real loopback sockets) and a relay as a
``twistd -n relayd`` subprocess."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import pytest_twisted

ROOT_KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="
SEND_KEY = "c2VuZC1vbmx5LWtleS1mb3ItdGVzdHM="
LISTEN_KEY = "bGlzdGVuLW9ubHkta2V5LWZvci10ZXN0cw=="

BASE_CONFIG = """
[relay]
listen = {listen}
data_dir = "data"
{relay_extra}

[[rules]]
name = "root"
key = "{root}"
rights = ["Manage", "Listen", "Send"]

[[rules]]
name = "sender"
key = "{send}"
rights = ["Send"]

[[rules]]
name = "listener"
key = "{listen_key}"
rights = ["Listen"]

[[hybrid_connections]]
path = "echo"
requires_client_authorization = true

[[hybrid_connections]]
path = "open"
requires_client_authorization = false

[[hybrid_connections]]
path = "few"
max_listeners = 2

[[hybrid_connections]]
path = "scoped"
  [[hybrid_connections.rules]]
  name = "scoped-send"
  key = "c2NvcGVkLXNlbmQta2V5LWZvci10ZXN0cw=="
  rights = ["Send"]
{extra}
"""


def write_config(directory, extra="", relay_extra="", listen='["tcp:0:interface=127.0.0.1"]'):
    path = os.path.join(str(directory), "relayd.toml")
    with open(path, "w") as f:
        f.write(BASE_CONFIG.format(root=ROOT_KEY, send=SEND_KEY, listen_key=LISTEN_KEY,
                                   extra=textwrap.dedent(extra), relay_extra=relay_extra,
                                   listen=listen))
    return path


def require_tool(path_or_name, why):
    """Skip with a reason when a tool is missing locally; under CI (CI=true) fail instead."""
    import shutil

    if os.path.exists(path_or_name) or shutil.which(path_or_name):
        return
    message = "%s not found: %s" % (path_or_name, why)
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must install it: see .ci/run)")
    pytest.skip(message)


def recv_all(sock):
    """Everything ``sock`` sends until it closes."""
    parts = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(parts)
        parts.append(data)


def twistd_path():
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    return candidate if os.path.exists(candidate) else "twistd"


class RelayProcess:
    """``twistd -n relayd --config ...`` as a child process on an ephemeral loopback port."""

    def __init__(self, workdir, config_path, args=()):
        self.workdir = str(workdir)
        self.log_path = os.path.join(self.workdir, "relayd.log")
        self._log = open(self.log_path, "wb")
        cmd = [twistd_path(), "-n", "--pidfile=", "relayd", "--config", config_path, *args]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.port = self._wait_port()
        self.host = "127.0.0.1"
        self.url = "ws://127.0.0.1:%d" % self.port
        self.http_url = "http://127.0.0.1:%d" % self.port

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def _wait_port(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(r"relayd listening on [0-9.]+:(\d+)", self.log_text())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError("relayd exited with %s:\n%s" % (self.proc.returncode, self.log_text()))
            time.sleep(0.05)
        raise RuntimeError("relayd did not start listening in %ss:\n%s" % (timeout, self.log_text()))

    def rss(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def relay_proc(tmp_path):
    """A relay subprocess with the test config (entities echo, open, few, scoped)."""
    proc = RelayProcess(tmp_path, write_config(tmp_path))
    yield proc
    proc.stop()


class InProcessRelay:
    def __init__(self, service, port):
        self.service = service
        self.port = port
        self.host = "127.0.0.1"
        self.url = "ws://127.0.0.1:%d" % port
        self.http_url = "http://127.0.0.1:%d" % port


@pytest_twisted.async_yield_fixture
async def relay(tmp_path):
    """A relay running in the test's reactor, listening on an ephemeral loopback port."""
    from twisted.internet import reactor

    from relayd import config
    from relayd.tap import RelayService

    settings = config.load(write_config(tmp_path))
    service = RelayService(settings, reactor)
    service.startService()
    for _ in range(200):
        if service.ports:
            break
        await _sleep(0.01)
    assert service.ports, "relay did not start listening"
    yield InProcessRelay(service, service.ports[0].getHost().port)
    await service.stopService()
    service.store.close()


def _sleep(seconds):
    from twisted.internet import reactor, task

    return task.deferLater(reactor, seconds, lambda: None)
