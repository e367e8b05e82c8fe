"""Several relay endpoints for one listener (issue 13 item 6), without a network: the endpoint
lists of connection strings and options, the rotation (a random start, round robin, skipping
endpoints that just failed), the back-off's bounds (exponential, +-50% jitter, capped), and the
listener failing over on a MemoryReactorClock with the real client protocol on StringTransports
(tests.unit.test_client_units.Wire) -- a deterministic rng everywhere."""

import random
import re
import types
from urllib.parse import unquote

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock

from relayd.client.connection_string import ConnectionInfo
from relayd.client.endpoints import DEFAULT_BACKOFF, Backoff, EndpointRotation, Target, resolve_targets
from relayd.client.listener import HybridListener
from tests.unit.test_client_units import KEY, FixedRng, Wire

TWO = "Endpoint=sb://127.0.0.1:9090/,sb://127.0.0.2:9091/;SharedAccessKeyName=root;SharedAccessKey=" + KEY


# -- endpoint lists ---------------------------------------------------------------------------


def test_a_connection_string_lists_endpoints_separated_by_commas():
    info = ConnectionInfo.parse(TWO + ";EntityPath=echo")
    assert [(e.host, e.port, e.secure) for e in info.endpoints()] == [("127.0.0.1", 9090, False),
                                                                       ("127.0.0.2", 9091, False)]
    assert all(e.rule == "root" and e.key == KEY and e.entity_path == "echo" for e in info.endpoints())
    # the first endpoint is the connection's address for everything that is not a listener
    assert info.ws_base() == "ws://127.0.0.1:9090" and info.endpoints()[0].endpoints() == [info.endpoints()[0]]
    assert "127.0.0.2:9091" in repr(info) and KEY not in repr(info)
    # one endpoint: exactly the Azure connection string as before
    one = ConnectionInfo.parse("Endpoint=sb://relay.example.com/;SharedAccessKeyName=root;SharedAccessKey=" + KEY)
    assert one.endpoints() == [one] and (one.host, one.port, one.secure) == ("relay.example.com", 443, True)
    # UseTls applies to every endpoint; a scheme per endpoint otherwise
    tls = ConnectionInfo.parse("Endpoint=sb://a.example:9090/, ws://b.example:80/;UseTls=true;"
                               "SharedAccessKeyName=root;SharedAccessKey=" + KEY)
    assert [(e.host, e.secure) for e in tls.endpoints()] == [("a.example", True), ("b.example", True)]
    with pytest.raises(ValueError, match="endpoint 2 .*scheme"):
        ConnectionInfo.parse("Endpoint=sb://a/,ftp://b/;SharedAccessKeyName=r;SharedAccessKey=k")
    with pytest.raises(ValueError, match="empty"):
        ConnectionInfo.parse("Endpoint=sb://a/,,sb://b/;SharedAccessKeyName=r;SharedAccessKey=k")
    with pytest.raises(ValueError, match="entity path"):
        ConnectionInfo.parse("Endpoint=sb://a/one,sb://b/two;SharedAccessKeyName=r;SharedAccessKey=k")


def test_repeated_url_options_are_endpoints_in_order():
    args = types.SimpleNamespace(connection_string=None, url=["ws://127.0.0.1:9090", "ws://[::1]:9091"],
                                 rule="root", key=KEY)
    info = ConnectionInfo.from_args(args, environ={})
    assert [(e.host, e.port) for e in info.endpoints()] == [("127.0.0.1", 9090), ("::1", 9091)]
    assert info.endpoints()[1].ws_base() == "ws://[::1]:9091"
    # --url still overrides the connection string's endpoints, and a single string still works
    args = types.SimpleNamespace(connection_string=TWO, url="ws://127.0.0.3:1", rule=None, key=None)
    assert [e.port for e in ConnectionInfo.from_args(args, environ={}).endpoints()] == [1]


# -- rotation --------------------------------------------------------------------------------


def targets(*names):
    return [Target(ConnectionInfo.from_url("ws://%s:9090" % n), n) for n in names]


def test_rotation_starts_at_a_random_endpoint_then_goes_round_robin():
    for draw, first in ((0.0, "a"), (0.4, "b"), (0.99, "c")):
        rotation = EndpointRotation(FixedRng(draw))
        rotation.update(targets("a", "b", "c"))
        picked = [rotation.pick().address for _ in range(4)]
        order = "abc" * 2
        start = order.index(first)
        assert picked == list(order[start:start + 3]) + [first]


