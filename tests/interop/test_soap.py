"""SOAP through relayd: a spyne service on premises behind ``relayd bridge -H``, called by
zeep clients that load the WSDL from the relay address (SOAP 1.1 and 1.2); relay-side
failures as SOAP faults; hostile XML; and a Mono WCF BasicHttpBinding pair."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from lxml import etree

from relayd.wire import sas
from tests.support.relay import SEND_KEY, RelayProcess, write_config
from tests.support.relay import Bridge, require

try:
    import zeep
except ImportError:
    require(False, "zeep is not installed (pip install -e '.[test]')", module_level=True)

pytestmark = pytest.mark.interop
MiB = 1 << 20
RELAY_NS = "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect"

SOAP_CONFIG = """
[[hybrid_connections]]
path = "calc11"
kind = "soap"
requires_client_authorization = false

[[hybrid_connections]]
path = "calc12"
kind = "soap"
requires_client_authorization = false

[[hybrid_connections]]
path = "securecalc"
kind = "soap"

[[hybrid_connections]]
path = "nolisten"
kind = "soap"
requires_client_authorization = false

[[hybrid_connections]]
path = "slowcalc"
kind = "soap"
requires_client_authorization = false
response_timeout = 1

[[hybrid_connections]]
path = "wcfhttp"
kind = "soap"
requires_client_authorization = false
"""


def blackhole():
    """An HTTP 'service' that accepts requests and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(20)
    held = []

    def loop():
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=loop, daemon=True).start()
    return srv


