"""A browser's native WebSocket over wss:// through relayd: headless Chromium (Debian's
``chromium`` + ``chromium-driver``, driven by selenium) opens
``wss://127.0.0.1:PORT/$hc/echo?sb-hc-action=connect&sb-hc-token=...`` against a relay on an
``ssl:`` endpoint and exchanges messages both ways with a ``relayd listen`` listener.

Chromium offers ALPN on every TLS connection; before the relay answered ALPN with http/1.1 the
handshake failed.  The browser trusts the throwaway test certificate through an SPKI pin
(``--ignore-certificate-errors-spki-list``), so any other certificate would still be refused."""

import base64
import hashlib
import os
import select
import subprocess
import sys
import time
import urllib.parse

import pytest

from relayd.wire import sas
from tests.support.browser import chromium
from tests.support.relay import ROOT_KEY, stop_process


def spki_pin(cert_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def browser(tmp_path, tls_relay):
    pin = spki_pin(tls_relay.certs["server-cert.pem"])
    with chromium(tmp_path, "--ignore-certificate-errors-spki-list=%s" % pin) as driver:
        driver.set_script_timeout(20)
        yield driver


class Listener:
    """``relayd listen echo`` over wss: the browser's messages on its stdout, its stdin to the browser."""

    def __init__(self, relay):
        env = dict(os.environ, SSL_CERT_FILE=relay.certs["ca.pem"])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relayd.cli", "listen", "echo", "--url", "wss://localhost:%d" % relay.port,
             "--rule", "root", "--key", ROOT_KEY],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            self.wait_for(self.proc.stderr, b"online on echo")
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def wait_for(self, stream, expected, timeout=20):
        data = b""
        deadline = time.time() + timeout
        while expected not in data:
            left = deadline - time.time()
            assert left > 0, "waited %ss for %r, got %r" % (timeout, expected, data)
            ready, _, _ = select.select([stream], [], [], left)
            if ready:
                chunk = os.read(stream.fileno(), 65536)
                assert chunk, "stream closed before %r; got %r" % (expected, data)
                data += chunk
        return data

    def stop(self):
        stop_process(self.proc)
        return self.proc.returncode


OPEN_AND_SEND = """
const url = arguments[0], first = arguments[1], done = arguments[arguments.length - 1];
const ws = new WebSocket(url);
ws.binaryType = "arraybuffer";
window.relayWs = ws;
window.relayInbox = [];
window.relayClosed = null;
ws.onmessage = (e) => window.relayInbox.push(
    typeof e.data === "string" ? e.data : new TextDecoder().decode(new Uint8Array(e.data)));
ws.onclose = (e) => { window.relayClosed = {code: e.code, reason: e.reason}; done({closed: e.code}); };
ws.onopen = () => { ws.send(first); done({open: true, protocol: ws.protocol}); };
"""

WAIT_FOR_MESSAGE = """
const done = arguments[arguments.length - 1];
const poll = () => {
  if (window.relayInbox.length) return done({message: window.relayInbox.join("")});
  if (window.relayClosed) return done({closed: window.relayClosed.code});
  setTimeout(poll, 20);
};
poll();
"""


def test_chromium_websocket_over_wss_talks_to_a_relay_listener(tls_relay, browser):
    listener = Listener(tls_relay)
    try:
        token = sas.make_token("http://127.0.0.1:%d/echo" % tls_relay.port, "root", ROOT_KEY, int(time.time()) + 300)
        url = "wss://127.0.0.1:%d/$hc/echo?sb-hc-action=connect&sb-hc-token=%s" % (
            tls_relay.port, urllib.parse.quote(token, safe=""))
        # a page from the relay's own origin: Chromium's local network access checks block a
        # public or opaque origin (about:blank) from opening a socket to loopback
        browser.get("https://127.0.0.1:%d/" % tls_relay.port)
        opened = browser.execute_async_script(OPEN_AND_SEND, url, "hello from chromium")
        assert opened.get("open"), "%s\n%s\n%s" % (opened, browser.get_log("browser"), tls_relay.log_text()[-3000:])
        # browser -> listener
        assert b"hello from chromium" in listener.wait_for(listener.proc.stdout, b"hello from chromium")
        # listener -> browser
        listener.proc.stdin.write(b"hello from the listener")
        listener.proc.stdin.flush()
        got = browser.execute_async_script(WAIT_FOR_MESSAGE)
        assert got == {"message": "hello from the listener"}, got
        # a second round, larger than one TLS record
        big = "x" * 40000
        browser.execute_script("window.relayInbox = []; window.relayWs.send(arguments[0]);", big)
        listener.wait_for(listener.proc.stdout, big.encode())
        # the listener has sent all it had (its stdin ends: an empty binary message, the
        # end-of-data marker), then the browser closes normally: the listener exits 0
        listener.proc.stdin.close()
        got = browser.execute_async_script(WAIT_FOR_MESSAGE)
        assert got == {"message": ""}, got
        browser.execute_script("window.relayWs.close(1000, 'done');")
        assert listener.proc.wait(20) == 0, listener.proc.stderr.read()
    finally:
        listener.stop()
