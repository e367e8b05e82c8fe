"""A token's scope never climbs above its own entity path (issue 8, item 18): a SAS token whose
``sr`` carries dot segments is refused with 401 by a real relay, the management API included."""

import json
import time
import urllib.error
import urllib.request

import pytest

from relayd.wire import sas
from tests.support.relay import ROOT_KEY


def get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": token})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("suffix", ["/echo/..", "/echo/%2e%2e", "/echo/../..", "/echo/..%2f", "/echo/%2E%2E/"])
def test_management_api_refuses_token_scoped_with_dot_segments(shared_relay, suffix):
    url = shared_relay.http_url + "/$relayd/entities"
    se = int(time.time()) + 60
    # The control: a token for the namespace root opens the management API.
    status, body = get(url, sas.make_token(shared_relay.http_url + "/", "root", ROOT_KEY, se))
    assert status == 200 and "echo" in [e["path"] for e in body]
    # A token the operator scoped to /echo does not reach it, ...
    status, body = get(url, sas.make_token(shared_relay.http_url + "/echo", "root", ROOT_KEY, se))
    assert status == 403
    # ... and dot segments in its sr do not lift that scope to the namespace: a clear 401.
    status, body = get(url, sas.make_token(shared_relay.http_url + suffix, "root", ROOT_KEY, se))
    assert status == 401, body
    assert "cannot climb above its entity path" in body["error"]["message"]
    assert "sig=" not in json.dumps(body)
