"""Calls to a test relay's management API (``/$relayd/...``) with a SAS token for the namespace."""

import http.client
import json
import time

from relayd.wire import sas
from tests.support.relay import ROOT_KEY


def manage_token(relay, rule="root", key=ROOT_KEY, ttl=300):
    return sas.make_token("http://127.0.0.1:%d/" % relay.port, rule, key, int(time.time()) + ttl)


def call(relay, method, path, body=None, rule="root", key=ROOT_KEY, token=None, timeout=10):
    """``(status, decoded JSON body)`` of ``method /$relayd/<path>``; ``body`` is sent as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=timeout)
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Authorization": token or manage_token(relay, rule, key)}
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, "/$relayd/" + path.lstrip("/"), body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None)
    finally:
        conn.close()


def relay_of_its_own(tmp_path_factory, name, extra=""):
    """For a module-scoped fixture: ``yield from relay_of_its_own(...)`` runs a relay with the test
    config (plus ``extra``) that the module's tests may change, and stops it after them."""
    from tests.support.relay import RelayProcess, write_config

    work = tmp_path_factory.mktemp(name)
    proc = RelayProcess(work, write_config(work, extra=extra))
    try:
        yield proc
    finally:
        proc.stop()
