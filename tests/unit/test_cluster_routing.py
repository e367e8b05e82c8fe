"""The cross-node rendezvous state (relayd/cluster/routing.py, events.py) with a fake clock: two
routers on one in-memory bus (Redis pub/sub's part: a message to a node that is gone reaches no
one and says so), a real switchboard on each node, the listener's control channel a recorder."""

import json
import random

from twisted.internet import defer
from twisted.internet.task import Clock

from relayd.cluster.events import ClusterEvents, b64
from relayd.cluster.redis_link import RedisDown
from relayd.cluster.routing import BuiltOffer, Router
from relayd.switchboard import AcceptTimeout, NoListener, Switchboard, SwitchboardError
from relayd.transports.http.events import MULTICAST, ONEWAY, EventPolicy
from relayd.transports.listener.control import EVENT_SENT
from relayd.transports.listener.offers import AcceptOffer, RequestOffer
from relayd.wire import hc

NODE_URL = {"a": "ws://10.0.0.1:9001", "b": "ws://10.0.0.2:9002"}


class Bus:
    """Node-to-node messages, delivered at once (or held, or lost, as the test says)."""

    def __init__(self, network, node_id):
        self.network, self.node_id = network, node_id
        self.handlers, self.dropped = {}, {"malformed": 0}
        network.buses[node_id] = self

    def on(self, kind, handler):
        self.handlers[kind] = handler

    def send(self, node_id, kind, payload):
        json.dumps(payload)  # what crosses must be JSON
        if self.network.down:
            return defer.fail(RedisDown("Redis is down"))
        target = self.network.buses.get(node_id)
        if target is None or node_id in self.network.dead:
            return defer.succeed(0)
        if node_id in self.network.deaf:  # received by its subscription, never handled: lost
            return defer.succeed(1)
        target.handlers[kind](payload, self.node_id)
        return defer.succeed(1)


class Network:
    def __init__(self):
        self.buses, self.dead, self.deaf, self.down = {}, set(), set(), False


class Registry:
    def __init__(self):
        self.remote, self.live_nodes = {}, {}


class Channel:
    """A listener's control channel on its node: what the relay writes on it."""

    def __init__(self, entity_path, listener_id, takes=True):
        self.entity_path, self.listener_id, self.takes = entity_path, listener_id, takes
        self.texts, self.raw, self.events = [], [], []

    def offer(self, rendezvous):
        if not self.takes:
            return False
        self.texts.append(rendezvous.offer.message("ws://wrong", rendezvous))
        return True

    def offer_raw(self, text, body):
        self.raw.append((text, body))
        return self.takes

    def send_event(self, frames):
        self.events.append(frames)
        return EVENT_SENT

    def close(self, code, reason):
        pass


class Door:
    """The HTTP door as the router reads it: exchanges by request id, the namespace."""

    def __init__(self, response_timeout=7.0):
        self.exchanges = {}
        self.namespace = self
        self.entity = type("Entity", (), {"response_timeout": response_timeout, "path": "web"})()

    def resolve(self, path):
        return self.entity, ""


class Exchange:
    def __init__(self):
        self.got = []
        self.responding = False

    def response_start(self, response, via_control):
        self.got.append((response.status_code, via_control))
        self.responding = True

    def response_body_whole(self, payload):
        self.got.append(payload)


def node(network, node_id, clock, seed=1):
    bus, registry = Bus(network, node_id), Registry()
    switchboard = Switchboard(clock, accept_timeout=5)
    router = Router(bus, registry, switchboard, clock, NODE_URL[node_id], rng=random.Random(seed))
    router.door = Door()
    policies = {MULTICAST: EventPolicy(MULTICAST), ONEWAY: EventPolicy(ONEWAY)}
    router.events = ClusterEvents(bus, router, switchboard, policies)
    switchboard.router = router
    return router


def two_nodes(listeners=("l1",), takes=True):
    clock, network = Clock(), Network()
    a, b = node(network, "a", clock), node(network, "b", clock)
    channels = [Channel("echo", name, takes) for name in listeners]
    for channel in channels:
        a.switchboard.add_listener("echo", channel, 0)
    b.registry.remote["echo"] = {("a", name) for name in listeners}
    b.registry.live_nodes = {"a": NODE_URL["a"], "b": NODE_URL["b"]}
    return clock, network, a, b, channels


