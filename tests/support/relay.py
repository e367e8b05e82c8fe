"""The test relay: its configuration (keys and entities every test may use), the relay as a
``twistd -n relayd`` subprocess (:class:`RelayProcess`) and ``relayd bridge`` as one (:class:`Bridge`)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

from tests.support.waits import file_reader, wait_for_text

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


def require(ok, why, module_level=False):
    """The one way a test gives up for want of something on the machine: skip with ``why``
    locally; under CI (CI=true), where .ci/run installs everything, fail instead."""
    import pytest  # here, not at the top: bench/ uses this module and needs no pytest

    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(why + " (CI must provide it: see .ci/run)")
    pytest.skip(why, allow_module_level=module_level)


def require_tool(path_or_name, why):
    """Skip with a reason when a tool is missing locally; under CI (CI=true) fail instead."""
    found = os.path.exists(path_or_name) or shutil.which(path_or_name)
    require(found, "%s not found: %s" % (path_or_name, why))


def stop_process(proc, timeout=10):
    """SIGTERM ``proc``; SIGKILL it if it has not exited within ``timeout`` seconds; reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def twistd_path():
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    return candidate if os.path.exists(candidate) else "twistd"


class RelayProcess:
    """``twistd -n relayd --config ...`` as a child process on an ephemeral loopback port."""

    def __init__(self, workdir, config_path, args=(), preexec_fn=None):
        self.workdir = str(workdir)
        self.log_path = os.path.join(self.workdir, "relayd.log")
        self._log = open(self.log_path, "wb")
        cmd = [twistd_path(), "-n", "--pidfile=", "relayd", "--config", config_path, *args]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=preexec_fn)
        try:
            self.port = self._wait_port()
        except BaseException:
            self.stop()  # never leave a relay running that the caller has no handle on
            raise
        self.host = "127.0.0.1"
        self.url = "ws://127.0.0.1:%d" % self.port
        self.http_url = "http://127.0.0.1:%d" % self.port

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, pattern, timeout=30, since=0):
        """The first match of ``pattern`` in the relay's log (from character ``since`` on: see
        :meth:`log_end`), waiting up to ``timeout`` seconds (fails at once when the relay has
        exited)."""
        return wait_for_text(lambda: self.log_text()[since:], pattern, self.proc, timeout)

    def log_end(self):
        """Where the log ends now: ``wait_log(..., since=relay.log_end())`` waits for what
        comes after (a shared relay's log has other tests' lines before)."""
        return len(self.log_text())

    def door_port(self, door, timeout=20):
        """The port of the TCP door the relay logs as ``DOOR listening on``, e.g.
        ``port door (redis)`` or ``nettcp door (routed by Via)``."""
        return int(self.wait_log(r"%s listening on [0-9.]+:(\d+)" % re.escape(door), timeout).group(1))

    def _wait_port(self, timeout=30):
        return int(self.wait_log(r"relayd listening on [0-9.]+:(\d+)", timeout).group(1))

    def rss(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self):
        stop_process(self.proc)
        self._log.close()


def lasting_state(status):
    """What of a status must come back as it was after a test: not the uptime, nor the bytes
    relayed so far (they only grow); the live connections must."""
    status = dict(status, traffic=dict(status.get("traffic", {})))
    status.pop("uptime", None)
    for counter in ("bytes_up", "bytes_down"):
        status["traffic"].pop(counter, None)
    return status


def relay_status(relay, timeout=10):
    """The relay's ``GET /$relayd/status`` (entities, listeners, pending_rendezvous), signed
    with the root key."""
    import json
    import urllib.request

    from relayd.wire import sas

    base = "http://127.0.0.1:%d" % relay.port  # over TLS too: the token is for the http:// form
    token = sas.make_token(base + "/", "root", ROOT_KEY, int(time.time()) + 300)
    context = getattr(relay, "ssl_context", None)
    url = "%s://127.0.0.1:%d/$relayd/status" % ("https" if context else "http", relay.port)
    request = urllib.request.Request(url, headers={"Authorization": token})
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        return json.loads(response.read())