def test_rotation_skips_endpoints_that_just_failed_until_all_have():
    rotation = EndpointRotation(FixedRng(0.0))
    rotation.update(targets("a", "b", "c"))
    a = rotation.pick()
    rotation.failed(a)
    b = rotation.pick()
    rotation.failed(b)
    assert rotation.pick().address == "c"
    rotation.failed(targets("c")[0])
    # all three failed: a new round, in the same order
    assert [rotation.pick().address for _ in range(3)] == ["a", "b", "c"]
    # a failure is remembered across a new resolution of the same targets; success forgets them
    rotation.failed(targets("a")[0])
    rotation.update(targets("a", "b", "c"))
    assert rotation.pick().address == "b"
    rotation.succeeded()
    assert [rotation.pick().address for _ in range(2)] == ["c", "a"]


def test_a_dropped_channel_moves_on_to_the_next_endpoint_not_back():
    rotation = EndpointRotation(FixedRng(0.0))
    rotation.update(targets("a", "b"))
    on = rotation.pick()
    rotation.succeeded()
    rotation.failed(on)  # its channel dropped
    assert rotation.pick().address == "b"


# -- back-off ----------------------------------------------------------------------------------


def test_default_backoff_doubles_from_a_tenth_of_a_second_to_five_with_half_jitter():
    assert DEFAULT_BACKOFF == (0.1, 5.0, 0.5)
    middle = Backoff(*DEFAULT_BACKOFF[:2], rng=FixedRng(0.5), jitter=DEFAULT_BACKOFF[2])
    assert [round(middle.next(), 6) for _ in range(9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 3.75, 3.75, 3.75]
    low = Backoff(0.1, 5, rng=FixedRng(0.0), jitter=0.5)
    assert [round(low.next(), 6) for _ in range(8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.5, 2.5]
    high = Backoff(0.1, 5, rng=FixedRng(0.999999), jitter=0.5)
    delays = [high.next() for _ in range(8)]
    assert delays[:5] == pytest.approx([0.15, 0.3, 0.6, 1.2, 2.4], rel=1e-5)
    assert all(d <= 5.0 for d in delays) and delays[-1] == pytest.approx(5.0, rel=1e-5)
    high.reset()
    assert high.next() == pytest.approx(0.15, rel=1e-5)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(0.1, 5, jitter=1.5)


def test_jittered_delays_stay_within_half_and_one_and_a_half_of_each_step():
    rng = random.Random(13)
    b = Backoff(0.1, 5, rng=rng, jitter=0.5)
    for _ in range(50):
        for n in range(12):
            step = min(5.0, 0.1 * 2 ** n)
            delay = b.next()
            assert step * 0.5 <= delay <= min(5.0, step * 1.5)
        b.reset()


# -- the listener failing over -------------------------------------------------------------------


def make(clock, cs=TWO, draw=0.0, **kw):
    events = []
    kw.setdefault("keepalive", 0)
    listener = HybridListener(clock, ConnectionInfo.parse(cs), "echo", lambda r: None,
                              on_status=lambda s, d: events.append((s, d)), rng=FixedRng(draw), **kw)
    return listener, events


def attempt(clock, index):
    host, port = clock.tcpClients[index][:2]
    return host, port


def sr(token):
    return unquote(re.search(r"sr=([^&]+)", token).group(1))


def test_listener_fails_over_to_the_other_endpoint_when_its_channel_drops():
    clock = MemoryReactorClock()
    listener, events = make(clock)
    listener.start()
    assert attempt(clock, 0) == ("127.0.0.1", 9090)
    wire = Wire(clock, 0)
    assert wire.headers["Host"] == "127.0.0.1:9090"
    assert sr(wire.headers["ServiceBusAuthorization"]) == "http://127.0.0.1:9090/echo"
    wire.answer()
    assert listener.online and listener.endpoint.port == 9090
    wire.drop()  # the node was killed
    assert not listener.online and listener.state == "waiting"
    status, delay = events[-1]
    assert status == "retry" and delay == pytest.approx(0.05)  # step 0.1, drawn at -50%
    clock.advance(delay)
    assert attempt(clock, 1) == ("127.0.0.2", 9091)
    wire = Wire(clock, 1)
    # a token signed for this endpoint: it is valid on the node that checks it
    assert wire.headers["Host"] == "127.0.0.2:9091"
    assert sr(wire.headers["ServiceBusAuthorization"]) == "http://127.0.0.2:9091/echo"
    assert events[-1] == ("connecting", listener.control_url())
    assert listener.control_url().startswith("ws://127.0.0.2:9091/$hc/echo?")
    wire.answer()
    assert listener.online and listener.endpoint.port == 9091
    assert [s for s, _ in events].count("online") == 2


def test_failed_attempts_alternate_between_endpoints_and_back_off():
    clock = MemoryReactorClock()
    listener, events = make(clock, draw=0.6)  # starts at the second endpoint
    listener.start()
    ports = []
    for i in range(6):
        ports.append(attempt(clock, i)[1])
        Wire(clock, i).answer(503, "Service Unavailable")
        assert events[-1][0] == "retry"
        clock.advance(events[-1][1])
    assert ports == [9091, 9090] * 3
    delays = [d for s, d in events if s == "retry"]
    assert delays == pytest.approx([0.1 * 2 ** n * 1.1 for n in range(6)])  # 0.6 -> +10%


def test_dead_endpoints_are_retried_a_bounded_number_of_times():
    """Connection refused at once, every time, with the lowest draw the rng can give: the
    number of attempts within 3 seconds stays small (no busy loop)."""
    clock = MemoryReactorClock()
    listener, events = make(clock, draw=0.0)
    listener.start()
    while clock.seconds() < 3:
        n = len(clock.tcpClients)
        from twisted.internet import error as net_error
        from twisted.python.failure import Failure

        clock.tcpClients[n - 1][2].clientConnectionFailed(None, Failure(net_error.ConnectionRefusedError()))
        clock.advance(events[-1][1])
    assert len(clock.tcpClients) <= 8  # 0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 1.6 = 3.15 s
    assert all(d <= 5 for s, d in events if s == "retry")
    listener.stop()


def test_give_up_on_a_permanent_refusal_stops_without_retrying():
    clock = MemoryReactorClock()
    listener, events = make(clock, give_up_on=(401, 403, 404))
    started = listener.start()
    failures = []
    started.addErrback(failures.append)
    Wire(clock, 0).answer(401, "Unauthorized: bad signature")
    assert listener.state == "stopped" and listener.timers == frozenset()
    assert [s for s, _ in events] == ["connecting", "error", "stopped"]
    assert events[-1][1].status == 401
    (failure,) = failures
    assert failure.value.status == 401
    clock.advance(60)
    assert len(clock.tcpClients) == 1  # never retried
    # other failures are still retried
    listener, events = make(clock, give_up_on=(401,))
    listener.start()
    Wire(clock, 1).answer(503, "Service Unavailable")
    assert events[-1][0] == "retry"
    listener.stop()


class Resolver:
    """A name resolver (IHostnameResolver) with fixed answers."""

    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"):
        self.asked.append(hostName)
        receiver.resolutionBegan(None)
        for address in self.answers.get(hostName, []):
            kind = IPv6Address if ":" in address else IPv4Address
            receiver.addressResolved(kind("TCP", address, portNumber))
        receiver.resolutionComplete()


def test_a_name_that_resolves_to_several_addresses_is_several_endpoints():
    clock = MemoryReactorClock()
    clock.nameResolver = Resolver({"relay.test": ["127.0.0.1", "::1", "127.0.0.1"]})
    cs = "Endpoint=sb://relay.test:9090/;UseTls=false;SharedAccessKeyName=root;SharedAccessKey=" + KEY
    listener, events = make(clock, cs)
    listener.start()
    assert attempt(clock, 0) == ("127.0.0.1", 9090)
    wire = Wire(clock, 0)
    assert wire.headers["Host"] == "relay.test:9090"  # the name, whatever address carries it
    assert sr(wire.headers["ServiceBusAuthorization"]) == "http://relay.test:9090/echo"
    wire.answer()
    assert listener.address == "127.0.0.1"
    wire.drop()
    clock.advance(events[-1][1])
    assert attempt(clock, 1) == ("::1", 9090)
    Wire(clock, 1).answer()
    assert listener.online and listener.address == "::1"
    assert clock.nameResolver.asked == ["relay.test", "relay.test"]  # resolved again per attempt


def test_resolution_keeps_literals_as_they_are_and_names_it_cannot_resolve():
    clock = MemoryReactorClock()
    clock.nameResolver = Resolver({})
    info = ConnectionInfo.from_url(["ws://127.0.0.1:1", "ws://nowhere.test:2"])
    got = []
    resolve_targets(clock, info.endpoints()).addCallback(got.append)
    ((literal, unresolved),) = got
    assert literal.address == "127.0.0.1" and unresolved.address is None  # connect by name: its error
    assert clock.nameResolver.asked == ["nowhere.test"]


def test_the_commands_take_url_several_times():
    from relayd.cli import build_parser
    from relayd.client.bridge.cli import build_parser as bridge_parser

    args = build_parser().parse_args(["listen", "echo", "--url", "ws://127.0.0.1:9090", "--url",
                                      "ws://127.0.0.1:9091", "--rule", "root", "--key", KEY])
    assert [e.port for e in ConnectionInfo.from_args(args, environ={}).endpoints()] == [9090, 9091]
    args = bridge_parser().parse_args(["--url", "ws://127.0.0.1:9090", "--url", "ws://127.0.0.1:9091",
                                       "--rule", "root", "--key", KEY, "-R", "echo:22"])
    assert [e.port for e in ConnectionInfo.from_args(args, environ={}).endpoints()] == [9090, 9091]
