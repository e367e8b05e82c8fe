"""SOAP one-way envelopes published to event entities (issue 11, Deliver 2): a POST with a SOAP
content type to a ``kind = "multicast"`` / ``"oneway"`` entity is parsed with the hardened SOAP
parser, authorised with its ``RelayAccessToken`` header (removed before delivery) and published
as one event; refusals are SOAP faults in the publisher's SOAP version.  A ``twistd -n relayd``
subprocess, raw HC listeners as subscribers, keep-alive ``http.client`` publishers and zeep."""

import http.client
import os
import socket
import subprocess
import sys
import time
from xml.sax.saxutils import escape

import pytest
from lxml import etree

from relayd.wire.soap.envelope import RELAY_CONNECT_NS, SOAP11_NS, SOAP12_NS
from tests.integration.test_events_http import Subscriber, sender_token, wait_listeners
from tests.support.net import read_response
from tests.support.relay import LISTEN_KEY, RelayProcess, require, write_config

MAX_MESSAGE = 8192
UNAUTHENTICATED_TIMEOUT = 1.5
CONFIG = """
[[hybrid_connections]]
path = "soapbus"
kind = "multicast"
max_message = %d

[[hybrid_connections]]
path = "soapqueue"
kind = "oneway"

[limits]
soap_unauthenticated_timeout = %s
""" % (MAX_MESSAGE, UNAUTHENTICATED_TIMEOUT)

WSA = "http://www.w3.org/2005/08/addressing"
CONTENT_TYPE = {"1.1": "text/xml; charset=utf-8",
                "1.2": 'application/soap+xml; charset=utf-8; action="urn:relayd:event"'}
ENVELOPE_NS = {"1.1": SOAP11_NS, "1.2": SOAP12_NS}


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("events-soap")
    proc = RelayProcess(workdir, write_config(workdir, extra=CONFIG))
    yield proc
    proc.stop()


def envelope(version, payload, token=None):
    """A one-way envelope (as bytes) and what subscribers must get: the same bytes without the
    ``RelayAccessToken`` header."""
    header_tail = '<a:Action xmlns:a="%s">urn:relayd:event</a:Action>' % WSA
    token_header = ('<r:RelayAccessToken xmlns:r="%s">%s</r:RelayAccessToken>' % (RELAY_CONNECT_NS, escape(token))
                    if token is not None else "")
    text = ('<s:Envelope xmlns:s="%s"><s:Header>%%s%s</s:Header><s:Body><ev xmlns="urn:relayd:test">%s</ev>'
            '</s:Body></s:Envelope>' % (ENVELOPE_NS[version], header_tail, escape(payload)))
    return (text % token_header).encode("utf-8"), (text % "").encode("utf-8")


class SoapPublisher:
    """One keep-alive HTTP connection posting envelopes."""

    def __init__(self, relay, path, version):
        self.conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=20)
        self.path = path
        self.version = version

    def post(self, body, headers=()):
        head = {"Content-Type": CONTENT_TYPE[self.version]}
        if self.version == "1.1":
            head["SOAPAction"] = '"urn:relayd:event"'
        head.update(headers)
        self.conn.request("POST", "/" + self.path, body=body, headers=head)
        response = self.conn.getresponse()
        return response.status, response, response.read()

    def close(self):
        self.conn.close()


