"""SAS rules at run time (issue 12 item 6) through a real ``twistd -n relayd``: create, list,
get, regenerate, delete namespace and entity rules over the management API; the changes apply
to tokens at once and close the control channels and senders their rule or key opened, with
the documented close code and reason (relayd.access.REVOKED_CODE / REVOKED_REASON); tokens
signed with the rule's other key keep working; rules from the config file are static (409)."""

import time

import pytest

from relayd import access
from relayd.wire import sas
from tests.support.manage import call, relay_of_its_own
from tests.support.rawws import Closed, RawWS, hc_url

PRIMARY = "cHJpbWFyeS1rZXktb2YtYS1ydW50aW1lLXJ1bGU="
SECONDARY = "c2Vjb25kYXJ5LWtleS1vZi1hLXJ1bnRpbWUtcnVsZQ=="


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    yield from relay_of_its_own(tmp_path_factory, "rules")


def hc_token(relay, path, rule, key):
    return sas.make_token("%s/%s" % (relay.http_url, path), rule, key, int(time.time()) + 600)


def open_ws(relay, path, action, rule, key):
    """(handshake status, the raw socket) of a listen or connect on ``path``."""
    ws = RawWS(relay.port).start(hc_url(relay, path, action),
                                 {"ServiceBusAuthorization": hc_token(relay, path, rule, key)})
    return ws.finish(), ws


def expect_close(ws, timeout=10):
    """The (code, reason) of the close frame the relay sends ``ws`` (messages before it are skipped)."""
    deadline = time.monotonic() + timeout
    with pytest.raises(Closed) as e:
        while time.monotonic() < deadline:
            ws.recv_message(max(0.05, deadline - time.monotonic()))
    return e.value.code, e.value.reason


def still_open(ws):
    """True when ``ws`` gets no close frame within a short while (it answers a ping)."""
    from tests.support.rawws import frame

    ws.send(frame(9, b"are-you-there"))
    pongs = []
    try:
        ws.recv_message(1.0, on_control=lambda op, payload: pongs.append((op, payload)))
    except Closed:
        return False
    except TimeoutError:
        pass
    return (10, b"are-you-there") in pongs


def make_rule(relay, name, rights, path=None, **keys):
    where = "rules/%s" % name if path is None else "entities/%s/$rules/%s" % (path, name)
    status, body = call(relay, "PUT", where, {"rights": rights, **keys})
    assert status == 201, body
    return body


def test_a_created_rule_works_at_once_and_is_listed_with_its_keys(relay):
    body = make_rule(relay, "ops", ["listen", "Send"])
    assert (body["name"], body["rights"], body["scope"], body["static"]) == ("ops", ["Listen", "Send"], "namespace", False)
    assert len(body["primary_key"]) == 44 and len(body["secondary_key"]) == 44
    assert body["primary_key"] != body["secondary_key"]
    status, ws = open_ws(relay, "echo", "listen", "ops", body["primary_key"])
    assert status == 101
    ws.close()
    status, listed = call(relay, "GET", "rules")
    by_name = {r["name"]: r for r in listed}
    assert by_name["ops"]["primary_key"] == body["primary_key"]
    assert by_name["root"]["static"] is True and by_name["ops"]["static"] is False
    assert call(relay, "GET", "rules/ops")[1] == body
    assert call(relay, "DELETE", "rules/ops") == (200, {"deleted": "ops"})
    assert call(relay, "GET", "rules/ops")[0] == 404


def test_regenerating_the_primary_key_closes_what_it_opened_and_keeps_the_secondary(relay):
    for path in ("rot/a", "rot/b"):
        assert call(relay, "PUT", "entities/" + path, {})[0] == 201
    make_rule(relay, "rot", ["Listen", "Send"], primary_key=PRIMARY, secondary_key=SECONDARY)
    status, old_listener = open_ws(relay, "rot/a", "listen", "rot", PRIMARY)
    assert status == 101
    status, other_listener = open_ws(relay, "rot/b", "listen", "rot", SECONDARY)
    assert status == 101
    # a sender signed with the primary key, paired with the listener that used the secondary
    sender = RawWS(relay.port).start(hc_url(relay, "rot/b", "connect"),
                                     {"ServiceBusAuthorization": hc_token(relay, "rot/b", "rot", PRIMARY)})
    accept = other_listener.recv_json()["accept"]
    leg = RawWS(relay.port).start(accept["address"])
    assert leg.finish() == 101 and sender.finish() == 101

    status, body = call(relay, "POST", "rules/rot/regenerate", {"key_type": "primary"})
    assert status == 200, body
    assert body["primary_key"] not in (PRIMARY, SECONDARY) and body["secondary_key"] == SECONDARY
    revoked = (access.REVOKED_CODE, access.REVOKED_REASON)
    assert expect_close(old_listener) == revoked
    assert expect_close(sender) == revoked
    sender.close()  # (a client answers the close; this one just goes)
    assert expect_close(leg)[0] is not None  # the sender's rendezvous with its listener ends with it
    assert still_open(other_listener)
    status, refused = open_ws(relay, "rot/a", "listen", "rot", PRIMARY)
    assert status == 401
    refused.close()
    status, again = open_ws(relay, "rot/a", "listen", "rot", body["primary_key"])
    assert status == 101
    for ws in (old_listener, other_listener, sender, leg, again):
        ws.close()
    # the secondary, regenerated: the other listener goes too
    status, body = call(relay, "POST", "rules/rot/regenerate", {"key_type": "secondary", "key": "x" * 20})
    assert status == 200 and body["secondary_key"] == "x" * 20
    assert call(relay, "DELETE", "rules/rot")[0] == 200
    for path in ("rot/a", "rot/b"):
        assert call(relay, "DELETE", "entities/" + path)[0] == 200


