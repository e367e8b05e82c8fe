"""Entity fields of issue 12 (discovery, display_name, user_metadata, created_at, updated_at)
through a real relay: from the config file and the management API's PUT, shown by GET, and
refused with 400 naming the field and what it may be."""

import time

import pytest

from relayd import store

from tests.support.manage import call
from tests.support.relay import RelayProcess, write_config

EXTRA = """
[[hybrid_connections]]
path = "listed"
discovery = "public"
display_name = "Listed service"
user_metadata = "team=ops"
"""


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    work = tmp_path_factory.mktemp("fields")
    before = time.time()
    proc = RelayProcess(work, write_config(work, extra=EXTRA))
    proc.started_between = (before, time.time())
    yield proc
    proc.stop()


def test_config_entities_show_their_fields_and_the_start_time(relay):
    status, body = call(relay, "GET", "entities/listed")
    assert status == 200, body
    assert (body["discovery"], body["display_name"], body["user_metadata"]) == ("public", "Listed service", "team=ops")
    low, high = relay.started_between
    assert low - 1 <= body["created_at"] <= high + 1 and body["updated_at"] == body["created_at"]
    status, echo = call(relay, "GET", "entities/echo")
    assert (echo["discovery"], echo["display_name"], echo["user_metadata"]) == ("private", None, None)


def test_put_sets_the_fields_and_the_timestamps(relay):
    before = time.time()
    status, body = call(relay, "PUT", "entities/svc/a", {"discovery": "public", "display_name": "A",
                                                        "user_metadata": "x" * 1024})
    assert status == 201, body
    assert (body["discovery"], body["display_name"], body["user_metadata"]) == ("public", "A", "x" * 1024)
    assert before - 1 <= body["created_at"] <= time.time() + 1 and body["updated_at"] == body["created_at"]
    time.sleep(0.05)
    status, again = call(relay, "PUT", "entities/svc/a", {"display_name": "B"})
    assert status == 200, again
    assert again["created_at"] == body["created_at"] and again["updated_at"] > body["updated_at"]
    assert (again["discovery"], again["display_name"], again["user_metadata"]) == ("private", "B", None)
    status, got = call(relay, "GET", "entities/svc/a")
    assert {k: got[k] for k in store.ENTITY_COLUMNS} == {k: again[k] for k in store.ENTITY_COLUMNS}
    assert call(relay, "DELETE", "entities/svc/a")[0] == 200


@pytest.mark.parametrize("field, value, expected", [
    ("discovery", "secret", ['discovery must be "private"', '"public"', "'secret'"]),
    ("discovery", None, ["discovery must be"]),
    ("display_name", "d" * 257, ["display_name must be a string of at most 256 characters"]),
    ("display_name", 5, ["display_name must be a string"]),
    ("user_metadata", "m" * 1025, ["user_metadata must be a string of at most 1024 characters"]),
    ("user_metadata", ["x"], ["user_metadata must be a string"]),
    ("created_at", 5, ["unknown fields ['created_at']", "discovery, display_name, user_metadata"]),
])
def test_bad_fields_are_refused_naming_the_field(relay, field, value, expected):
    status, body = call(relay, "PUT", "entities/bad", {field: value})
    assert status == 400, body
    for fragment in expected:
        assert fragment in body["error"]["message"], body
    assert call(relay, "GET", "entities/bad")[0] == 404
