"""The live status page (issue 12 item 5), ``/$relayd/ui/`` of a real ``twistd -n relayd``.

* Its files over raw sockets: served without a token with the security headers (CSP allowing
  only the relay itself and no inline script, nosniff, no framing, no referrer), GET and HEAD
  only (405 with Allow), nothing outside the page's own files whatever the path says
  (``..``, encoded dots and slashes, backslashes, NUL, double slashes): a 404, and never the
  management API's data without a token.
* In headless Chromium (Debian's ``chromium`` + ``chromium-driver`` driven by selenium, as in
  tests/interop/test_browser.py): a wrong token, an expired one and one without Manage each
  give a clear message and the login form again; a Manage token shows the entities made through the API (kind,
  online state, listener count), and while ``relayd connect`` streams into ``relayd listen``
  through the relay the throughput graph changes (its canvas pixels and the bytes/s the page
  shows beside it, ``data-bps``), the live connections show up and the connectivity stream
  brings the connection's event; a screenshot is saved under the test's output directory.  The token never appears in the page's URL or the relay's log.
"""

import os
import re
import socket
import subprocess
import threading
import time

import pytest

from relayd.wire import sas
from tests.support.cli import cli, cli_env, connection_string, start_listen, REPO
from tests.support.manage import call, manage_token, relay_of_its_own
from tests.support.net import read_response
from tests.support.browser import chromium
from tests.support.relay import ROOT_KEY, SEND_KEY, RelayProcess, stop_process, write_config
from tests.support.waits import wait_until

PAGE = "/$relayd/ui/"
CSP = "default-src 'self'"


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    yield from relay_of_its_own(tmp_path_factory, "status-page")


def fetch(relay, method, target, headers=(), body=b""):
    """(status, {lower-case header: value}, body) of one raw request: the target goes out
    exactly as given (no client-side normalisation of ``..`` or escapes)."""
    head = ["%s %s HTTP/1.1" % (method, target), "Host: 127.0.0.1:%d" % relay.port, "Connection: close"]
    head += ["%s: %s" % h for h in headers]
    if body:
        head.append("Content-Length: %d" % len(body))
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        answer = read_response(sock, timeout=10)
    assert answer is not None, "no answer to %s %s" % (method, target)
    status, raw_head, data = answer
    fields = {}
    for line in raw_head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower().decode()] = value.strip().decode("latin-1")
    return status, fields, data


def assert_security_headers(fields):
    csp = fields.get("content-security-policy", "")
    assert csp.startswith(CSP), fields
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert fields.get("x-content-type-options") == "nosniff"
    assert fields.get("x-frame-options") == "DENY"
    assert fields.get("referrer-policy") == "no-referrer"


# -- the files -----------------------------------------------------------------------------------

def test_page_files_are_served_without_a_token_with_security_headers(relay):
    status, fields, body = fetch(relay, "GET", PAGE)
    assert status == 200, body
    assert fields["content-type"] == "text/html; charset=utf-8"
    assert_security_headers(fields)
    html = body.decode()
    assert '<script src="app.js"' in html and '<link rel="stylesheet" href="style.css"' in html
    assert "<script>" not in html and not re.search(r"<[^>]*\son[a-z]+\s*=", html)  # no inline script or handlers
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html)
    assert sorted(links) == ["app.js", "events.js", "icon.svg", "style.css"], links  # nothing from elsewhere: works air-gapped
    assert not re.search(r"(?i)https?://[a-z0-9\[]|//[a-z0-9-]+\.[a-z]", html)
    for name, kind in (("app.js", "text/javascript; charset=utf-8"), ("events.js", "text/javascript; charset=utf-8"),
                       ("style.css", "text/css; charset=utf-8"), ("index.html", "text/html; charset=utf-8")):
        status, fields, data = fetch(relay, "GET", PAGE + name)
        assert (status, fields["content-type"]) == (200, kind), data
        assert_security_headers(fields)
        assert int(fields["content-length"]) == len(data) > 100
    for name in ("app.js", "events.js"):
        script = fetch(relay, "GET", PAGE + name)[2].decode()
        assert not re.search(r"(?i)https?://[a-z0-9\[]|import\s*\(|importScripts", script)
        assert "localStorage" not in script  # the token lives in sessionStorage only


def test_page_without_slash_redirects_and_head_has_no_body(relay):
    status, fields, _ = fetch(relay, "GET", PAGE[:-1])
    assert status in (301, 302) and fields["location"] == PAGE
    since = relay.log_end()
    status, fields, body = fetch(relay, "HEAD", PAGE + "app.js")
    assert status == 200 and body == b""
    assert int(fields["content-length"]) == len(fetch(relay, "GET", PAGE + "app.js")[2])
    assert_security_headers(fields)
    status, fields, body = fetch(relay, "HEAD", PAGE + "nothing.js")
    assert status == 404 and body == b"" and int(fields["content-length"]) > 0
    assert "HEAD request" not in relay.log_text()[since:]  # no body offered for twisted.web to drop


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_only_get_and_head(relay, method):
    status, fields, body = fetch(relay, method, PAGE + "index.html", body=b"{}")
    assert status == 405, body
    assert fields["allow"] == "GET, HEAD"
    assert_security_headers(fields)