def test_a_deleted_rules_tokens_are_refused_at_once_and_its_connections_closed(relay):
    body = make_rule(relay, "gone", ["Listen"])
    status, listener = open_ws(relay, "echo", "listen", "gone", body["secondary_key"])
    assert status == 101
    assert call(relay, "DELETE", "rules/gone") == (200, {"deleted": "gone"})
    assert expect_close(listener) == (access.REVOKED_CODE, access.REVOKED_REASON)
    listener.close()
    for key in (body["primary_key"], body["secondary_key"]):
        status, ws = open_ws(relay, "echo", "listen", "gone", key)
        assert status == 401
        ws.close()


def test_entity_rules(relay):
    assert call(relay, "PUT", "entities/own/svc", {})[0] == 201
    body = make_rule(relay, "svc-listen", ["Listen"], path="own/svc")
    assert body["scope"] == "own/svc"
    status, ws = open_ws(relay, "own/svc", "listen", "svc-listen", body["primary_key"])
    assert status == 101
    status, refused = open_ws(relay, "echo", "listen", "svc-listen", body["primary_key"])  # another entity
    assert status == 401
    refused.close()
    assert [r["name"] for r in call(relay, "GET", "entities/own/svc/$rules")[1]] == ["svc-listen"]
    assert call(relay, "GET", "entities/own/svc")[1]["rules"] == [{"name": "svc-listen", "rights": ["Listen"]}]
    status, body = call(relay, "POST", "entities/own/svc/$rules/svc-listen/regenerate", {"key_type": "primary"})
    assert status == 200
    assert expect_close(ws)[0] == access.REVOKED_CODE
    ws.close()
    assert call(relay, "DELETE", "entities/own/svc/$rules/svc-listen")[0] == 200
    assert call(relay, "GET", "entities/own/svc/$rules")[1] == []
    assert call(relay, "DELETE", "entities/own/svc")[0] == 200


@pytest.mark.parametrize("method, path, body, status, fragment", [
    ("POST", "rules/root/regenerate", {"key_type": "primary"}, 409, "declared in the config file"),
    ("DELETE", "rules/sender", None, 409, "declared in the config file"),
    ("DELETE", "entities/scoped/$rules/scoped-send", None, 409, "declared in the config file"),
    ("PUT", "rules/root", {"rights": ["Send"]}, 409, "exists"),
    ("PUT", "rules/new", {"rights": ["Fly"]}, 400, "rights"),
    ("PUT", "rules/new", {"rights": []}, 400, '"Listen", "Send" and "Manage"'),
    ("PUT", "rules/new", {"rights": ["Send"], "primary_key": "short"}, 400, "primary_key must be 16 to 256"),
    ("PUT", "rules/new", {"rights": ["Send"], "color": 1}, 400, "unknown fields ['color']"),
    ("PUT", "rules/b%20d", {"rights": ["Send"]}, 400, "rule name"),
    ("POST", "rules/root/regenerate", {"key_type": "tertiary"}, 400, 'key_type must be "primary" or "secondary"'),
    ("POST", "rules/nope/regenerate", {"key_type": "primary"}, 404, "no rule 'nope'"),
    ("GET", "entities/nope/$rules", None, 404, "no entity 'nope'"),
    ("GET", "rules/root/extra", None, 404, "unknown rules path"),
    ("POST", "rules/root", {}, 405, "use GET, PUT or DELETE"),
])
def test_refusals_say_what_to_fix(relay, method, path, body, status, fragment):
    got, reply = call(relay, method, path, body)
    assert got == status, reply
    assert fragment in reply["error"]["message"], reply


def test_an_entity_has_at_most_twelve_rules(relay):
    """MAX_RULES (Azure Relay's limit too) bounds the rules the API keeps per entity."""
    from relayd.namespace import MAX_RULES

    assert call(relay, "PUT", "entities/many", {})[0] == 201
    for i in range(MAX_RULES):
        make_rule(relay, "r%d" % i, ["Send"], path="many")
    status, body = call(relay, "PUT", "entities/many/$rules/one-more", {"rights": ["Send"]})
    assert status == 409 and "has 12 rules, the most there may be" in body["error"]["message"], body
    assert call(relay, "DELETE", "entities/many")[0] == 200


def test_a_websocket_event_publisher_is_closed_when_its_rule_goes(relay):
    """An event publisher on a WebSocket is a sender like the others."""
    assert call(relay, "PUT", "entities/feed", {"kind": "multicast"})[0] == 201
    key = make_rule(relay, "pub", ["Send"], path="feed")["primary_key"]
    status, publisher = open_ws(relay, "feed", "connect", "pub", key)
    assert status == 101
    assert call(relay, "DELETE", "entities/feed/$rules/pub")[0] == 200
    assert expect_close(publisher) == (access.REVOKED_CODE, access.REVOKED_REASON)
    publisher.close()
    assert call(relay, "DELETE", "entities/feed")[0] == 200