class SharedRelay(RelayProcess):
    """One ``twistd -n relayd`` with the test config for many tests in a row (one per test
    worker): starting a relay costs more CPU than most tests that use it.  A test borrows it
    through the ``shared_relay`` fixture and must leave it as it found it -- the same entities,
    no listener, no pending rendezvous, still running -- which :meth:`check_returned` waits
    for (deadline ``RETURN_DEADLINE``) after every test, so that the next test starts clean.
    A test that changes the relay (entities, limits) or reads its log from the start uses a
    relay of its own (``relay_proc``)."""

    RETURN_DEADLINE = 15  # seconds for a test's listeners and legs to be gone from the relay

    def __init__(self, workdir, certs=None, extra=""):
        """``certs`` (from :func:`tests.support.tls.make_ca_and_server`): listen with TLS;
        ``extra``: more config (entities, TCP doors), as for :func:`write_config`."""
        self.certs = certs
        self.ssl_context = None
        listen = '["tcp:0:interface=127.0.0.1"]'
        if certs is not None:
            import ssl

            listen = '["ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s"]' % (
                certs["server-key.pem"], certs["server-cert.pem"])
            self.ssl_context = ssl.create_default_context(cafile=certs["ca.pem"])
            self.ssl_context.check_hostname = False  # the certificate names localhost
        super().__init__(workdir, write_config(workdir, listen=listen, extra=extra))
        self.clean = lasting_state(relay_status(self))

    def borrowed(self):
        """For a function-scoped fixture: ``yield from relay.borrowed()`` lends the relay to one
        test and checks that it came back as it was lent."""
        self.check_borrowed()
        yield self
        self.check_returned()

    def check_borrowed(self):
        assert self.proc.poll() is None, "the shared relay exited (%s):\n%s" % (
            self.proc.returncode, self.log_text()[-3000:])

    def check_returned(self):
        """Wait until the relay is as the test found it; fail naming what is left."""
        self.check_borrowed()
        deadline = time.monotonic() + self.RETURN_DEADLINE
        while True:
            status = lasting_state(relay_status(self))
            if status == self.clean:
                return
            if time.monotonic() > deadline:
                raise AssertionError("the test left the shared relay changed: %s, not %s" % (status, self.clean))
            time.sleep(0.05)


class Bridge:
    """``relayd bridge`` as a subprocess: credentials as --url/--rule/--key, a connection string
    (-x) or nothing at all (when ``args`` has --config)."""

    def __init__(self, tmp_path, relay, *args, connection_string=None):
        self.log = str(tmp_path / ("bridge-%d.log" % time.monotonic_ns()))
        if connection_string:
            creds = ["-x", connection_string]
        elif "--config" in args:
            creds = []
        else:
            creds = ["--url", relay.url, "--rule", "root", "--key", ROOT_KEY]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relayd.cli", "bridge", *creds, *args],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait(self, pattern):
        return wait_for_text(file_reader(self.log), pattern, self.proc)

    def listening_port(self):
        """The port of the bridge's first ``-L`` forwarder, as it logs it: given ``-L 0:...``
        the system picks a free port, with no race for a port a test chose beforehand."""
        return int(self.wait(r"listening on [0-9.]+:(\d+)").group(1))

    def text(self):
        return open(self.log).read()

    def stop(self):
        stop_process(self.proc)


# An anonymous port-mapped TCP door in front of the entity "tcp" (no token, no preamble).
PORT_DOOR_CONFIG = """
[[hybrid_connections]]
path = "tcp"
requires_client_authorization = false

[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "port"
entity = "tcp"
allow_anonymous = true
"""


def port_door_relay(directory):
    """A relay subprocess with :data:`PORT_DOOR_CONFIG`; ``.door`` is the door's port."""
    proc = RelayProcess(directory, write_config(directory, extra=PORT_DOOR_CONFIG))
    proc.door = proc.door_port("port door (tcp)")
    return proc
