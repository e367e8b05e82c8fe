"""relayd.wire.atom: the discovery feed, the runtime-information entry and Azure's error body,
byte for byte, and read back the way their readers read them (Azure's SDK: the first element
inside Atom ``content``, members in DataMember order; feedparser for the feed)."""

import feedparser
import pytest
from lxml import etree

from relayd.wire import atom

CREATED = 1764617732.125  # 2025-12-01T19:35:32.125Z
UPDATED = 1764617800.5
NOW = 1764618000.0

DESCRIPTION = atom.Description(CREATED, UPDATED, True, "team=ops", 2)

EXPECTED_ENTRY = (
    b"<?xml version='1.0' encoding='utf-8'?>\n"
    b'<entry xmlns="http://www.w3.org/2005/Atom"><id>http://relay.test/orders</id>'
    b'<title type="text">orders</title><published>2025-12-01T19:35:32.125Z</published>'
    b"<updated>2025-12-01T19:40:00.000Z</updated><author><name>relayd</name></author>"
    b'<link rel="self" href="http://relay.test/orders"/><content type="application/xml">'
    b'<HybridConnectionDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" '
    b'xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><CreatedAt>2025-12-01T19:35:32.125Z</CreatedAt>'
    b"<UpdatedAt>2025-12-01T19:36:40.500Z</UpdatedAt><RequiresClientAuthorization>true</RequiresClientAuthorization>"
    b"<UserMetadata>team=ops</UserMetadata><ListenerCount>2</ListenerCount></HybridConnectionDescription>"
    b"</content></entry>"
)

EXPECTED_FEED = (
    b"<?xml version='1.0' encoding='utf-8'?>\n"
    b'<feed xmlns="http://www.w3.org/2005/Atom" xmlns:relayd="urn:relayd:discovery">'
    b'<title type="text">Publicly Listed Services</title>'
    b'<subtitle type="text">The publicly listed services of this relay that have a listener online</subtitle>'
    b"<id>http://relay.test/</id><updated>2025-12-01T19:40:00.000Z</updated>"
    b"<author><name>relayd</name></author><generator>relayd</generator>"
    b'<link rel="self" href="http://relay.test/"/>'
    b'<entry><id>http://relay.test/orders</id><title type="text">Order service</title>'
    b'<updated>2025-12-01T19:40:00.000Z</updated><link rel="alternate" href="http://relay.test/orders"/>'
    b'<category scheme="urn:relayd:kind" term="hybrid_connection"/>'
    b"<relayd:ListenerCount>2</relayd:ListenerCount></entry>"
    b'<entry><id>http://relay.test/news</id><title type="text">news</title>'
    b'<updated>2025-12-01T19:40:00.000Z</updated><link rel="alternate" href="http://relay.test/news"/>'
    b'<category scheme="urn:relayd:kind" term="multicast"/>'
    b"<relayd:ListenerCount>1</relayd:ListenerCount></entry></feed>"
)

LISTINGS = [
    atom.Listing("Order service", "http://relay.test/orders", "hybrid_connection", 2),
    atom.Listing("news", "http://relay.test/news", "multicast", 1),
]


def sdk_description(body):
    """What Azure's SDK deserializes: the first element inside the Atom ``content`` element,
    read as HybridConnectionDescription of the documented namespace, members in order."""
    root = etree.fromstring(body)
    content = root.find("{%s}content" % atom.ATOM_NS)
    assert content is not None and content.get("type") == "application/xml"
    description = content[0]
    assert description.tag == "{%s}HybridConnectionDescription" % atom.CONNECT_NS
    return [(etree.QName(child).namespace, etree.QName(child).localname, child.text) for child in description]


def test_runtime_entry_bytes():
    assert atom.entry("http://relay.test/orders", "orders", NOW, DESCRIPTION) == EXPECTED_ENTRY


def test_runtime_entry_members_in_data_member_order():
    members = sdk_description(atom.entry("http://relay.test/orders", "orders", NOW, DESCRIPTION))
    assert [name for _, name, _ in members] == [
        "CreatedAt", "UpdatedAt", "RequiresClientAuthorization", "UserMetadata", "ListenerCount"]
    assert {ns for ns, _, _ in members} == {atom.CONNECT_NS}
    assert dict((n, v) for _, n, v in members)["ListenerCount"] == "2"