def fault_of(version, response, body):
    """(code, reason) of a SOAP fault answer, checking it is in ``version``."""
    assert response.getheader("Content-Type").startswith(CONTENT_TYPE[version].split(";")[0]), \
        response.getheader("Content-Type")
    doc = etree.fromstring(body)
    assert doc.tag == "{%s}Envelope" % ENVELOPE_NS[version]
    if version == "1.1":
        return doc.findtext(".//faultcode"), doc.findtext(".//faultstring")
    ns = {"e": SOAP12_NS}
    return doc.xpath("string(//e:Code/e:Value)", namespaces=ns), doc.xpath("string(//e:Reason/e:Text)", namespaces=ns)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_one_way_envelopes_reach_every_subscriber_in_order_without_the_token(relay, version):
    subs = [Subscriber(relay, "soapbus") for _ in range(2)]
    assert wait_listeners(relay, "soapbus", 2) == 2
    publisher = SoapPublisher(relay, "soapbus", version)
    token = sender_token(relay, "soapbus")
    expected = []
    try:
        for i in range(100):
            sent, stripped = envelope(version, "event %d & more" % i, token)
            expected.append(stripped)
            status, response, body = publisher.post(sent)
            assert (status, response.getheader("X-Relayd-Delivered"), body) == (202, "2", b""), (i, body)
        for sub in subs:
            assert sub.wait_for(100) == 100, sub.error
            assert [body for _, body in sub.events] == expected
            request = sub.events[0][0]
            assert request["method"] == "POST" and request["requestTarget"] == "/soapbus"
            headers = {k.lower(): v for k, v in request["requestHeaders"].items()}
            assert headers["content-type"] == CONTENT_TYPE[version]
            assert b"RelayAccessToken" not in b"".join(body for _, body in sub.events)
    finally:
        publisher.close()
        for sub in subs:
            sub.stop()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_no_token_401_and_listen_only_token_403_are_faults_and_nothing_is_delivered(relay, version):
    sub = Subscriber(relay, "soapbus")
    assert wait_listeners(relay, "soapbus", 1) == 1
    try:
        listen_only = sender_token(relay, "soapbus", "listener", LISTEN_KEY)
        for token, status in ((None, 401), (listen_only, 403)):
            publisher = SoapPublisher(relay, "soapbus", version)
            try:
                code, response, body = publisher.post(envelope(version, "refused", token)[0])
                assert code == status, body
                fault_code, reason = fault_of(version, response, body)
                assert fault_code.endswith("Client" if version == "1.1" else "Sender")
                if token is None:  # the fault says where a SOAP sender's token goes
                    assert "RelayAccessToken" in reason, reason
            finally:
                publisher.close()
        # a Listen-only token in the head is refused from the head, before the body is read
        s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        try:
            s.sendall(("POST /soapbus HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nServiceBusAuthorization: %s\r\n"
                       "Content-Length: 4000\r\n\r\n" % (CONTENT_TYPE[version], listen_only)).encode())
            status, _, body = read_response(s, timeout=5)
            assert status == 403 and b"Fault" in body
        finally:
            s.close()
        time.sleep(0.2)
        assert sub.events == []
    finally:
        sub.stop()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_envelope_over_max_message_is_a_413_fault(relay, version):
    sub = Subscriber(relay, "soapbus")
    assert wait_listeners(relay, "soapbus", 1) == 1
    token = sender_token(relay, "soapbus")
    publisher = SoapPublisher(relay, "soapbus", version)
    try:
        big, _ = envelope(version, "x" * MAX_MESSAGE, token)
        status, response, body = publisher.post(big)
        assert status == 413, body
        assert "max_message of %d" % MAX_MESSAGE in fault_of(version, response, body)[1]
        publisher.close()
        # a chunked envelope that grows past max_message, its token in the head
        publisher = SoapPublisher(relay, "soapbus", version)
        publisher.conn.putrequest("POST", "/soapbus")
        publisher.conn.putheader("Content-Type", CONTENT_TYPE[version])
        publisher.conn.putheader("ServiceBusAuthorization", token)
        publisher.conn.putheader("Transfer-Encoding", "chunked")
        publisher.conn.endheaders()
        for i in range(0, len(big), 2048):
            publisher.conn.send(b"%x\r\n%s\r\n" % (len(big[i:i + 2048]), big[i:i + 2048]))
        publisher.conn.send(b"0\r\n\r\n")
        assert publisher.conn.getresponse().status == 413
        publisher.close()
        publisher = SoapPublisher(relay, "soapbus", version)
        sent, stripped = envelope(version, "fits", token)
        assert publisher.post(sent)[0] == 202
        assert sub.wait_for(1) == 1
        time.sleep(0.2)
        assert [body for _, body in sub.events] == [stripped]
    finally:
        publisher.close()
        sub.stop()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_oneway_without_listener_is_a_502_fault_and_keeps_the_connection(relay, version):
    assert wait_listeners(relay, "soapqueue", 0) == 0
    token = sender_token(relay, "soapqueue")
    publisher = SoapPublisher(relay, "soapqueue", version)
    try:
        status, response, body = publisher.post(envelope(version, "lost", token)[0])
        assert status == 502, body
        code, reason = fault_of(version, response, body)
        assert code.endswith("Server" if version == "1.1" else "Receiver") and "no listener" in reason
        assert b"EndpointUnavailable" in body
        sub = Subscriber(relay, "soapqueue")
        try:
            assert wait_listeners(relay, "soapqueue", 1) == 1
            sent, stripped = envelope(version, "found", token)
            status, response, body = publisher.post(sent)  # the same connection
            assert (status, response.getheader("X-Relayd-Delivered")) == (202, "1")
            assert sub.wait_for(1) == 1 and sub.events[0][1] == stripped
        finally:
            sub.stop()
    finally:
        publisher.close()