def connect(b, path="echo"):
    rv = b.switchboard.open_rendezvous(path, AcceptOffer("relay.example", False, {"X-Hi": "1"}))
    out = []
    rv.result.addBoth(out.append)
    return rv, out


def test_the_listeners_node_writes_an_accept_whose_address_points_at_the_senders_node():
    clock, network, a, b, (channel,) = two_nodes()
    rv, out = connect(b)
    accept = json.loads(channel.texts[0])["accept"]
    assert accept["address"].startswith("ws://10.0.0.2:9002/$hc/echo?")
    assert "sb-hc-id=" + rv.key in accept["address"]
    assert accept["connectHeaders"] == {"X-Hi": "1"}
    assert b.switchboard.pending_count() == 1 and b.pending[rv.key].node_id == "a"
    rv.accept("the leg")  # the listener's leg arrives at b
    assert out == ["the leg"] and b.pending == {}


def test_offer_failed_goes_to_the_next_listener_then_fails_the_sender_with_404():
    clock, network, a, b, (first, second) = two_nodes(("l1", "l2"))
    first.takes = second.takes = False  # neither takes it: a answers offer_failed each time
    rv, out = connect(b)
    assert a.counts["taken"] == 0 and b.counts["offer_failed"] == 2
    assert len(out) == 1 and out[0].check(NoListener) and out[0].value.status == 404
    assert b.pending == {} and b.switchboard.pending_count() == 0


def test_offer_failed_then_the_other_listener_takes_it():
    clock, network, a, b, (first, second) = two_nodes(("l1", "l2"))
    first.takes = False
    rv, out = connect(b)
    assert len(first.texts) + len(second.texts) == 1 and second.texts and out == []
    assert b.pending[rv.key].listener_id == "l2"


def test_a_node_that_is_gone_or_redis_down_fails_the_sender_at_once():
    clock, network, a, b, _ = two_nodes()
    network.dead.add("a")
    rv, out = connect(b)
    assert out[0].check(NoListener)
    network.dead.clear()
    network.down = True
    rv, out = connect(b)
    assert out[0].check(NoListener)


def test_a_lost_offer_ends_as_the_senders_accept_timeout():
    clock, network, a, b, _ = two_nodes()
    network.deaf.add("a")
    rv, out = connect(b)
    clock.advance(4.9)
    assert out == []
    clock.advance(0.2)
    assert out[0].check(AcceptTimeout) and b.pending == {}


def test_a_request_with_no_listener_taking_it_is_502():
    clock, network, a, b, (channel,) = two_nodes()
    channel.takes = False
    rv = b.switchboard.open_rendezvous("echo", RequestOffer("h", False, head=("/echo/x", "GET", {})), timeout=7)
    out = []
    rv.result.addBoth(out.append)
    assert out[0].check(SwitchboardError) and out[0].value.status == 502


def test_a_small_request_and_its_response_cross_nodes_and_the_id_expires_with_the_response_timeout():
    clock, network, a, b, (channel,) = two_nodes()
    rv = b.switchboard.open_rendezvous("echo", RequestOffer("h", False, announce=False), timeout=7)
    assert channel.texts == [] and channel.raw == []  # a small request with a body goes with its body
    exchange = Exchange()
    b.door.exchanges[rv.key] = exchange
    text = hc.encode_request("addr", rv.key, "/echo/x", "POST", {}, True)
    assert rv.listener.offer_raw(text, b"\x00body")
    assert channel.raw == [(text, b"\x00body")]
    response = hc.Response(rv.key, 201, "Created", {}, True)
    assert a.response(channel, response)  # a takes it off the door's hands
    a.body(channel, b"answer")
    assert exchange.got == [(201, True), b"answer"]
    b.bus.handlers["response"]({"key": rv.key, "text": hc.encode_response(rv.key, 200), "body": None}, "a")
    assert exchange.got == [(201, True), b"answer"]  # a second answer to the same request: dropped
    rv.withdraw()  # as the exchange does once answered
    assert b.pending == {}
    # a second request: no answer within the entity's response_timeout -> a forgets its id
    rv2 = b.switchboard.open_rendezvous("echo", RequestOffer("h", False, head=("/x", "GET", {})), timeout=7)
    assert rv2.key in a.forwarded
    timed_out = []
    rv2.result.addErrback(timed_out.append)
    clock.advance(7.1)
    assert timed_out[0].check(AcceptTimeout)
    assert rv2.key not in a.forwarded
    assert not a.response(channel, hc.Response(rv2.key, 200))  # dropped by the door, as on one node