@pytest.fixture(scope="module")
def soap_relay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("soap")
    relay = RelayProcess(tmp, write_config(tmp, extra=SOAP_CONFIG))
    notify_file = str(tmp / "notify.txt")
    service = subprocess.Popen([sys.executable, "-m", "tests.support.soap_service"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=dict(os.environ, NOTIFY_FILE=notify_file))
    p11, p12 = (int(p) for p in service.stdout.readline().split()[1:3])
    hole = blackhole()
    bridge = Bridge(tmp, relay, "-H", "calc11:http://127.0.0.1:%d" % p11, "-H", "calc12:http://127.0.0.1:%d" % p12,
                    "-H", "securecalc:http://127.0.0.1:%d" % p11,
                    "-H", "slowcalc:http://127.0.0.1:%d" % hole.getsockname()[1])
    try:
        for name in ("calc11", "calc12", "securecalc", "slowcalc"):
            bridge.wait(r"-H %s.*online" % name)
        relay.direct11 = "http://127.0.0.1:%d/" % p11
        relay.notify_file = notify_file
        yield relay
    finally:
        bridge.stop()
        service.stdin.close()
        service.wait(10)
        hole.close()
        relay.stop()


def client_for(relay, entity, session=None):
    transport = zeep.Transport(session=session, timeout=30, operation_timeout=30) if session else None
    return zeep.Client(relay.http_url + "/%s/?wsdl" % entity, transport=transport)


@pytest.mark.parametrize("entity, soap_ns", [
    ("calc11", "http://schemas.xmlsoap.org/wsdl/soap/"),
    ("calc12", "http://schemas.xmlsoap.org/wsdl/soap12/"),
])
def test_zeep_loads_wsdl_from_relay_and_calls(soap_relay, entity, soap_ns):
    wsdl = requests.get(soap_relay.http_url + "/%s/?wsdl" % entity, timeout=20)
    doc = etree.fromstring(wsdl.content)
    locations = doc.xpath("//s:address/@location", namespaces={"s": soap_ns})
    assert locations == [soap_relay.http_url + "/%s/" % entity], locations
    client = client_for(soap_relay, entity)
    assert client.service.add(2, 40) == 42
    assert client.service.echo("héllo relay") == "héllo relay"
    with client.settings(raw_response=True):
        accepted = client.service.notify("one-way through the relay")
    assert accepted.status_code == 202 and accepted.content == b""
    assert client.service.notify("again") is None  # zeep treats it as one-way (no output in the WSDL)
    with open(soap_relay.notify_file) as f:
        assert "one-way through the relay" in f.read()
    with pytest.raises(zeep.exceptions.Fault) as e:
        client.service.fail("boom")  # the service's own fault passes through unchanged
    assert "failed: boom" in e.value.message


def _service_at(client, address):
    binding = next(iter(client.wsdl.bindings))
    return client.create_service(binding, address)


@pytest.mark.parametrize("entity, server_code, client_code", [
    ("calc11", "Server", "Client"),
    ("calc12", "Receiver", "Sender"),
])
def test_relay_failures_are_soap_faults(soap_relay, entity, server_code, client_code):
    client = client_for(soap_relay, entity)
    base = soap_relay.http_url
    cases = [
        ("nolisten", server_code, "no listener"),
        ("nothing-here", client_code, "no hybrid connection"),
        ("securecalc", client_code, "SAS token is required"),
        ("slowcalc", server_code, "did not answer"),
    ]
    for path, code, text in cases:
        service = _service_at(client, "%s/%s/" % (base, path))
        started = time.time()
        with pytest.raises(zeep.exceptions.Fault) as e:
            service.add(1, 2)
        assert e.value.code.split(":")[-1] == code, (path, e.value.code, e.value.message)
        assert text in e.value.message, (path, e.value.message)
        assert time.time() - started < 10


def test_relay_access_token_soap_header(soap_relay):
    client = client_for(soap_relay, "calc11")
    service = _service_at(client, soap_relay.http_url + "/securecalc/")
    token = sas.make_token(soap_relay.http_url + "/securecalc", "sender", SEND_KEY, int(time.time()) + 300)
    header = etree.Element("{%s}RelayAccessToken" % RELAY_NS)
    header.text = token
    assert service.add(20, 22, _soapheaders=[header]) == 42
    bad = etree.Element("{%s}RelayAccessToken" % RELAY_NS)
    bad.text = sas.make_token(soap_relay.http_url + "/securecalc", "sender", "d3Jvbmcta2V5LWZvci10ZXN0cw==",
                               int(time.time()) + 300)
    with pytest.raises(zeep.exceptions.Fault) as e:
        service.add(1, 1, _soapheaders=[bad])
    assert "signature" in e.value.message
    # the header token also works in the HTTP header
    session = requests.Session()
    session.headers["ServiceBusAuthorization"] = token
    secured = _service_at(client_for(soap_relay, "calc11", session), soap_relay.http_url + "/securecalc/")
    assert secured.add(1, 2) == 3


ENVELOPE11 = b"""<?xml version="1.0"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>%s</soap:Body></soap:Envelope>"""


def _fault_code(response):
    doc = etree.fromstring(response.content)
    codes = doc.xpath("//faultcode/text() | //*[local-name()='Code']/*[local-name()='Value']/text()")
    return codes[0].split(":")[-1]


def test_relay_fault_carries_ws_addressing_relates_to(soap_relay):
    message_id = "urn:uuid:7d3c5a80-1b2c-4d5e-8f90-0a1b2c3d4e5f"
    body = (b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" '
            b'xmlns:a="http://www.w3.org/2005/08/addressing"><e:Header>'
            b'<a:Action>http://relayd.test/calc/add</a:Action><a:MessageID>%s</a:MessageID>'
            b'<a:To>http://relay/nolisten/</a:To></e:Header><e:Body><x/></e:Body></e:Envelope>' % message_id.encode())
    r = requests.post(soap_relay.http_url + "/nolisten/", data=body, timeout=20,
                      headers={"Content-Type": 'application/soap+xml; charset=utf-8; action="http://relayd.test/calc/add"'})
    assert r.status_code == 502 and r.headers["Content-Type"].startswith("application/soap+xml")
    doc = etree.fromstring(r.content)
    ns = {"a": "http://www.w3.org/2005/08/addressing", "e": "http://www.w3.org/2003/05/soap-envelope"}
    assert doc.xpath("//a:RelatesTo/text()", namespaces=ns) == [message_id]
    assert doc.xpath("//a:Action/text()", namespaces=ns) == ["http://www.w3.org/2005/08/addressing/fault"]
    assert doc.xpath("//e:Subcode/e:Value/text()", namespaces=ns)[0].endswith("EndpointUnavailable")


def test_malformed_and_version_mismatch(soap_relay):
    url = soap_relay.http_url + "/calc11/"
    r = requests.post(url, data=b"<not-xml", headers={"Content-Type": "text/xml"}, timeout=20)
    assert r.status_code in (400, 500) and _fault_code(r) == "Client"
    v12 = b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>'
    r = requests.post(url, data=v12, headers={"Content-Type": "text/xml"}, timeout=20)
    assert _fault_code(r) == "VersionMismatch"


def test_hostile_xml_gets_fast_faults_with_bounded_memory(soap_relay):
    url = soap_relay.http_url + "/calc11/"
    laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                         for i in range(1, 10))
              + b"]>" + ENVELOPE11 % b"<x>&lol9;</x>")
    xxe = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
           + ENVELOPE11 % b"<x>&e;</x>")
    deep = ENVELOPE11 % (b"<a>" * 10000 + b"</a>" * 10000)
    baseline = soap_relay.rss()
    for body in (laughs, xxe, deep):
        started = time.time()
        r = requests.post(url, data=body, headers={"Content-Type": "text/xml"}, timeout=20)
        assert _fault_code(r) == "Client" and b"root:" not in r.content
        assert time.time() - started < 5
    big = ENVELOPE11 % (b"<x>" + b"A" * (50 * MiB) + b"</x>")
    started = time.time()
    r = requests.post(url, data=big, headers={"Content-Type": "text/xml"}, timeout=60)
    assert r.status_code == 413 and _fault_code(r) == "Client"
    chunked = requests.post(url, data=iter([big[i:i + MiB] for i in range(0, len(big), MiB)]),
                            headers={"Content-Type": "text/xml"}, timeout=60)
    assert chunked.status_code == 413
    assert time.time() - started < 30
    assert soap_relay.rss() - baseline < 32 * MiB
    # the relay still serves
    assert client_for(soap_relay, "calc11").service.add(1, 1) == 2


