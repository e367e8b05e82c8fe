"""A listener's accept leg is never left open when its sender is gone (issue 10, splice leak).

Once the listener's accept leg has opened, the rendezvous is complete and the leg is handed to
the sender's still-open handshake, which then sends its 101 and splices both legs.  If the
sender's connection ends in between -- its handshake fails after pairing (here: an extension
offer Autobahn only parses once the handshake is being completed, so the sender gets 400 after
the listener accepted), or the sender simply disconnects as the listener accepts -- the accept
leg must be closed with 1001 (going away) and nothing of the rendezvous kept; before the fix it
stayed open forever, unpaired.

Real sockets against a ``twistd -n relayd`` process (the shared relay checks after each test
that no rendezvous is left pending).
"""

import socket
import struct
import time

import pytest

from tests.support.rawws import Closed, RawWS, hc_url, listen, token
from tests.support.relay import port_door_relay, relay_status

GOING_AWAY = 1001
CLOSE_DEADLINE = 5  # seconds for the relay to close an orphaned leg (it should be at once)


def connect_sender(relay, **headers):
    return RawWS(relay.port).start(hc_url(relay, "echo", "connect"),
                                   dict({"ServiceBusAuthorization": token(relay, "echo")}, **headers))


def assert_closed_going_away(leg):
    """The leg gets a close frame 1001, and once it answers, the relay ends the TCP connection."""
    with pytest.raises(Closed) as closed:
        leg.recv_message(timeout=CLOSE_DEADLINE)
    assert closed.value.code == GOING_AWAY, closed.value.reason
    leg.send(b"\x88\x82abcd" + bytes(a ^ b for a, b in zip(struct.pack("!H", GOING_AWAY), b"ab")))
    leg.sock.settimeout(CLOSE_DEADLINE)
    assert leg.sock.recv(1) == b"", "the relay must end the leg's TCP connection after the close handshake"


def wait_no_pending(relay):
    deadline = time.monotonic() + CLOSE_DEADLINE
    while relay_status(relay)["pending_rendezvous"]:
        assert time.monotonic() < deadline, "a rendezvous is still pending"
        time.sleep(0.02)


def test_sender_handshake_failing_after_pairing_closes_the_accept_leg(shared_relay):
    relay = shared_relay
    ctl = listen(relay)
    # Autobahn rejects this offer (window bits 8..15) only while completing the handshake,
    # i.e. after the listener's leg has been paired with the sender.
    sender = connect_sender(relay, **{"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits=99"})
    leg = None
    try:
        accept = ctl.recv_json()["accept"]
        leg = RawWS(relay.port).start(accept["address"])
        assert leg.finish() == 101, leg.status
        assert sender.finish() == 400, sender.status
        assert_closed_going_away(leg)
        wait_no_pending(relay)
        # the listener is unaffected: the next sender pairs and relays
        sender2 = connect_sender(relay)
        leg2 = RawWS(relay.port).start(ctl.recv_json()["accept"]["address"])
        assert leg2.finish() == 101 and sender2.finish() == 101
        sender2.send_message(b"still works")
        assert leg2.recv_message() == (2, b"still works")
        sender2.close()
        leg2.close()
    finally:
        for s in (sender, leg, ctl):
            if s is not None:
                s.close()


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_sender_gone_as_the_listener_accepts_leaves_no_open_leg(shared_relay, how):
    """The sender disconnects at the moment the listener opens its leg, in both orders the relay
    may see them: the leg is refused (403, the rendezvous is gone) or opened and closed with 1001;
    never opened and left open."""
    relay = shared_relay
    ctl = listen(relay)
    try:
        for attempt in range(6):
            sender = connect_sender(relay)
            accept = ctl.recv_json()["accept"]
            if how == "rst":
                sender.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            leg = RawWS(relay.port)
            if attempt % 2:
                sender.close()
                leg.start(accept["address"])
            else:
                leg.start(accept["address"])
                sender.close()
            try:
                status = leg.finish()
                assert status in (101, 403), status
                if status == 101:
                    assert_closed_going_away(leg)
            finally:
                leg.close()
        wait_no_pending(relay)
    finally:
        ctl.close()




@pytest.fixture(scope="module")
def door_relay(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("orphaned-tcp-leg")
    proc = port_door_relay(tmp)
    yield proc
    proc.stop()


def test_tcp_client_reset_as_the_listener_accepts_leaves_no_open_leg(door_relay):
    """The TCP door's leg: a client that resets while the listener accepts.  The relay does not
    read a waiting client (reading is paused until a listener accepts), so it may learn of the
    reset only once spliced: the leg is then closed (not 1000: the stream broke)."""
    relay = door_relay
    ctl = listen(relay, "tcp")
    try:
        for attempt in range(4):
            client = socket.create_connection(("127.0.0.1", relay.door), timeout=10)
            accept = ctl.recv_json()["accept"]
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            leg = RawWS(relay.port)
            if attempt % 2:
                client.close()
                leg.start(accept["address"])
            else:
                leg.start(accept["address"])
                client.close()
            try:
                status = leg.finish()
                assert status in (101, 403), status
                if status == 101:
                    with pytest.raises((Closed, ConnectionError)):
                        while True:  # an empty binary message (half-close) may come first
                            leg.recv_message(timeout=CLOSE_DEADLINE)
            finally:
                leg.close()
        wait_no_pending(relay)
    finally:
        ctl.close()
