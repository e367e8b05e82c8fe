"""A Mono WCF one-way client over BasicHttpBinding (tests/interop/mono/EchoClient.exe
``--oneway``: ``IEcho.Notify``, a SOAP 1.1 one-way envelope) publishes to event entities of a
``twistd -n relayd`` (issue 11): WCF takes the relay's empty ``202 Accepted`` as a completed
one-way call (a body in it, such as the JSON a plain POST gets, fails the call: "Data at the
root level is invalid"), and every subscriber gets each call's envelope, in order.  (Mono's
one-way channel completes even on a fault answer, so the relay's faults are checked with raw
clients in tests/integration/test_events_soap.py.)"""

import os
import subprocess

import pytest
from lxml import etree

from tests.integration.test_events_http import Subscriber, wait_listeners
from tests.interop.test_mono_wcf import MONO_DIR, mono_client
from tests.support.relay import RelayProcess, require_tool, write_config

pytestmark = pytest.mark.interop

CONFIG = """
[[hybrid_connections]]
path = "wcfbus"
kind = "multicast"
requires_client_authorization = false
"""


@pytest.fixture(scope="module")
def wcf(tmp_path_factory):
    require_tool("mcs", "Mono WCF (apt-get install mono-mcs libmono-system-servicemodel4.0a-cil)")
    tmp = tmp_path_factory.mktemp("events-soap-wcf")
    build = str(tmp / "mono")
    out = subprocess.run(["bash", os.path.join(MONO_DIR, "build.sh"), build], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    relay = RelayProcess(tmp, write_config(tmp, extra=CONFIG))
    yield relay, build
    relay.stop()


def test_wcf_one_way_calls_reach_every_subscriber_in_order(wcf):
    relay, build = wcf
    # a Mono client process may take tens of seconds per call on a loaded machine (once 50 s
    # between two calls whose 202 the relay sent in 9 ms): the subscribers wait as long as the calls may
    subs = [Subscriber(relay, "wcfbus", idle_timeout=130) for _ in range(2)]
    try:
        assert wait_listeners(relay, "wcfbus", 2) == 2
        for i in range(3):
            result = mono_client(build, "basichttp", relay.http_url + "/wcfbus", "wcf event %d" % i, "--oneway")
            assert result.returncode == 0 and result.stdout.strip() == "sent", result.stderr
        for sub in subs:
            assert sub.wait_for(3, timeout=60) == 3, sub.error
            texts = [etree.fromstring(body).xpath("string(//*[local-name()='Body'])") for _, body in sub.events]
            assert texts == ["wcf event %d" % i for i in range(3)]
            headers = {k.lower(): v for k, v in sub.events[0][0]["requestHeaders"].items()}
            assert headers["content-type"].startswith("text/xml") and "Notify" in headers["soapaction"]
    finally:
        for sub in subs:
            sub.stop()