@pytest.mark.parametrize("version, status", [("1.1", 500), ("1.2", 400)])  # each binding's status
def test_malformed_envelopes_and_dtds_are_faults_and_nothing_is_delivered(relay, version, status):
    sub = Subscriber(relay, "soapbus")
    assert wait_listeners(relay, "soapbus", 1) == 1
    token = escape(sender_token(relay, "soapbus"))
    ns = ENVELOPE_NS[version]
    bad = [
        b"<not-xml",
        ('<!DOCTYPE s:Envelope [<!ENTITY e SYSTEM "file:///etc/passwd">]><s:Envelope xmlns:s="%s"><s:Header>'
         '<RelayAccessToken xmlns="%s">%s</RelayAccessToken></s:Header><s:Body>&e;</s:Body></s:Envelope>'
         % (ns, RELAY_CONNECT_NS, token)).encode(),
        ('<s:Envelope xmlns:s="%s"><s:Header><RelayAccessToken xmlns="%s">%s</RelayAccessToken></s:Header>'
         '</s:Envelope>' % (ns, RELAY_CONNECT_NS, token)).encode(),  # no Body
    ]
    try:
        for body in bad:
            publisher = SoapPublisher(relay, "soapbus", version)
            try:
                code, response, reply = publisher.post(body)
                assert code == status, reply
                assert fault_of(version, response, reply)[0].endswith("Client" if version == "1.1" else "Sender")
                assert b"root:" not in reply
            finally:
                publisher.close()
        time.sleep(0.2)
        assert sub.events == []
    finally:
        sub.stop()


def test_envelope_read_before_its_sender_is_known_has_a_deadline(relay):
    """No token in the head: the relay can only learn the sender from the envelope, so the
    upload is under ``limits.soap_unauthenticated_timeout`` (408 fault) as on SOAP entities."""
    s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    try:
        s.sendall(("POST /soapbus HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 4000\r\n\r\n"
                   "<s:Envelope").encode())
        started = time.monotonic()
        status, _, body = read_response(s, timeout=UNAUTHENTICATED_TIMEOUT + 5)
        assert status == 408 and b"Fault" in body
        assert time.monotonic() - started < UNAUTHENTICATED_TIMEOUT + 3
    finally:
        s.close()


def test_zeep_one_way_call_with_relay_access_token_header(relay, tmp_path):
    """zeep, loading a spyne service's WSDL, calls its one-way ``notify`` operation at the
    multicast address with a ``RelayAccessToken`` SOAP header: both subscribers get the call."""
    try:
        import zeep
    except ImportError:
        require(False, "zeep is not installed (pip install -e '.[test]')")
    service = subprocess.Popen([sys.executable, "-m", "tests.support.soap_service"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=dict(os.environ, NOTIFY_FILE=""))
    subs = [Subscriber(relay, "soapbus") for _ in range(2)]
    try:
        p11 = int(service.stdout.readline().split()[1])
        client = zeep.Client("http://127.0.0.1:%d/?wsdl" % p11)
        binding = next(iter(client.wsdl.bindings))
        bus = client.create_service(binding, relay.http_url + "/soapbus")
        header = etree.Element("{%s}RelayAccessToken" % RELAY_CONNECT_NS)
        header.text = sender_token(relay, "soapbus")
        assert wait_listeners(relay, "soapbus", 2) == 2
        for i in range(3):
            assert bus.notify("zeep event %d" % i, _soapheaders=[header]) is None  # a 202, no body
        for sub in subs:
            assert sub.wait_for(3) == 3, sub.error
            texts = [etree.fromstring(body).xpath("string(//*[local-name()='text'])") for _, body in sub.events]
            assert texts == ["zeep event %d" % i for i in range(3)]
            assert all(b"RelayAccessToken" not in body for _, body in sub.events)
    finally:
        for sub in subs:
            sub.stop()
        service.stdin.close()
        service.wait(10)
