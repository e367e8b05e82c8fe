"""The door contract: every front door (WebSocket sender, HTTP, TCP port-mapped, net.tcp) keeps
the same promises to its sender and to the Hybrid Connections listener, each in its own
language.  The whole relay runs in memory on a fake clock (:mod:`tests.contract.harness`);
the listener is scripted and speaks real WebSocket bytes; the door is the parameter
(:mod:`tests.contract.doors`).

Promises: no listener, a rejecting listener and an accept deadline that passes are refused the
door's way; deleting the entity closes everything on it with 1001; a listener whose token
expires is closed with 1008 and gets no more offers, unless it renewed the token; a TCP
half-close crosses the relay as the empty-message marker, both ways; a reader that stops
reading stops the writer (the relay holds a bounded amount), and everything arrives once it
reads again.
"""

import pytest
from twisted.internet.error import ConnectionDone

from tests.contract import harness
from tests.contract.doors import DOORS, HALF_CLOSE_DOORS, STREAM_DOORS, HttpDoor

CHUNK = 64 * 1024
VOLUME = 64 * CHUNK  # what a stalled reader's writer tries to push through (4 MiB)
RELAY_HOLDS_AT_MOST = 1024 * 1024  # queued inside the relay while the reader is stalled


def door_param(doors):
    return pytest.mark.parametrize("door_class", doors, ids=[d.name for d in doors])


def offered(relay, control, door):
    """The door's sender arrives; the listener gets its offer (accept or request)."""
    before = len(control.offers)
    door.start()
    relay.pump()
    assert len(control.offers) == before + 1, control.offers
    offer = control.offers[-1]
    assert list(offer) == [door.offer_kind]
    return offer


def paired(relay, door_class):
    """A listener, a sender through the door, and the rendezvous leg that accepted it."""
    control = harness.listen(relay)
    door = door_class(relay)
    leg = harness.accept(relay, offered(relay, control, door))
    assert leg.opened and door.paired()
    return control, door, leg


@door_param(DOORS)
class TestEveryDoor:
    def test_no_listener(self, relay, door_class):
        door = door_class(relay)
        door.start()
        relay.pump()
        assert door.refusal() == door.NO_LISTENER

    def test_listener_rejects(self, relay, door_class):
        control = harness.listen(relay)
        door = door_class(relay)
        offer = offered(relay, control, door)
        if door.offer_kind == "accept":
            leg = harness.reject(relay, offer, 403, "not you")
            assert leg.status == 410  # the rejecting handshake itself ends with 410 Gone
        else:
            harness.respond(relay, control, offer, 403)
        assert door.refusal() == door.REJECTED
        assert not control.closed

    def test_accept_deadline(self, relay, door_class):
        control = harness.listen(relay)
        door = door_class(relay)
        offered(relay, control, door)
        # the HTTP door waits for the entity's response timeout (60 s), the others for the
        # relay's accept timeout
        deadline = 60 if door.offer_kind == "request" else harness.ACCEPT_TIMEOUT
        relay.advance(deadline - 1)
        assert door.refusal() is None
        relay.advance(2)
        assert door.refusal() == door.TIMED_OUT
        assert not control.closed  # a slow listener is not a broken one

    def test_token_expiry_closes_the_listener_with_1008(self, relay, door_class):
        control = harness.listen(relay, lifetime=10)
        relay.advance(9)
        assert not control.closed
        relay.advance(2)
        assert control.close_code == 1008
        door = door_class(relay)
        door.start()
        relay.pump()
        assert door.refusal() == door.NO_LISTENER

    def test_renewed_token_keeps_the_listener(self, relay, door_class):
        control = harness.listen(relay, lifetime=10)
        relay.advance(5)
        harness.renew(relay, control, lifetime=3600)
        relay.advance(60)
        assert not control.closed
        offered(relay, control, door_class(relay))

    def test_entity_deleted_while_offered(self, relay, door_class):
        control = harness.listen(relay)
        door = door_class(relay)
        offered(relay, control, door)
        relay.delete_entity()
        assert control.close_code == 1001
        # the HTTP door answers the pending request 404: the entity is gone (not a 504 that
        # blames the listener's response time)
        assert door.refusal() == (404 if door_class is HttpDoor else door.NO_LISTENER)