@pytest.mark.parametrize("target", [
    "/$relayd/ui/../../etc/passwd",
    "/$relayd/ui/%2e%2e/%2e%2e/etc/passwd",
    "/$relayd/ui/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/$relayd/ui/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/$relayd/ui/..%5c..%5cui.py",
    "/$relayd/ui/../ui.py",
    "/$relayd/ui/%2e%2e/ui.py",
    "/$relayd/ui/..",
    "/$relayd/ui/.",
    "/$relayd/ui/./index.html",
    "/$relayd/ui//etc/passwd",
    "/$relayd/ui/%2fetc%2fpasswd",
    "/$relayd/ui/index.html%00.js",
    "/$relayd/ui/index.html/",
    "/$relayd/ui/ui.py",
    "/$relayd/ui/__init__.py",
    "/$relayd/ui/relayd.toml",
])
def test_nothing_outside_the_page_files(relay, target):
    status, fields, body = fetch(relay, "GET", target)
    assert status == 404, (target, status, body)
    assert_security_headers(fields)
    assert b"root:" not in body and b"import" not in body and ROOT_KEY.encode() not in body


@pytest.mark.parametrize("target", ["/$relayd/ui/../entities", "/$relayd/ui/%2e%2e/status",
                                    "/$relayd/ui/../rules"])
def test_the_page_path_is_no_way_around_the_token(relay, target):
    status, _, body = fetch(relay, "GET", target)
    assert status == 404, body
    assert b'"listeners"' not in body and b"primary_key" not in body and b"pending_rendezvous" not in body
    assert fetch(relay, "GET", "/$relayd/entities")[0] == 401  # the data still needs the token


# -- in the browser ------------------------------------------------------------------------------

@pytest.fixture
def browser(tmp_path):
    with chromium(tmp_path, "--window-size=1280,1400") as driver:
        yield driver


def js(driver, expression):
    return driver.execute_script("return " + expression)


def wait_page(driver, expression, timeout=20, what=None):
    """Poll a JavaScript expression in the page until it is truthy; fail naming ``what`` and the
    page's visible state otherwise."""
    value = wait_until(lambda: js(driver, expression), timeout)
    assert value, "%s not seen within %ss; the page shows: %s" % (
        what or expression, timeout, js(driver, "document.body.innerText")[:2000])
    return value


def sign_in(driver, token):
    js(driver, "document.getElementById('token').value = %r" % token)
    driver.find_element("css selector", "#login-form button[type=submit]").click()


class Stream:
    """``relayd connect PATH`` fed from a thread with 64 KiB chunks until :meth:`stop`."""

    CHUNK = b"x" * 65536

    def __init__(self, relay, path, tmp_path):
        self.err = open(str(tmp_path / "connect.err"), "wb")
        self.proc = subprocess.Popen(cli("connect", path, "-x", connection_string(relay)), stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=self.err, env=cli_env(), cwd=REPO)
        self.sent = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self):
        try:
            while not self.done.is_set():
                self.proc.stdin.write(self.CHUNK)
                self.sent += len(self.CHUNK)
                time.sleep(0.002)  # paced: a steady stream the page samples every second
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    def stop(self):
        self.done.set()
        self.thread.join(10)
        try:
            self.proc.wait(20)
        finally:
            stop_process(self.proc)
            self.err.close()


