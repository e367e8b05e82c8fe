"""Runtime information read by .NET's own DataContractSerializer (Debian's Mono), as Azure Relay's
SDK reads it in HybridConnectionListener.GetRuntimeInformationAsync (issue 12 item 2): the
reader (mono/RuntimeInfoReader.cs) sends the listener's token in Authorization with
api-version=2016-07, treats a feed as "not found", moves to the Atom content element and
deserializes the HybridConnectionDescription contract (name, namespace, member order as the
SDK declares them).  ListenerCount follows relayd listeners 0 -> 1 -> 2 -> 1; errors come back
as the SDK would report them (status and the text of Detail)."""

import os
import subprocess
import sys
import time

import pytest

from relayd.wire import sas
from tests.support.cli import start_listen
from tests.support.manage import relay_of_its_own
from tests.support.relay import LISTEN_KEY, ROOT_KEY, require_tool, stop_process

MONO_DIR = os.path.join(os.path.dirname(__file__), "mono")
pytestmark = pytest.mark.interop

SHOP = """
[[hybrid_connections]]
path = "shop"
discovery = "public"
user_metadata = "team=shop"
"""


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    require_tool("mcs", "the .NET interop tests need Mono (apt-get install mono-mcs mono-runtime)")
    exe = str(tmp_path_factory.mktemp("mono-runtime-info") / "RuntimeInfoReader.exe")
    run = subprocess.run(["mcs", "-nologo", "-target:exe", "-r:System.Runtime.Serialization.dll", "-r:System.Xml.dll",
                          "-out:" + exe, os.path.join(MONO_DIR, "RuntimeInfoReader.cs")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return exe


@pytest.fixture(scope="module")
def shop_relay(tmp_path_factory):
    yield from relay_of_its_own(tmp_path_factory, "runtime-info-relay", SHOP)


def read(reader, relay, path="shop", token=None):
    """The reader's one line for ``path``, signed as the SDK signs: the listener's own token for
    the entity's sb:// address unless ``token`` is given."""
    token = token or sas.make_token("sb://127.0.0.1:%d/%s" % (relay.port, path), "listener", LISTEN_KEY,
                                    int(time.time()) + 300)
    run = subprocess.run(["mono", reader, "http://127.0.0.1:%d/%s" % (relay.port, path), token],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout.strip()


def listener_count(line):
    fields = dict(part.split("=", 1) for part in line.split())
    return int(fields["ListenerCount"])


def wait_count(reader, relay, expected, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        line = read(reader, relay)
        if listener_count(line) == expected:
            return line
        assert time.monotonic() < deadline, "ListenerCount stayed: %s, expected %d" % (line, expected)
        time.sleep(0.1)


def test_listener_count_read_by_data_contract_serializer(reader, shop_relay, tmp_path):
    relay = shop_relay
    line = wait_count(reader, relay, 0)
    assert "RequiresClientAuthorization=True UserMetadata=team=shop CreatedAt=20" in line, line
    listeners = []
    try:
        for n in (1, 2):
            listeners.append(start_listen(relay, str(tmp_path / ("l%d.err" % n)), subprocess.DEVNULL,
                                          subprocess.DEVNULL, path="shop"))
            wait_count(reader, relay, n)
        stop_process(listeners.pop(0))
        wait_count(reader, relay, 1)
    finally:
        for proc in listeners:
            stop_process(proc)


def test_errors_as_the_sdk_reports_them(reader, shop_relay):
    relay = shop_relay
    status, detail = read(reader, relay, token="SharedAccessSignature sr=x").split(" ", 2)[1:]
    assert status == "401" and "TrackingId:" in detail
    assert read(reader, relay, "nothing-here").startswith("ERROR 404 no entity at 'nothing-here'")
    manage = sas.make_token("http://127.0.0.1:%d/" % relay.port, "root", ROOT_KEY, int(time.time()) + 300)
    assert read(reader, relay, "nothing-here", manage) == "NOTFOUND feed"  # the SDK's EndpointNotFoundException
