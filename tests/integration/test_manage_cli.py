"""``relayd entity create|update|list|show|delete`` and ``relayd rule
create|list|show|regenerate|delete`` end to end against a real ``twistd -n relayd`` (issue 12
item 6): each prints the relay's JSON answer; a refusal prints the status and the relay's
message on stderr with exit status 1, a mistake on the command line exits 2."""

import json
import subprocess

import pytest

from tests.support.manage import relay_of_its_own
from tests.support.cli import cli, cli_env, connection_string
from tests.support.rawws import RawWS, hc_url
from relayd.wire import sas

import time


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    yield from relay_of_its_own(tmp_path_factory, "cli-manage")


def relayd(relay, *args, status=0):
    out = subprocess.run(cli(*args, "-x", connection_string(relay)), capture_output=True, text=True, timeout=60,
                         env=cli_env(), stdin=subprocess.DEVNULL)
    assert out.returncode == status, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    return json.loads(out.stdout) if status == 0 else out.stderr


def test_entity_commands(relay):
    made = relayd(relay, "entity", "create", "cli/svc", "--discovery", "public", "--display-name", "CLI service",
                  "--max-listeners", "4")
    assert (made["path"], made["discovery"], made["display_name"], made["max_listeners"]) == (
        "cli/svc", "public", "CLI service", 4)
    updated = relayd(relay, "entity", "update", "cli/svc", "--user-metadata", "owner=ops", "--anonymous")
    assert (updated["display_name"], updated["max_listeners"], updated["user_metadata"]) == ("CLI service", 4, "owner=ops")
    assert updated["requires_client_authorization"] is False
    assert updated["created_at"] == made["created_at"] and updated["updated_at"] >= made["updated_at"]
    assert relayd(relay, "entity", "show", "cli/svc")["user_metadata"] == "owner=ops"
    assert "cli/svc" in [e["path"] for e in relayd(relay, "entity", "list")]
    assert relayd(relay, "entity", "add", "cli/old")["path"] == "cli/old"  # add: create's old name
    err = relayd(relay, "entity", "update", "echo", "--display-name", "x", status=1)
    assert "declared in the config file" in err
    err = relayd(relay, "entity", "create", "cli/bad", "--user-metadata", "m" * 1025, status=1)
    assert "400 user_metadata must be a string of at most 1024 characters" in err
    err = relayd(relay, "entity", "update", "cli/none", "--display-name", "x", status=1)
    assert "404 no entity 'cli/none'" in err
    for path in ("cli/svc", "cli/old"):
        assert relayd(relay, "entity", "delete", path) == {"deleted": path}
    relayd(relay, "entity", "create", "cli/../x", status=2)


def test_rule_commands(relay):
    made = relayd(relay, "rule", "create", "cli-ops", "--rights", "Listen,Send")
    assert (made["name"], made["rights"], made["static"]) == ("cli-ops", ["Listen", "Send"], False)
    assert relayd(relay, "rule", "show", "cli-ops") == made
    assert "cli-ops" in [r["name"] for r in relayd(relay, "rule", "list")]
    again = relayd(relay, "rule", "regenerate", "cli-ops", "primary")
    assert again["primary_key"] != made["primary_key"] and again["secondary_key"] == made["secondary_key"]
    given = relayd(relay, "rule", "regenerate", "cli-ops", "secondary", "--new-key", "k" * 32)
    assert given["secondary_key"] == "k" * 32
    token = sas.make_token(relay.http_url + "/echo", "cli-ops", "k" * 32, int(time.time()) + 60)
    ws = RawWS(relay.port).start(hc_url(relay, "echo", "listen"), {"ServiceBusAuthorization": token})
    assert ws.finish() == 101
    ws.close()
    assert relayd(relay, "rule", "delete", "cli-ops") == {"deleted": "cli-ops"}
    assert "404 the namespace has no rule 'cli-ops'" in relayd(relay, "rule", "show", "cli-ops", status=1)
    own = relayd(relay, "rule", "create", "mine", "--rights", "Send", "--entity", "scoped",
                 "--primary-key", "p" * 20)
    assert (own["scope"], own["primary_key"]) == ("scoped", "p" * 20)
    assert [r["name"] for r in relayd(relay, "rule", "list", "--entity", "scoped")] == ["scoped-send", "mine"]
    assert "409" in relayd(relay, "rule", "delete", "scoped-send", "--entity", "scoped", status=1)
    assert relayd(relay, "rule", "delete", "mine", "--entity", "scoped") == {"deleted": "mine"}
    err = relayd(relay, "rule", "create", "x", "--rights", "Fly", status=1)
    assert "400 rights: unknown right 'Fly'" in err
    relayd(relay, "rule", "regenerate", "x", "tertiary", status=2)
