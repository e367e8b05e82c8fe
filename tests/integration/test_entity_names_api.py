"""Unsafe entity names through a real relay (issue 8, item 19): the management API refuses
them with 400 and a clear reason, and ``relayd entity add`` refuses them before it sends
anything; the relay's entities stay as they were.  The relay subprocess is the worker's shared
one: a refusal leaves it as it found it."""

import http.client
import json
import subprocess
import sys
import time
import urllib.request

import pytest

from relayd.wire import sas
from tests.support.relay import ROOT_KEY

BAD_OVER_HTTP = [".", "..", "x/../echo", "%2e%2e", "x/%2E%2E/echo", "%E2%84%AAelvin", "stra%C3%9Fe"]


@pytest.mark.parametrize("quoted", BAD_OVER_HTTP)
def test_management_api_refuses_unsafe_names(shared_relay, quoted):
    token = sas.make_token(shared_relay.http_url + "/", "root", ROOT_KEY, int(time.time()) + 60)
    conn = http.client.HTTPConnection("127.0.0.1", shared_relay.port, timeout=10)
    conn.request("PUT", "/$relayd/entities/" + quoted, body=b"{}", headers={"Authorization": token})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 400, body
    message = body["error"]["message"]
    assert "entity path" in message and ("segment" in message or "ASCII letters" in message), message
    req = urllib.request.Request(shared_relay.http_url + "/$relayd/entities", headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=10) as r:
        paths = [e["path"] for e in json.loads(r.read())]
    assert paths == ["echo", "few", "open", "scoped"]


@pytest.mark.parametrize("path", ["..", "x/../echo", "\u212aelvin"])
def test_cli_entity_add_refuses_unsafe_names(shared_relay, path):
    out = subprocess.run([sys.executable, "-m", "relayd.cli", "entity", "add", path, "--url", shared_relay.url,
                          "--rule", "root", "--key", ROOT_KEY], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert ("'.' or '..' segment" in out.stderr or "ASCII letters" in out.stderr), out.stderr
