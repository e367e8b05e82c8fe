"""Discovery and runtime information (issue 12 items 1 and 2) over real sockets: a ``twistd -n
relayd`` subprocess, listeners of relayd's SDK in this process, HTTP from a thread.

* ``GET /`` without a token: the "Publicly Listed Services" feed, read with feedparser (an
  independent Atom parser), lists exactly the public entities that have a listener, and follows
  listeners as they come and go; nothing about the others is in the document.
* With a Manage token, ``GET`` on a path that is not an entity lists its immediate children.
* ``GET /{entity}?api-version=2016-07`` with the listener's own token in ``Authorization`` (what
  Azure's SDK sends): the Atom entry read as the SDK reads it (the first element inside Atom
  ``content``, ``HybridConnectionDescription`` in the documented namespace) shows ListenerCount
  0 -> 1 -> 2 -> 1; the request never reaches a listener; errors are ``<Error><Code/><Detail/>``.
* The same answers with no HTTP relaying door on the port (the management site's fallback).
"""

import http.client
import time
from urllib.parse import quote

import feedparser
import pytest
import pytest_twisted
from lxml import etree
from twisted.internet import reactor, threads

from relayd.client import ConnectionInfo, HybridListener
from relayd.wire import atom, hc, sas
from tests.support.manage import relay_of_its_own
from tests.support.relay import LISTEN_KEY, ROOT_KEY, SEND_KEY
from tests.support.waits import wait_for

ENTITIES = """
[[hybrid_connections]]
path = "shop"
discovery = "public"
display_name = "The shop"
user_metadata = "team=shop"

[[hybrid_connections]]
path = "quiet"
discovery = "public"

[[hybrid_connections]]
path = "hidden"

[[hybrid_connections]]
path = "news"
kind = "multicast"
discovery = "public"

[[hybrid_connections]]
path = "group/one"
discovery = "public"

[[hybrid_connections]]
path = "group/two"
display_name = "Second in the group"

[[hybrid_connections]]
path = "group/sub/deep"

[limits]
discovery_page_size = 2  # every feed here is paged: the reader follows its next links
"""
PAGE_SIZE = 2

# what must never be in the public feed: private or listener-less entities, metadata, counts of them
NEVER_PUBLIC = [b"hidden", b"quiet", b"group/two", b"Second in the group", b"team=shop", b"echo", b"scoped"]


@pytest.fixture(scope="module")
def discovery_relay(tmp_path_factory):
    yield from relay_of_its_own(tmp_path_factory, "discovery-relay", ENTITIES)


def token(relay, path, rule="root", key=ROOT_KEY, scheme="http"):
    return sas.make_token("%s://127.0.0.1:%d/%s" % (scheme, relay.port, path), rule, key, int(time.time()) + 300)


