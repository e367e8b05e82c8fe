"""Real WCF peers (Debian's Mono: NetTcpBinding and BasicHttpBinding, SecurityMode.None)
talking through relayd.

net.tcp: client -> relayd net.tcp door (preamble mode, routed by Via) -> ``relayd bridge -R
ENTITY:net.tcp://127.0.0.1:PORT/echo`` (rewrites the Via record) -> the WCF service, whose
endpoint address is the public relay URI and whose ListenUri is the local address."""

import os
import subprocess
import sys
import time

import pytest

from tests.support.relay import RelayProcess, require_tool, write_config
from tests.support.net import free_port
from tests.support.relay import Bridge

MONO_DIR = os.path.join(os.path.dirname(__file__), "mono")
pytestmark = pytest.mark.interop

WCF_CONFIG = """
[[hybrid_connections]]
path = "wcf/echo"
requires_client_authorization = false

[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "nettcp"
"""


@pytest.fixture(scope="module")
def mono_build(tmp_path_factory):
    require_tool("mcs", "the WCF interop tests need Mono (apt-get install mono-mcs libmono-system-servicemodel4.0a-cil)")
    out = tmp_path_factory.mktemp("mono")
    run = subprocess.run(["bash", os.path.join(MONO_DIR, "build.sh"), str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return str(out)


class MonoService:
    """A Mono WCF service (``exe`` of the build, EchoService by default; ``kind`` None for one that
    takes no binding argument) that has printed its READY line; stopped by closing its stdin."""

    def __init__(self, build, kind, listen, address=None, exe="EchoService.exe", env=None):
        args = (["mono", os.path.join(build, exe)] + ([kind] if kind else []) + [listen]
                + ([address] if address else []))
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=dict(os.environ, **(env or {})))
        line = self.proc.stdout.readline()
        assert line.startswith("READY"), (line, self.proc.stderr.read() if self.proc.poll() is not None else "")

    def stop(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(10)
        except Exception:
            self.proc.kill()


def mono_client(build, kind, endpoint, text, *extra):
    return subprocess.run(["mono", os.path.join(build, "EchoClient.exe"), kind, endpoint, text, *extra],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, ECHO_CLIENT_TIMEOUT="20"))


@pytest.fixture
def wcf_relay(tmp_path):
    relay = RelayProcess(tmp_path, write_config(tmp_path, extra=WCF_CONFIG))
    relay.nettcp_port = relay.door_port("nettcp door (routed by Via)")
    yield relay
    relay.stop()


def test_wcf_nettcp_request_reply_through_relay(tmp_path, mono_build, wcf_relay):
    local = free_port()
    public = "net.tcp://127.0.0.1:%d/wcf/echo" % wcf_relay.nettcp_port
    service = MonoService(mono_build, "nettcp", "net.tcp://127.0.0.1:%d/echo" % local, public)
    bridge = Bridge(tmp_path, wcf_relay, "-R", "wcf/echo:net.tcp://127.0.0.1:%d/echo" % local)
    try:
        bridge.wait("online")
        for text in ("hi", "second call", "x" * 5000):  # WCF default reader quota: 8192 chars
            out = mono_client(mono_build, "nettcp", public, text)
            assert out.returncode == 0 and out.stdout.strip() == "echo: " + text, (
                out.stdout[-500:], out.stderr[-2000:], bridge.text()[-2000:], wcf_relay.log_text()[-2000:])
        notify = str(tmp_path / "notify.txt")
        out = mono_client(mono_build, "nettcp", public, "one-way hello", "--oneway")
        assert out.returncode == 0, out.stderr
        # the Via the service saw was rewritten to its own listen URI by the bridge
        assert "[" in bridge.text() and "open" in bridge.text()
    finally:
        bridge.stop()
        service.stop()


def test_wcf_nettcp_unknown_via_gets_endpoint_not_found(mono_build, wcf_relay):
    out = mono_client(mono_build, "nettcp", "net.tcp://127.0.0.1:%d/nowhere" % wcf_relay.nettcp_port, "hi")
    assert out.returncode == 1
    assert "http://schemas.microsoft.com/ws/2006/05/framing/faults/EndpointNotFound" in out.stderr, out.stderr
    # an entity with no listener: EndpointUnavailable
    out = mono_client(mono_build, "nettcp", "net.tcp://127.0.0.1:%d/wcf/echo" % wcf_relay.nettcp_port, "hi")
    assert out.returncode == 1
    assert "framing/faults/EndpointUnavailable" in out.stderr, out.stderr
