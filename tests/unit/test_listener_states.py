"""The client listener's lifecycle as a state machine (relayd.client.listener.TRANSITIONS), on a
MemoryReactorClock with the real client protocol on StringTransports: every transition, the
timers each state owns (backoff retry, token renewal, keepalive ping) and that stop() from every
state leaves no timer behind."""

import json

import pytest
from twisted.internet import error as net_error
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from relayd import states
from relayd.client.connection_string import ConnectionInfo
from relayd.client.listener import (CONNECTING, KEEPALIVE, ONLINE, RECONNECT_WAIT, RENEW, RETRY, STOPPED,
                                    TIMERS, TRANSITIONS, HybridListener)
from tests.unit.test_client_units import FixedRng, Wire, make_listener, online_listener, token_expiry


def states_seen(listener, events):
    """Record (status, listener.state) as each on_status call sees it."""
    listener.on_status = lambda s, d: events.append((s, listener.state))


def live_calls(clock):
    return [c for c in clock.getDelayedCalls() if c.active()]


def test_the_table():
    assert set(TRANSITIONS) == {STOPPED, CONNECTING, ONLINE, RECONNECT_WAIT} == set(TIMERS)
    assert all(STOPPED in targets for targets in TRANSITIONS.values())  # stop() from anywhere
    assert TRANSITIONS[STOPPED] == {CONNECTING, STOPPED}
    assert TRANSITIONS[RECONNECT_WAIT] == {CONNECTING, STOPPED}
    assert TIMERS[ONLINE] == {RENEW, KEEPALIVE} and TIMERS[RECONNECT_WAIT] == {RETRY}
    assert not TIMERS[STOPPED] and not TIMERS[CONNECTING]
    with pytest.raises(states.TransitionError, match="client listener: stopped -> online"):
        states.step(TRANSITIONS, "client listener", STOPPED, ONLINE)
    assert states.step(TRANSITIONS, "client listener", ONLINE, RECONNECT_WAIT) == RECONNECT_WAIT


def test_a_move_the_table_forbids_raises_and_changes_nothing():
    clock = MemoryReactorClock()
    listener, _ = make_listener(clock)
    with pytest.raises(states.TransitionError):
        listener._to(ONLINE)
    assert listener.state == STOPPED


def test_transitions_and_the_state_each_status_sees():
    clock = MemoryReactorClock()
    listener, _ = make_listener(clock, keepalive=10, token_ttl=100)
    seen = []
    states_seen(listener, seen)
    assert listener.state == STOPPED and listener.timers == frozenset()
    listener.start()
    assert listener.state == CONNECTING and listener.timers == frozenset() and live_calls(clock) == []
    Wire(clock, 0).answer(404, "Not Found")
    assert listener.state == RECONNECT_WAIT and listener.timers == {RETRY}
    clock.advance(0.5)
    assert listener.state == CONNECTING and listener.timers == frozenset()
    wire = Wire(clock, 1)
    wire.answer()
    assert listener.state == ONLINE and listener.timers == {RENEW, KEEPALIVE}
    assert len(live_calls(clock)) == 2
    wire.drop()
    assert listener.state == RECONNECT_WAIT and listener.timers == {RETRY}
    assert len(live_calls(clock)) == 1  # the channel's renewal and keepalive went with ONLINE
    clock.advance(0.5)
    wire2 = Wire(clock, 2)
    wire2.answer()
    assert listener.state == ONLINE
    assert seen == [("connecting", CONNECTING), ("error", RECONNECT_WAIT), ("retry", RECONNECT_WAIT),
                    ("connecting", CONNECTING), ("online", ONLINE),
                    ("offline", RECONNECT_WAIT), ("retry", RECONNECT_WAIT),
                    ("connecting", CONNECTING), ("online", ONLINE)]
    done = listener.stop()
    wire2.drop()  # the channel stop() closed ends: "offline", and no retry follows
    assert done.called and seen[-1] == ("offline", STOPPED)
    assert listener.state == STOPPED and listener.timers == frozenset() and live_calls(clock) == []


def test_backoff_grows_on_repeated_failures_up_to_the_cap_and_resets_online():
    clock = MemoryReactorClock()
    listener, events = make_listener(clock, backoff=(1, 8), rng=FixedRng(0.999))
    listener.start()
    ceilings = [1, 2, 4, 8, 8, 8]
    for attempt, ceiling in enumerate(ceilings):
        clock.tcpClients[attempt][2].clientConnectionFailed(None, Failure(net_error.ConnectionRefusedError()))
        status, delay = events[-1]
        assert status == "retry" and delay == pytest.approx(0.999 * ceiling)
        assert listener.state == RECONNECT_WAIT and len(live_calls(clock)) == 1
        clock.advance(delay - 0.001)
        assert listener.state == RECONNECT_WAIT and len(clock.tcpClients) == attempt + 1
        clock.advance(0.001)
        assert listener.state == CONNECTING and len(clock.tcpClients) == attempt + 2
    wire = Wire(clock, len(ceilings))
    wire.answer()
    wire.drop()
    assert events[-1] == ("retry", pytest.approx(0.999))  # online reset the count