def fetch(relay, target, headers=None, method="GET"):
    """(status, {lower-case header: value}, body) of one request, in a thread (the reactor runs
    this process's listeners meanwhile)."""

    def call():
        conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
        try:
            conn.request(method, target, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    return threads.deferToThread(call)


class Recorder:
    """A listener's HTTP handler: records every request that reaches it and answers 200."""

    def __init__(self):
        self.targets = []

    def control_request(self, listener, channel, request):
        if request.is_rendezvous:
            return
        self.targets.append((request.method, request.request_target))
        channel.send(hc.encode_response(request.id, 200, "OK"))

    def control_binary(self, listener, data):
        pass


class Listeners:
    """relayd SDK listeners started by a test, all stopped at its end."""

    def __init__(self, relay):
        self.relay = relay
        self.running = []

    async def start(self, path, handler=None):
        info = ConnectionInfo.parse("Endpoint=ws://127.0.0.1:%d/;SharedAccessKeyName=listener;SharedAccessKey=%s"
                                    % (self.relay.port, LISTEN_KEY))
        listener = HybridListener(reactor, info, path, lambda request: None, http_handler=handler)
        await listener.start()
        self.running.append(listener)
        return listener

    async def stop(self, listener):
        self.running.remove(listener)
        await listener.stop()

    async def stop_all(self):
        for listener in list(self.running):
            await self.stop(listener)


@pytest_twisted.async_yield_fixture
async def listeners(discovery_relay):
    group = Listeners(discovery_relay)
    yield group
    await group.stop_all()


async def read_feed(relay, target, headers=None):
    """(the bodies, the entries) of the feed at ``target``, following its RFC 5005 next links;
    each page at most PAGE_SIZE entries."""
    bodies, entries = [], []
    while target:
        status, got, body = await fetch(relay, target, headers)
        assert status == 200 and got["content-type"] == atom.FEED_MEDIA, (status, got, body)
        parsed = feedparser.parse(body)
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert len(parsed.entries) <= PAGE_SIZE
        bodies.append(body)
        entries += parsed.entries
        following = [link.href for link in parsed.feed.links if link.rel == "next"]
        target = following[0].split("127.0.0.1:%d" % relay.port, 1)[1] if following else None
    return bodies, entries


async def public_feed(relay):
    bodies, entries = await read_feed(relay, "/")
    assert feedparser.parse(bodies[0]).feed.title == "Publicly Listed Services"
    return b"".join(bodies), sorted((e.title, e.link, e.tags[0].term, int(e.relayd_listenercount)) for e in entries)


async def wait_for_feed(relay, expected, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        body, entries = await public_feed(relay)
        if entries == expected:
            return body
        assert time.monotonic() < deadline, "the feed lists %s, not %s" % (entries, expected)
        await wait_for(lambda: True, step=0.05)


def address(relay, path):
    return "http://127.0.0.1:%d/%s" % (relay.port, path)


@pytest_twisted.ensureDeferred
async def test_feed_lists_exactly_the_public_entities_with_listeners(discovery_relay, listeners):
    relay = discovery_relay
    await wait_for_feed(relay, [])  # public entities without listeners are not listed
    shop = await listeners.start("shop")
    for path in ("hidden", "group/one", "group/two", "news"):
        await listeners.start(path)
    body = await wait_for_feed(relay, [
        ("The shop", address(relay, "shop"), "hybrid_connection", 1),
        ("group/one", address(relay, "group/one"), "hybrid_connection", 1),
        ("news", address(relay, "news"), "multicast", 1),
    ])
    for secret in NEVER_PUBLIC:
        assert secret not in body, secret
    news_again = await listeners.start("news")
    await listeners.stop(shop)
    await wait_for_feed(relay, [
        ("group/one", address(relay, "group/one"), "hybrid_connection", 1),
        ("news", address(relay, "news"), "multicast", 2),
    ])
    await listeners.stop(news_again)
    await wait_for_feed(relay, [
        ("group/one", address(relay, "group/one"), "hybrid_connection", 1),
        ("news", address(relay, "news"), "multicast", 1),
    ])
    _, _, body = await fetch(relay, "/")
    status, headers, head_body = await fetch(relay, "/", method="HEAD")
    assert status == 200 and head_body == b"" and int(headers["content-length"]) == len(body)
    for bad in ("0", "x", "-1", "1" * 12, "%C2%B2"):
        status, headers, body = await fetch(relay, "/?page=" + bad)
        assert status == 400 and error_of(body)[0] == "400", (bad, status, body)


@pytest_twisted.ensureDeferred
async def test_manage_token_lists_the_immediate_children_of_a_path(discovery_relay, listeners):
    relay = discovery_relay
    await listeners.start("group/two")
    _, entries = await read_feed(relay, "/group", {"Authorization": token(relay, "")})
    assert [(e.title, e.link, int(e.relayd_listenercount)) for e in entries] == [
        ("group/one", address(relay, "group/one"), 0),
        ("Second in the group", address(relay, "group/two"), 1),  # private entities too, not group/sub/deep
    ]
    bodies, entries = await read_feed(relay, "/", {"Authorization": token(relay, "")})
    assert [e.link.rsplit("/", 1)[1] for e in entries] == [
        "echo", "few", "hidden", "news", "open", "quiet", "scoped", "shop"]
    assert len(bodies) == 4  # pages of PAGE_SIZE, linked first/previous/next
    status, _, body = await fetch(relay, "/?page=2&sb-hc-token=" + quote(token(relay, ""), safe=""))
    assert status == 200 and [e.link.rsplit("/", 1)[1] for e in feedparser.parse(body).entries] == ["hidden", "news"]
    # no listing without Manage: the door's usual 404, nothing about children
    for headers in ({}, {"Authorization": token(relay, "", "listener", LISTEN_KEY)}):
        status, _, body = await fetch(relay, "/group", headers)
        assert status == 404 and b"group/one" not in body, (status, body)
    status, _, body = await fetch(relay, "/", {"Authorization": token(relay, "", "root", SEND_KEY)})
    assert status == 401 and error_of(body)[0] == "401"


def sdk_read(body):
    """What Azure's SDK reads from a runtime-information answer: the first element inside the
    Atom content element, a HybridConnectionDescription of the documented namespace."""
    root = etree.fromstring(body)
    assert root.tag == "{http://www.w3.org/2005/Atom}entry"
    content = root.find("{http://www.w3.org/2005/Atom}content")
    description = content[0]
    assert description.tag == ("{http://schemas.microsoft.com/netservices/2010/10/servicebus/connect}"
                               "HybridConnectionDescription")
    return {etree.QName(child).localname: child.text for child in description}


def error_of(body):
    root = etree.fromstring(body)
    assert root.tag == "Error" and [c.tag for c in root] == ["Code", "Detail"], body
    return root.findtext("Code"), root.findtext("Detail")


async def runtime_information(relay, path="shop", headers=None, query=""):
    status, got, body = await fetch(relay, "/%s?api-version=2016-07%s" % (path, query),
                                    headers if headers is not None else
                                    {"Authorization": token(relay, path, "listener", LISTEN_KEY, scheme="sb")})
    return status, got.get("content-type", ""), body


@pytest_twisted.ensureDeferred
async def test_runtime_information_follows_listeners_and_is_never_relayed(discovery_relay, listeners):
    relay = discovery_relay
    seen = Recorder()
    counts = []
    for step in ("none", "first", "second", "first gone"):
        if step == "first":
            first = await listeners.start("shop", seen)
        elif step == "second":
            await listeners.start("shop", seen)
        elif step == "first gone":
            await listeners.stop(first)
        status, content_type, body = await runtime_information(relay)
        assert status == 200 and content_type.startswith("application/atom+xml;type=entry"), (status, body)
        description = sdk_read(body)
        counts.append(int(description["ListenerCount"]))
    assert counts == [0, 1, 2, 1]
    assert list(description) == ["CreatedAt", "UpdatedAt", "RequiresClientAuthorization", "UserMetadata",
                                 "ListenerCount"]
    assert description["UserMetadata"] == "team=shop" and description["RequiresClientAuthorization"] == "true"
    # a Send token (ServiceBusAuthorization) and a Manage token (sb-hc-token) do as well
    for headers, query in (({"ServiceBusAuthorization": token(relay, "shop", "sender", SEND_KEY)}, ""),
                           ({}, "&sb-hc-token=" + quote(token(relay, ""), safe=""))):
        status, _, body = await runtime_information(relay, headers=headers, query=query)
        assert status == 200 and sdk_read(body)["ListenerCount"] == "1"
    # none of it reached a listener; a relayed request does
    status, _, _ = await fetch(relay, "/shop/ping", {"ServiceBusAuthorization": token(relay, "shop", "sender", SEND_KEY)})
    assert status == 200 and seen.targets == [("GET", "/shop/ping")]


@pytest_twisted.ensureDeferred
async def test_runtime_information_errors_are_azure_error_documents(discovery_relay):
    relay = discovery_relay
    cases = [
        ("no token", "shop", {}, 401),
        ("wrong key", "shop", {"Authorization": token(relay, "shop", "listener", SEND_KEY)}, 401),
        ("token for another entity", "shop", {"Authorization": token(relay, "echo", "listener", LISTEN_KEY)}, 401),
        ("no such entity", "nothing-here", {"Authorization": token(relay, "nothing-here", "listener", LISTEN_KEY)}, 404),
        ("no such entity, no token", "nothing-here", {}, 401),
    ]
    for what, path, headers, expected in cases:
        status, content_type, body = await runtime_information(relay, path, headers)
        code, detail = error_of(body)
        assert (status, code) == (expected, str(expected)), (what, status, body)
        assert content_type.startswith("application/xml") and "TrackingId:" in detail, (what, detail)
    # a Manage token on a path that is no entity gets a feed: Azure's SDK reads that as "not found"
    status, content_type, body = await runtime_information(relay, "nothing-here", {"Authorization": token(relay, "")})
    assert status == 200 and "type=feed" in content_type and feedparser.parse(body).entries == []


@pytest_twisted.ensureDeferred
async def test_answers_without_the_http_relaying_door(relay):
    """The management site's fallback (no HTTP door on the port) answers the same."""
    from relayd.transports.front import FrontDoorFactory

    service = relay.service
    front = FrontDoorFactory(service.hybrid, service.site, reactor, budget=service.budget,
                             max_head=8192, head_timeout=10, max_connections=100)
    port = reactor.listenTCP(0, front, interface="127.0.0.1")
    try:
        bare = type("Bare", (), {"port": port.getHost().port})()
        status, headers, body = await fetch(bare, "/")
        assert status == 200 and feedparser.parse(body).feed.title == "Publicly Listed Services"
        status, headers, body = await fetch(bare, "/echo?api-version=2016-07",
                                            {"Authorization": token(bare, "echo", "listener", LISTEN_KEY)})
        assert status == 200 and sdk_read(body)["ListenerCount"] == "0"
        status, _, body = await fetch(bare, "/echo?api-version=2016-07")
        assert status == 401 and error_of(body)[0] == "401"
    finally:
        await port.stopListening()