def test_a_multicast_event_goes_once_to_each_node_with_subscribers_and_counts_them():
    clock, network, a, b, _ = two_nodes(("s1", "s2"))
    policy = b.events.policies[MULTICAST]
    delivered = policy.deliver(b.switchboard, "echo", b"frames")
    assert delivered == 2  # a's two subscribers, as b's registry knows them
    assert [c.events for c in a.switchboard.listeners("echo")] == [[b"frames"], [b"frames"]]
    assert b.events.sent == 1 and a.events.received == 1


def test_oneway_picks_one_listener_cluster_wide():
    clock, network, a, b, channels = two_nodes(("s1", "s2"))
    local = Channel("echo", "here")
    b.switchboard.add_listener("echo", local, 0)
    policy = b.events.policies[ONEWAY]
    for i in range(30):
        assert policy.deliver(b.switchboard, "echo", b"e%d" % i) == 1
    got = [len(c.events) for c in channels + [local]]
    assert sum(got) == 30 and all(got)  # each of the three got some, no event twice


def test_malformed_messages_are_dropped_and_counted():
    clock, network, a, b, _ = two_nodes()
    a.bus.handlers["offer"]({"entity": "echo", "key": 3}, "b")
    a.bus.handlers["event"]({"entity": "echo", "kind": MULTICAST, "frames": "not base64!"}, "b")
    assert a.bus.dropped["malformed"] == 2


def test_built_offer_is_written_as_built():
    assert BuiltOffer("text").message("ws://ignored", None) == "text"
    assert b64(None) is None


def test_a_pinned_offer_fails_without_going_to_another_listener():
    clock, network, a, b, (first, second) = two_nodes(("l1", "l2"))
    first.takes = False
    stand_in = [s for s in b.pinned("echo") if s.listener_id == "l1"][0]
    rv = b.switchboard.open_rendezvous("echo", AcceptOffer("h", False, {}), listener=stand_in)
    out = []
    rv.result.addBoth(out.append)
    assert out[0].check(NoListener) and second.texts == []  # l2 has its own leg: not this one too


def test_an_event_for_a_node_that_is_gone_or_with_redis_down_is_not_counted_delivered():
    clock, network, a, b, _ = two_nodes(("s1", "s2"))
    policy = b.events.policies[MULTICAST]
    network.dead.add("a")
    assert policy.deliver(b.switchboard, "echo", b"frames") == 0
    network.dead.clear()
    network.down = True
    assert policy.deliver(b.switchboard, "echo", b"frames") == 0
    assert b.events.lost == 2 and b.events.sent == 0 and policy.counts.dropped == 2


def test_the_routing_objects_provide_their_interfaces():
    """The single-node contract harness (tests/contract/test_interfaces.py) never makes these:
    they live only on a clustered node.  verifyObject on live ones, as that harness does."""
    from zope.interface.verify import verifyObject

    from relayd.cluster.routing import ForwardingResponses, RemoteListener
    from relayd.interfaces import IListenerChannel, IOffer, IResponseRouter

    clock, network, a, b, channels = two_nodes(("l1", "l2"))
    stand_ins = b.candidates("echo")
    assert [type(s) for s in stand_ins] == [RemoteListener, RemoteListener]
    for stand_in in stand_ins:
        assert verifyObject(IListenerChannel, stand_in)
    assert verifyObject(IOffer, BuiltOffer("text"))
    assert verifyObject(IResponseRouter, ForwardingResponses(a.door, a))
