"""How an HTTP exchange's request travels to its listener, as an explicit state machine
(issue 9 item 4): UNROUTED -> OFFERED (with the control channel's offer) -> ON_LEG (over the
rendezvous leg), or UNROUTED -> ON_LEG on a client's kept leg.  The whole relay in memory on a
fake clock with a scripted listener speaking real WebSocket bytes (tests.contract.harness)."""

import json

import pytest

from relayd import states
from relayd.transports.http import upload
from relayd.wire import hc
from tests.contract import harness
from tests.contract.doors import HttpDoor

LARGE = hc.MAX_CONTROL_BODY + 1  # over the control channel's limit: the request goes over a leg


def exchanges(relay):
    return list(relay.service.http.exchanges.values())


def respond_on_leg(relay, leg, request_id, body=b"done"):
    response = {"response": {"requestId": request_id, "statusCode": 200, "statusDescription": "OK",
                             "responseHeaders": {}, "body": True}}
    leg.sendMessage(json.dumps(response).encode(), isBinary=False)
    leg.sendMessage(body, isBinary=True)
    relay.pump()


def test_the_route_table_allows_only_forward_moves():
    table = upload.ROUTES
    assert table[upload.UNROUTED] == {upload.OFFERED, upload.ON_LEG}
    assert table[upload.OFFERED] == {upload.ON_LEG}
    assert table[upload.ON_LEG] == set()
    with pytest.raises(states.TransitionError, match="HTTP exchange: route: on leg -> offered"):
        states.step(table, "HTTP exchange: route", upload.ON_LEG, upload.OFFERED)


def test_a_small_request_goes_with_the_offer_and_stays_offered(relay):
    control = harness.listen(relay)
    door = HttpDoor(relay)
    door.start(body=b"small")
    relay.pump()
    (exchange,) = exchanges(relay)
    assert exchange.route == upload.OFFERED
    offer = control.offers[-1]["request"]
    assert offer["method"] == "POST" and control.messages[-1] == (b"small", True)
    harness.respond(relay, control, control.offers[-1], body=b"ok")
    assert door.status() == 200 and door.received().endswith(b"ok")
    assert exchange.route == upload.OFFERED  # the response came on the control channel


def test_a_large_request_is_offered_then_sent_on_the_leg(relay):
    control = harness.listen(relay)
    door = HttpDoor(relay)
    body = bytes(i % 251 for i in range(LARGE))
    door.start(body=body[:1000], length=LARGE)
    relay.pump()
    (exchange,) = exchanges(relay)
    assert exchange.route == upload.OFFERED
    offer = control.offers[-1]["request"]
    assert "method" not in offer  # only announced: the request itself goes over the leg
    assert exchange.pending_body  # held (client paused) until the leg arrives
    leg = harness.websocket(relay, offer["address"])
    assert exchange.route == upload.ON_LEG
    door.send(body[1000:])
    relay.pump()
    request = json.loads(leg.messages[0][0])["request"]
    assert request["method"] == "POST" and leg.received() == body
    respond_on_leg(relay, leg, request["id"])
    assert door.status() == 200 and door.received().endswith(b"\r\n4\r\ndone\r\n0\r\n\r\n")  # chunked


def test_a_kept_leg_carries_the_next_request_at_once(relay):
    control = harness.listen(relay)
    door = HttpDoor(relay)
    body = b"x" * LARGE
    door.start(body=body)
    relay.pump()
    leg = harness.websocket(relay, control.offers[-1]["request"]["address"])
    first = json.loads(leg.messages[0][0])["request"]
    respond_on_leg(relay, leg, first["id"])
    assert door.status() == 200
    offers = len(control.offers)
    door.send(b"GET /%s/again HTTP/1.1\r\nHost: %s\r\n\r\n" % (harness.ENTITY.encode(), harness.HOST.encode()))
    relay.pump()
    (exchange,) = exchanges(relay)
    assert exchange.route == upload.ON_LEG  # straight onto the kept leg, never offered
    assert len(control.offers) == offers
    second = json.loads(leg.messages[-1][0])["request"]
    assert second["requestTarget"].endswith("/again") and second["id"] != first["id"]