@door_param(STREAM_DOORS)
class TestStreamDoors:
    def test_bytes_both_ways(self, relay, door_class):
        _control, door, leg = paired(relay, door_class)
        door.send(b"ping")
        leg.sendMessage(b"pong", isBinary=True)
        relay.pump()
        assert leg.received().endswith(b"ping")
        assert door.received() == b"pong"

    def test_entity_deleted_while_connected_closes_with_1001(self, relay, door_class):
        control, door, leg = paired(relay, door_class)
        relay.delete_entity()
        assert control.close_code == 1001 and leg.close_code == 1001
        assert door.close_code() == (1001 if door.name == "websocket" else "closed")

    def test_a_stalled_listener_pauses_the_sender(self, relay, door_class):
        _control, door, leg = paired(relay, door_class)
        relay.network.stall(leg.transport)
        sent = bytes(i % 251 for i in range(CHUNK))
        for _ in range(VOLUME // CHUNK):
            door.send(sent)
            relay.pump()
        relay_side = door.transport.peer  # the relay's end of the sender's connection
        assert not relay_side.reading, "the relay kept reading a sender whose listener stalled"
        assert leg.transport.peer.queued + relay_side.queued < RELAY_HOLDS_AT_MOST
        assert door.transport.queued > VOLUME - RELAY_HOLDS_AT_MOST  # the rest waits at the sender
        relay.network.stall(leg.transport, False)
        relay.pump()
        assert relay_side.reading
        assert leg.received().endswith(sent * (VOLUME // CHUNK))

    def test_a_stalled_sender_pauses_the_listener(self, relay, door_class):
        _control, door, leg = paired(relay, door_class)
        relay.network.stall(door.transport)
        sent = bytes(i % 253 for i in range(CHUNK))
        for _ in range(VOLUME // CHUNK):
            leg.sendMessage(sent, isBinary=True)
            relay.pump()
        relay_side = leg.transport.peer
        assert not relay_side.reading, "the relay kept reading a listener whose sender stalled"
        assert door.transport.peer.queued + relay_side.queued < RELAY_HOLDS_AT_MOST
        relay.network.stall(door.transport, False)
        relay.pump()
        assert door.received() == sent * (VOLUME // CHUNK)


@door_param(HALF_CLOSE_DOORS)
class TestHalfClose:
    def test_sender_half_closes_first(self, relay, door_class):
        _control, door, leg = paired(relay, door_class)
        door.send(b"request")
        door.shutdown_write()
        relay.pump()
        assert leg.messages[-2:] == [(b"request", True), (b"", True)]  # the half-close marker
        assert not leg.closed  # the other direction is still open
        leg.sendMessage(b"answer", isBinary=True)
        relay.pump()
        assert door.received() == b"answer"
        leg.sendMessage(b"", isBinary=True)  # both halves closed: the connection ends cleanly
        relay.pump()
        assert door.client.lost.check(ConnectionDone)

    def test_listener_half_closes_first(self, relay, door_class):
        _control, door, leg = paired(relay, door_class)
        leg.sendMessage(b"greeting", isBinary=True)
        leg.sendMessage(b"", isBinary=True)
        relay.pump()
        assert door.received() == b"greeting" and door.client.eof and door.client.lost is None
        door.send(b"still talking")
        door.shutdown_write()
        relay.pump()
        assert leg.messages[-2:] == [(b"still talking", True), (b"", True)]
        assert door.client.lost.check(ConnectionDone)


class TestHttpDoorBackpressure:
    def test_a_stalled_listener_pauses_a_large_upload(self, relay):
        control = harness.listen(relay)
        door = HttpDoor(relay)
        body = bytes(i % 251 for i in range(VOLUME))
        door.start(body=body[:CHUNK], length=VOLUME)  # the head and the first piece; the rest follows
        relay.pump()
        offer = control.offers[-1]
        assert "address" in offer["request"]  # a large request comes over a rendezvous leg
        leg = harness.websocket(relay, offer["request"]["address"])
        relay.network.stall(leg.transport)
        for i in range(1, VOLUME // CHUNK):
            door.send(body[i * CHUNK:(i + 1) * CHUNK])
            relay.pump()
        relay_side = door.transport.peer
        assert not relay_side.reading
        assert leg.transport.peer.queued + relay_side.queued < RELAY_HOLDS_AT_MOST
        relay.network.stall(leg.transport, False)
        relay.pump()
        assert leg.received() == body
