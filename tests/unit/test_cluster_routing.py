"""The cross-node rendezvous state (relayd/cluster/routing.py, events.py) with a fake clock: two
routers on one in-memory bus (Redis pub/sub's part: a message to a node that is gone reaches no
one and says so), a real switchboard on each node, the listener's control channel a recorder."""

import json
import random

import pytest

from twisted.internet import defer
from twisted.internet.task import Clock

from relayd.cluster.events import ClusterEvents, b64
from relayd.cluster.redis_link import RedisDown
from relayd.cluster.registry import entity_key
from relayd.cluster.routing import LOOKUP_TIMEOUT, BuiltOffer, Router
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
    """What the router reads of the registry: its view (``remote``, ``live_nodes``), kept by bus
    notices, and ``listeners()``, a read of Redis: answered at once, held until the test answers
    (``answer = "held"``), never (``"never"``: it times out) or failing (``"down"``)."""

    def __init__(self, node_id):
        self.node_id, self.up = node_id, True
        self.remote, self.live_nodes = {}, {}
        self.in_redis = {}  # entity key -> [(node id, listener id)]: what a read of Redis finds
        self.answer, self.held, self.reads = "now", [], 0

    def listeners(self, entity_path):
        self.reads += 1
        if self.answer == "down":
            return defer.fail(RedisDown("Redis is down"))
        d = defer.Deferred()
        if self.answer == "held":
            self.held.append((d, entity_path))
        elif self.answer == "now":
            d.callback(sorted(self.in_redis.get(entity_key(entity_path), ())))
        return d

    def release(self):
        held, self.held = self.held, []
        for d, path in held:
            d.callback(sorted(self.in_redis.get(entity_key(path), ())))


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
    bus, registry = Bus(network, node_id), Registry(node_id)
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
    for in_view in (True, False):  # known and not taking it; then none in the view nor in Redis
        if not in_view:
            b.registry.remote.clear()
        rv = b.switchboard.open_rendezvous("echo", RequestOffer("h", False, head=("/echo/x", "GET", {})), timeout=7)
        out = []
        rv.result.addBoth(out.append)
        assert out[0].check(SwitchboardError) and out[0].value.status == 502
    assert b.registry.reads == 2  # the view failed, then found nothing: Redis read each time


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


def just_connected(listeners=("l1",), answer="now"):
    """Listeners on a that b's view does not hold yet (their "online" notice has not come), but
    Redis does."""
    clock, network, a, b, channels = two_nodes(listeners)
    b.registry.remote.clear()
    b.registry.in_redis["echo"] = [("a", name) for name in listeners]
    b.registry.answer = answer
    return clock, network, a, b, channels


def test_a_listener_not_yet_in_the_view_is_read_from_the_registry_and_the_sender_pairs():
    clock, network, a, b, (channel,) = just_connected(answer="held")
    rv, out = connect(b)
    assert b.registry.reads == 1 and channel.texts == [] and out == []  # the offer waits for the read
    b.registry.release()
    accept = json.loads(channel.texts[0])["accept"]
    assert accept["address"].startswith("ws://10.0.0.2:9002/$hc/echo?") and "sb-hc-id=" + rv.key in accept["address"]
    assert b.pending[rv.key].node_id == "a" and a.counts["taken"] == 1
    rv.accept("the leg")
    assert out == ["the leg"] and b.pending == {} and b.switchboard.pending_count() == 0


def test_senders_waiting_for_the_same_entity_share_one_read():
    clock, network, a, b, (channel,) = just_connected(answer="held")
    waiting = [connect(b) for _ in range(3)]
    assert b.registry.reads == 1
    b.registry.release()
    assert len(channel.texts) == 3
    for rv, out in waiting:
        rv.accept("leg " + rv.key)
        assert out == ["leg " + rv.key]


def test_a_registry_read_that_does_not_answer_is_404_at_its_deadline():
    clock, network, a, b, (channel,) = just_connected(answer="never")
    rv, out = connect(b)
    clock.advance(LOOKUP_TIMEOUT - 0.1)
    assert out == []
    clock.advance(0.2)
    assert len(out) == 1 and out[0].check(NoListener) and out[0].value.status == 404
    assert channel.texts == [] and b.pending == {} and b.switchboard.pending_count() == 0
    assert LOOKUP_TIMEOUT <= 2


def test_redis_down_is_404_at_once():
    clock, network, a, b, (channel,) = just_connected(answer="down")
    rv, out = connect(b)  # Redis went down as it was read
    assert out[0].check(NoListener) and out[0].value.status == 404 and b.switchboard.pending_count() == 0
    b.registry.up = False  # known down: not read at all, as before the registry read existed
    with pytest.raises(NoListener):
        connect(b)
    assert b.registry.reads == 1


def test_a_registry_that_lists_only_dead_nodes_or_this_one_is_404():
    clock, network, a, b, (channel,) = just_connected()
    b.registry.in_redis["echo"] = [("c", "gone"), ("b", "stale")]  # c has no heartbeat; b is this node
    rv, out = connect(b)
    assert out[0].check(NoListener) and out[0].value.status == 404
    assert channel.texts == [] and b.counts["offered"] == 0


def test_a_request_whose_body_comes_before_the_read_answers_is_offered_with_it_after():
    clock, network, a, b, (channel,) = just_connected(answer="held")
    rv = b.switchboard.open_rendezvous("echo", RequestOffer("h", False, announce=False), timeout=7)
    text = hc.encode_request("addr", rv.key, "/echo/x", "POST", {}, True)
    assert rv.listener.offer_raw(text, b"body")
    assert channel.raw == []
    b.registry.release()
    assert channel.raw == [(text, b"body")]


def test_the_common_paths_do_not_read_the_registry():
    clock, network, a, b, (channel,) = two_nodes()
    b.registry.answer = "never"
    rv, out = connect(b)  # known in the view: offered at once
    assert len(channel.texts) == 1
    rv2, out2 = connect(a)  # a local listener
    assert len(channel.texts) == 2
    b.registry.remote.clear()
    assert b.pinned("echo") == []  # a pinned offer goes to known listeners only
    assert b.registry.reads == 0 and a.registry.reads == 0


def test_a_stale_view_is_read_again_once_before_404():
    """b's view still holds a listener that left a (its "offline" notice not come yet); the
    listener that took its place is in Redis only."""
    clock, network, a, b, (channel,) = just_connected()
    b.registry.remote["echo"] = {("a", "gone")}
    rv, out = connect(b)
    assert b.counts["offer_failed"] == 1 and b.registry.reads == 1
    assert len(channel.texts) == 1 and b.pending[rv.key].listener_id == "l1"
    rv.accept("the leg")
    assert out == ["the leg"]
    b.registry.in_redis["echo"] = [("a", "gone")]  # Redis lists the same stale one: 404, one read only
    rv, out = connect(b)
    assert out[0].check(NoListener) and b.registry.reads == 2