def test_plain_xml_over_http_passes_through(soap_relay):
    # WebHttpRelayBinding style: not a SOAP POST, relayed as plain HTTP (here: the WSDL by GET)
    r = requests.get(soap_relay.http_url + "/calc11/?wsdl", timeout=20)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/xml")


def test_mono_wcf_basichttp_through_relay(soap_relay, tmp_path):
    from tests.interop.test_mono_wcf import MonoService, mono_client, MONO_DIR
    from tests.support.relay import require_tool
    from tests.support.net import free_port

    require_tool("mcs", "Mono WCF (apt-get install mono-mcs libmono-system-servicemodel4.0a-cil)")
    build = str(tmp_path / "mono")
    os.makedirs(build)
    out = subprocess.run(["bash", os.path.join(MONO_DIR, "build.sh"), build], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    local = free_port()
    notify = str(tmp_path / "notify.txt")
    os.environ["ECHO_NOTIFY_FILE"] = notify
    try:
        service = MonoService(build, "basichttp", "http://127.0.0.1:%d/echo" % local)
    finally:
        del os.environ["ECHO_NOTIFY_FILE"]
    bridge = Bridge(tmp_path, soap_relay, "-H", "wcfhttp:http://127.0.0.1:%d/echo" % local)
    try:
        bridge.wait("online")
        public = soap_relay.http_url + "/wcfhttp"
        result = mono_client(build, "basichttp", public, "through the relay")
        assert result.returncode == 0 and result.stdout.strip() == "echo: through the relay", result.stderr
        result = mono_client(build, "basichttp", public, "one-way", "--oneway")
        assert result.returncode == 0, result.stderr
        deadline = time.time() + 10
        while time.time() < deadline and not (os.path.exists(notify) and "one-way" in open(notify).read()):
            time.sleep(0.1)
        assert "one-way" in open(notify).read()
    finally:
        bridge.stop()
        service.stop()


def test_concurrent_calls_to_an_http10_backend(soap_relay, tmp_path):
    """spyne's wsgiref server answers HTTP/1.0 and closes each connection: the bridge must not
    reuse such connections (a POST on a dead pooled connection would fail as 503), not even the
    ones opened by the first concurrent calls, before it learnt that (a fresh bridge here)."""
    import concurrent.futures

    bridge = Bridge(tmp_path, soap_relay, "-H", "nolisten:" + soap_relay.direct11.rstrip("/"))
    bridge.wait("online")

    envelope = (b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
                b'xmlns:c="http://relayd.test/calc"><soap:Body><c:add><c:a>%d</c:a><c:b>1</c:b></c:add>'
                b'</soap:Body></soap:Envelope>')

    def call(i):
        r = requests.post(soap_relay.http_url + "/nolisten/", data=envelope % i, timeout=30,
                          headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"add"'})
        return r.status_code, b"<tns:addResult>%d</tns:addResult>" % (i + 1) in r.content

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(call, range(200)))
    finally:
        bridge.stop()
    assert results == [(200, True)] * 200