def test_status_page_in_chromium(relay, browser, tmp_path):
    shown = 'Orders <img src=x id=injected> "&amp;'
    assert call(relay, "PUT", "entities/orders", {"display_name": shown})[0] == 201
    assert call(relay, "PUT", "entities/prices", {"kind": "multicast"})[0] == 201
    listener = start_listen(relay, str(tmp_path / "listen.err"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, path="orders")
    stream = None
    try:
        browser.get(relay.http_url + PAGE)
        wait_page(browser, "!document.getElementById('login').hidden", what="the login form")

        # a token signed with the wrong key, then an expired one: a message, the form again
        wrong = sas.make_token(relay.http_url + "/", "root", "d3Jvbmcta2V5LW9mLWEtdGVzdA==", int(time.time()) + 300)
        sign_in(browser, wrong)
        message = wait_page(browser, "document.getElementById('login-error').textContent", what="the refusal")
        assert "401" in message and "token" in message.lower(), message
        assert js(browser, "!document.getElementById('login').hidden && document.getElementById('dashboard').hidden")
        assert js(browser, "sessionStorage.length") == 0  # a refused token is not kept
        expired = sas.make_token(relay.http_url + "/", "root", ROOT_KEY, int(time.time()) - 10)
        js(browser, "document.getElementById('login-error').textContent = ''")
        sign_in(browser, expired)
        message = wait_page(browser, "document.getElementById('login-error').textContent", what="the expiry")
        assert "expired" in message.lower(), message

        # a token of a rule without Manage: 403 and what to use instead
        send_only = sas.make_token(relay.http_url + "/", "sender", SEND_KEY, int(time.time()) + 300)
        js(browser, "document.getElementById('login-error').textContent = ''")
        sign_in(browser, send_only)
        message = wait_page(browser, "document.getElementById('login-error').textContent", what="the 403")
        assert "403" in message and "Manage" in message, message

        # the right token: the entities with kind, state and listeners
        token = manage_token(relay, ttl=600)
        sign_in(browser, token)
        wait_page(browser, "!document.getElementById('dashboard').hidden", what="the dashboard")
        row = "document.querySelector('#entities tr[data-path=\"%s\"]')"
        wait_page(browser, (row % "orders") + " && " + (row % "orders") + ".dataset.online === 'true'",
                  what="orders online")
        assert js(browser, (row % "orders") + ".dataset.listeners") == "1"
        assert "s)" in js(browser, (row % "orders") + ".cells[4].textContent")  # online since: when (how long)
        assert "hybrid" in js(browser, (row % "orders") + ".innerText").lower()
        assert shown in js(browser, (row % "orders") + ".cells[0].textContent")  # text, never markup
        assert js(browser, "document.getElementById('injected')") is None
        assert js(browser, (row % "prices") + ".dataset.online") == "false"
        assert "multicast" in js(browser, (row % "prices") + ".innerText").lower()
        for path in ("echo", "open", "few", "scoped"):  # the config file's entities too
            assert js(browser, row % path) is not None, path

        # a transfer: the graph and the rates change while it runs
        wait_page(browser, "document.getElementById('graph').dataset.samples > 1", what="graph samples")
        before = js(browser, "document.getElementById('graph').toDataURL()")
        stream = Stream(relay, "orders", tmp_path)
        wait_page(browser, "Number(document.getElementById('rate-up').dataset.bps) > 100000", timeout=30,
                  what="bytes/s up over 100 kB/s")
        wait_page(browser, "Number(document.getElementById('graph').dataset.busySamples) >= 3",
                  what="three seconds of the transfer on the graph")
        wait_page(browser, "Number(document.getElementById('live-connections').dataset.count) >= 1",
                  what="a live connection")
        assert js(browser, "document.getElementById('events-state').textContent") == "live"
        wait_page(browser, "document.querySelector('#events tr[data-name=SenderListenerConnectionEstablished]"
                           "[data-entity=orders]')", what="the connection's event")
        assert js(browser, "document.getElementById('graph').toDataURL()") != before
        shot = tmp_path / "status-page.png"
        assert browser.save_screenshot(str(shot))
        print("status page screenshot: %s" % shot)
        with open(str(shot), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(str(shot)) > 10000
        assert stream.sent > 0

        # the token stays out of the URL and the relay's log
        assert "sig=" not in browser.current_url
        signature = token.split("sig=")[1].split("&")[0]
        assert signature not in relay.log_text()
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
                  and not re.search(r"status of 40[13]", e["message"])]
        assert not errors, errors  # no CSP violation or script error
    finally:
        if stream is not None:
            stream.stop()
        stop_process(listener)


def test_a_large_namespace_is_listed_less_often_and_cut_at_500_rows(browser, tmp_path):
    """Over ``LARGE_NAMESPACE`` (500) entities the page reads the entity list only every tenth
    poll (the counts still every second) and draws 500 rows, saying how many more there are."""
    many = "".join('\n[[hybrid_connections]]\npath = "bulk/e%03d"\n' % i for i in range(505))
    relay = RelayProcess(tmp_path, write_config(tmp_path, extra=many))
    try:
        browser.get(relay.http_url + PAGE)
        wait_page(browser, "!document.getElementById('login').hidden", what="the login form")
        sign_in(browser, manage_token(relay))
        calls = "performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/$relayd/%s')).length"
        wait_page(browser, (calls % "status") + " >= 4", what="four polls")
        assert js(browser, calls % "entities") == 1
        assert js(browser, "document.querySelectorAll('#entities tbody tr').length") == 500
        assert js(browser, "document.getElementById('entities-more').textContent").startswith("and 9 more")
        assert js(browser, "document.getElementById('count-entities').textContent") == "509"
        relay.stop()  # the relay goes away: the page says so and keeps trying
        banner = wait_page(browser, "!document.getElementById('banner').hidden && "
                           "document.getElementById('banner').textContent", what="the banner")
        assert "Cannot read the relay's status" in banner and "retrying" in banner, banner
        assert js(browser, "!document.getElementById('dashboard').hidden")
    finally:
        relay.stop()


def test_a_token_expiring_while_the_page_is_open_brings_the_form_back(relay, browser):
    browser.get(relay.http_url + PAGE)
    wait_page(browser, "!document.getElementById('login').hidden", what="the login form")
    sign_in(browser, manage_token(relay, ttl=3))
    wait_page(browser, "!document.getElementById('dashboard').hidden", what="the dashboard")
    message = wait_page(browser, "!document.getElementById('login').hidden && "
                        "document.getElementById('login-error').textContent", timeout=15, what="the form again")
    assert message.startswith("Signed out. The relay refused the token (401)") and "expired" in message, message
    assert js(browser, "document.getElementById('dashboard').hidden && sessionStorage.length === 0")
