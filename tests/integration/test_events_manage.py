"""Event entities through the management API (issue 11): ``PUT /$relayd/entities/{path}``
with ``kind`` and ``max_message``, kept in the store across a restart, and validated."""

import http.client
import json
import time

import pytest

from relayd.wire import sas
from tests.integration.test_events_http import Publisher, Subscriber, wait_listeners
from tests.support.relay import ROOT_KEY, RelayProcess, write_config


def manage(relay, method, path, spec=None):
    tok = sas.make_token(relay.http_url + "/", "root", ROOT_KEY, int(time.time()) + 300)
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
    try:
        body = json.dumps(spec).encode() if spec is not None else None
        conn.request(method, "/$relayd/entities/" + path, body=body,
                     headers={"Authorization": tok, "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


@pytest.fixture
def relay(tmp_path):
    proc = RelayProcess(tmp_path, write_config(tmp_path))
    yield proc
    proc.stop()


def test_put_an_event_entity_publish_to_it_and_keep_it_across_a_restart(relay, tmp_path):
    status, described = manage(relay, "PUT", "feed", {"kind": "multicast", "max_message": 100})
    assert status == 201, described
    assert (described["kind"], described["max_message"]) == ("multicast", 100)
    subs = [Subscriber(relay, "feed") for _ in range(2)]
    publisher = Publisher(relay, "feed")
    try:
        assert publisher.post(b"x" * 100)[:2] == (202, "2")
        assert publisher.post(b"x" * 101)[0] == 413
    finally:
        publisher.close()
        for sub in subs:
            sub.stop()
    assert wait_listeners(relay, "feed", 0) == 0
    relay.stop()
    again = RelayProcess(tmp_path, write_config(tmp_path))
    try:
        status, described = manage(again, "GET", "feed")
        assert status == 200 and (described["kind"], described["max_message"]) == ("multicast", 100)
        status, described = manage(again, "PUT", "jobs", {"kind": "oneway"})
        assert status == 201 and (described["kind"], described["max_message"]) == ("oneway", 65536)
        publisher = Publisher(again, "jobs")
        try:
            assert publisher.post(b"job")[0] == 502  # oneway, no listener
        finally:
            publisher.close()
    finally:
        again.stop()


@pytest.mark.parametrize("spec, words", [
    ({"kind": "broadcast"}, ["kind", '"multicast"', '"oneway"']),
    ({"kind": "soap"}, ["kind", "config"]),
    ({"max_message": 100}, ["max_message", "kind"]),
    ({"kind": "multicast", "max_message": 0}, ["max_message", "from 1 to"]),
    ({"kind": "oneway", "max_message": "64k"}, ["max_message", "from 1 to"]),
])
def test_bad_event_entity_specs_are_400_with_the_fix(relay, spec, words):
    status, answer = manage(relay, "PUT", "bad", spec)
    assert status == 400, answer
    for word in words:
        assert word in answer["error"]["message"], answer