def test_runtime_entry_leaves_out_what_is_unknown_and_writes_zero_listeners():
    bare = atom.Description(None, None, False, None, 0)
    members = sdk_description(atom.entry("http://relay.test/x", "x", NOW, bare))
    assert [(n, v) for _, n, v in members] == [("RequiresClientAuthorization", "false"), ("ListenerCount", "0")]


def test_feed_bytes():
    assert atom.feed("http://relay.test/", atom.PUBLIC_TITLE, NOW, LISTINGS, atom.PUBLIC_SUBTITLE) == EXPECTED_FEED


def test_feed_read_by_feedparser():
    parsed = feedparser.parse(EXPECTED_FEED)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.feed.title == "Publicly Listed Services"
    assert [(e.title, e.link, e.tags[0].term, e.relayd_listenercount) for e in parsed.entries] == [
        ("Order service", "http://relay.test/orders", "hybrid_connection", "2"),
        ("news", "http://relay.test/news", "multicast", "1"),
    ]


def test_empty_feed_is_a_valid_feed():
    parsed = feedparser.parse(atom.feed("http://relay.test/", atom.PUBLIC_TITLE, NOW, []))
    assert not parsed.bozo and parsed.entries == [] and parsed.feed.title == atom.PUBLIC_TITLE


def test_manage_listing_entries_carry_the_description():
    body = atom.feed("http://relay.test/a", atom.CHILDREN_TITLE % "a", NOW,
                     [atom.Listing("a/b", "http://relay.test/a/b", "hybrid_connection", 2, DESCRIPTION)])
    entry = etree.tostring(etree.fromstring(body).find("{%s}entry" % atom.ATOM_NS))
    assert sdk_description(entry) == sdk_description(EXPECTED_ENTRY)


def test_error_bytes():
    assert atom.error(404, "no entity 'a<b>' & more") == (
        b"<?xml version='1.0' encoding='utf-8'?>\n"
        b"<Error><Code>404</Code><Detail>no entity 'a&lt;b&gt;' &amp; more</Detail></Error>")


@pytest.mark.parametrize("bad", ["\x00", "\x01\x1f", "\ud800", "\ufffe"])
def test_text_xml_cannot_carry_is_dropped(bad):
    description = atom.Description(CREATED, None, True, "meta" + bad + "data", 1)
    listing = atom.Listing("name" + bad, "http://relay.test/n", "hybrid_connection", 1, description)
    body = atom.feed("http://relay.test/", "t", NOW, [listing])
    parsed = feedparser.parse(body)
    assert not parsed.bozo and parsed.entries[0].title == "name"
    assert ("UserMetadata", "metadata") in [(n, v) for _, n, v in sdk_description(
        atom.entry("http://relay.test/n", "n" + bad, NOW, description))]


def test_xml_datetime_is_utc_with_milliseconds():
    assert atom.xml_datetime(0) == "1970-01-01T00:00:00.000Z"
    assert atom.xml_datetime(CREATED) == "2025-12-01T19:35:32.125Z"


def test_paged_feed_links():
    body = atom.feed("http://relay.test/", atom.PUBLIC_TITLE, NOW, LISTINGS[1:], self_url="http://relay.test/?page=2",
                     pages=[("first", "http://relay.test/"), ("previous", "http://relay.test/")])
    assert (b'<id>http://relay.test/</id><updated>2025-12-01T19:40:00.000Z</updated>'
            b'<author><name>relayd</name></author><generator>relayd</generator>'
            b'<link rel="self" href="http://relay.test/?page=2"/><link rel="first" href="http://relay.test/"/>'
            b'<link rel="previous" href="http://relay.test/"/><entry>') in body
    parsed = feedparser.parse(body)
    assert [(link.rel, link.href) for link in parsed.feed.links] == [
        ("self", "http://relay.test/?page=2"), ("first", "http://relay.test/"), ("previous", "http://relay.test/")]