def test_renewal_runs_on_the_token_of_the_current_channel():
    clock, listener, wire = online_listener(token_ttl=100)  # a token from 0 to 100
    clock.advance(50)
    wire.drop()  # at 50, before the renewal at 80: it is cancelled with ONLINE
    assert RENEW not in listener.timers
    clock.advance(0.5)
    wire = Wire(clock, 1)  # a fresh token at 50.5
    assert token_expiry(wire.headers["ServiceBusAuthorization"]) == 151
    wire.answer()
    clock.advance(30)  # 80.5: past the old channel's renewal time; nothing goes
    assert wire.sent() == [] and listener.last_status[0] == "online"
    clock.advance(49.99)
    assert wire.sent() == []
    clock.advance(0.01)  # 80 s into the new token
    ((opcode, payload),) = wire.sent()
    assert opcode == 1 and token_expiry(json.loads(payload)["renewToken"]["token"]) == 231
    assert listener.last_status == ("renewed", 231) and listener.timers == {RENEW}


def test_a_fixed_signature_arms_no_renewal():
    clock = MemoryReactorClock()
    info = ConnectionInfo.parse("Endpoint=ws://127.0.0.1:9090/;SharedAccessSignature="
                                "SharedAccessSignature sr=x&sig=y&se=9999999999&skn=root")
    listener = HybridListener(clock, info, "echo", lambda r: None, keepalive=0, rng=FixedRng(0.5))
    listener.start()
    Wire(clock, 0).answer()
    assert listener.state == ONLINE and listener.timers == frozenset() and live_calls(clock) == []


def _stopped_in(state, clock):
    listener, _ = make_listener(clock, keepalive=10, token_ttl=100)
    if state != STOPPED:
        listener.start()
    wire = Wire(clock, 0) if state != STOPPED else None
    if state in (ONLINE, RECONNECT_WAIT):
        wire.answer()
    if state == RECONNECT_WAIT:
        wire.drop()
    return listener, wire


@pytest.mark.parametrize("state", [STOPPED, CONNECTING, ONLINE, RECONNECT_WAIT])
def test_stop_from_every_state_cancels_every_timer(state):
    clock = MemoryReactorClock()
    listener, wire = _stopped_in(state, clock)
    assert listener.state == state and listener.timers == TIMERS[state]
    assert len(live_calls(clock)) == len(TIMERS[state])
    done = listener.stop()
    assert listener.state == STOPPED and listener.timers == frozenset() and live_calls(clock) == []
    clients = len(clock.tcpClients)
    clock.advance(10000)
    assert len(clock.tcpClients) == clients and listener.state == STOPPED
    if state == ONLINE:
        assert [op for op, _ in wire.sent()] == [8] and not done.called  # a close frame, nothing else
        wire.drop()
    assert done.called
    listener.stop()  # again: nothing more to do
    assert listener.state == STOPPED


def test_stop_while_online_sends_a_close_and_no_ping_or_renewal():
    clock = MemoryReactorClock()
    listener, events = make_listener(clock, keepalive=10, token_ttl=100)
    listener.start()
    wire = Wire(clock, 0)
    wire.answer()
    listener.stop()
    ((opcode, payload),) = wire.sent()
    assert opcode == 8 and payload[:2] == b"\x03\xe8"  # close 1000
    clock.advance(1000)
    assert wire.sent() == [] and [s for s, _ in events if s in ("retry", "renewed")] == []


@pytest.mark.parametrize("status", ["connecting", "online", "error", "offline", "retry"])
def test_stop_inside_on_status_leaves_no_timer(status):
    clock = MemoryReactorClock()
    listener, _ = make_listener(clock, keepalive=10, token_ttl=100)
    calls = []

    def on_status(s, detail):
        calls.append(s)
        if s == status and listener.state != STOPPED:
            listener.stop()

    listener.on_status = on_status
    listener.start()
    if clock.tcpClients:
        wire = Wire(clock, 0)
        if status == "error" or status == "retry":
            wire.answer(401, "Unauthorized")
        else:
            wire.answer()
            if listener.state == ONLINE:
                wire.drop()
    assert listener.state == STOPPED and listener.timers == frozenset() and live_calls(clock) == []
    clock.advance(10000)
    assert len(clock.tcpClients) == (0 if status == "connecting" else 1)  # stopped before opening one
    assert calls[-1] == status
