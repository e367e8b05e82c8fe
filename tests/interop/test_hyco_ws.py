"""Azure's own Node SDK (npm hyco-ws@1.0.5) as listener and sender through a real
``twistd -n relayd`` process, over ws:// and wss:// (self-signed CA via NODE_EXTRA_CA_CERTS),
plus a plain ``ws`` client as a browser-style sender."""

import os
import subprocess
import time

import pytest

from tests.support.relay import ROOT_KEY, require_tool

NODE_DIR = os.path.join(os.path.dirname(__file__), "node")
pytestmark = pytest.mark.interop


@pytest.fixture
def node_env():
    require_tool("node", "the hyco-ws interop tests need Node.js")
    require_tool(os.path.join(NODE_DIR, "node_modules", "hyco-ws"),
                 "run: cd tests/interop/node && npm ci --no-audit --no-fund")
    return dict(os.environ)


class NodeListener:
    def __init__(self, base, path, env, key=ROOT_KEY, extra=()):
        self.proc = subprocess.Popen(
            ["node", "listener.js", base, path, "root", key, *extra], cwd=NODE_DIR, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )

    def wait_listening(self, timeout=20):
        deadline = time.time() + timeout
        line = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() == "LISTENING":
                return
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError("node listener did not come online: %r %s" % (line, self.stop()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def run_node(script, base, path, env, *extra, timeout=60):
    return subprocess.run(["node", script, base, path, "root", ROOT_KEY, *extra], cwd=NODE_DIR, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _echo_round(base, env, relay):
    listener = NodeListener(base, "echo", env)
    try:
        listener.wait_listening()
        for script in ("sender.js", "plain_sender.js"):
            out = run_node(script, base, "echo", env, "--count=3", "--size=200000")
            assert out.returncode == 0 and out.stdout.strip() == "OK", (script, out.stdout, out.stderr,
                                                                       relay.log_text()[-3000:])
    finally:
        listener.stop()


def test_hyco_ws_listener_and_senders_over_ws(shared_relay, node_env):
    _echo_round(shared_relay.url, node_env, shared_relay)


def test_hyco_ws_listener_and_senders_over_wss(tls_relay, node_env):
    env = dict(node_env, NODE_EXTRA_CA_CERTS=tls_relay.certs["ca.pem"])
    _echo_round("wss://127.0.0.1:%d" % tls_relay.port, env, tls_relay)
    # without the CA the SDK refuses the relay's certificate: TLS is really verified
    out = run_node("sender.js", "wss://127.0.0.1:%d" % tls_relay.port, "echo", node_env, "--timeout=5")
    assert out.returncode == 1


def test_relay_survives_hyco_ws_reconnect_storm(relay_proc, node_env):
    """hyco-ws reconnects without back-off (doubling each round) after a 401; the relay
    answers every attempt and keeps serving everyone else."""
    storm = NodeListener(relay_proc.url, "echo", node_env, key="d3Jvbmcta2V5LWZvci10ZXN0cw==",
                         extra=["--max-errors=300"])
    try:
        storm.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    err = storm.stop()
    assert "401" in err, err[-2000:]
    assert relay_proc.proc.poll() is None
    _echo_round(relay_proc.url, node_env, relay_proc)
