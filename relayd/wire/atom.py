"""Atom documents the relay answers itself (pure: lxml + stdlib): the discovery feed, the
runtime-information entry Azure's SDK reads, and Azure's management error body.

Discovery feed (as the WCF Service Bus registry listed public endpoints)::

    <feed xmlns="http://www.w3.org/2005/Atom">
      <title type="text">Publicly Listed Services</title>
      <subtitle type="text">...</subtitle>
      <id>{the feed's URL}</id>  <updated>{xs:dateTime}</updated>
      <author><name>relayd</name></author>  <generator>relayd</generator>
      <link rel="self" href="{the feed's URL}"/>
      <entry>
        <id>{entity URL}</id>  <title type="text">{display name or path}</title>
        <updated>..</updated>  <link rel="alternate" href="{entity URL}"/>
        <category scheme="urn:relayd:kind" term="hybrid_connection"/>
        <relayd:ListenerCount>2</relayd:ListenerCount>  (xmlns:relayd="urn:relayd:discovery")
        [<content type="application/xml"><HybridConnectionDescription .../></content>]
      </entry> ...
    </feed>

Runtime information (``GET /{path}?api-version=2016-07``): one Atom ``entry`` whose
``content type="application/xml"`` holds a ``HybridConnectionDescription`` in the namespace
:data:`CONNECT_NS`.  Azure's .NET SDK (``HybridConnectionListener.GetRuntimeInformationAsync``)
moves its reader to the Atom ``content`` element and hands the first element inside it to a
``DataContractSerializer`` for ``HybridConnectionRuntimeInformation``, whose data members are
``CreatedAt`` (Order 2), ``UpdatedAt`` (3), ``RequiresClientAuthorization`` (4),
``UserMetadata`` (8) and ``ListenerCount`` (9), none required: they are written in that order
(the serializer reads members in order and skips what comes out of it), ``UserMetadata`` only
when there is some.  The SDK tells an entry from a feed by the media type's ``type`` parameter
(a feed means "no such entity"), so the two have their own :data:`ENTRY_MEDIA` / :data:`FEED_MEDIA`.

Errors: ``<Error><Code>{HTTP status}</Code><Detail>{message}</Detail></Error>`` -- the SDK
shows the text of ``Detail``.

Every text is cleaned of characters XML 1.0 cannot carry (control characters, lone surrogates)
before it is written, so a display name or user metadata never makes a document unreadable.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from lxml import etree

ATOM_NS = "http://www.w3.org/2005/Atom"
CONNECT_NS = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
RELAYD_NS = "urn:relayd:discovery"  # relayd's own Atom extension elements (ListenerCount)
KIND_SCHEME = "urn:relayd:kind"  # the scheme of an entry's category: the entity's kind

FEED_MEDIA = "application/atom+xml;type=feed;charset=utf-8"
ENTRY_MEDIA = "application/atom+xml;type=entry;charset=utf-8"
ERROR_MEDIA = "application/xml; charset=utf-8"

PUBLIC_TITLE = "Publicly Listed Services"
PUBLIC_SUBTITLE = "The publicly listed services of this relay that have a listener online"
CHILDREN_TITLE = "Entities under /%s"
GENERATOR = "relayd"

_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Description:
    """What ``HybridConnectionDescription`` tells about an entity (times in epoch seconds)."""

    created_at: float | None
    updated_at: float | None
    requires_client_authorization: bool
    user_metadata: str | None
    listener_count: int


@dataclass(frozen=True)
class Listing:
    """One entry of a feed: an entity's title, absolute address, kind and listener count;
    ``description`` (for a Manage listing) adds its ``HybridConnectionDescription``."""

    title: str
    address: str
    kind: str
    listeners: int
    description: Description | None = None


def xml_text(text):
    """``text`` without the characters XML 1.0 cannot carry."""
    return _NOT_XML.sub("", str(text))


def xml_datetime(seconds):
    """Epoch seconds as an ``xs:dateTime`` in UTC with milliseconds, e.g. 2026-12-01T19:35:32.120Z."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


def _atom(parent, name, text=None, **attrs):
    element = etree.SubElement(parent, "{%s}%s" % (ATOM_NS, name), {k: xml_text(v) for k, v in attrs.items()})
    if text is not None:
        element.text = xml_text(text)
    return element


def _serialize(root):
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def _description(parent, description):
    """``<HybridConnectionDescription>`` under ``parent``, members in the SDK's DataMember order."""
    node = etree.SubElement(parent, "{%s}HybridConnectionDescription" % CONNECT_NS, nsmap={None: CONNECT_NS,
                                                                                            "i": XSI_NS})

    def member(name, value):
        etree.SubElement(node, "{%s}%s" % (CONNECT_NS, name)).text = xml_text(value)

    if description.created_at is not None:
        member("CreatedAt", xml_datetime(description.created_at))
    if description.updated_at is not None:
        member("UpdatedAt", xml_datetime(description.updated_at))
    member("RequiresClientAuthorization", "true" if description.requires_client_authorization else "false")
    if description.user_metadata:
        member("UserMetadata", description.user_metadata)
    member("ListenerCount", "%d" % description.listener_count)
    return node


def _content(parent, description):
    _description(_atom(parent, "content", type="application/xml"), description)


def feed(feed_url, title, updated, listings, subtitle=None, self_url=None, pages=()):
    """An Atom feed (bytes, UTF-8 with an XML declaration) of ``listings`` (:class:`Listing`),
    ``updated`` in epoch seconds; its id is ``feed_url``, its self link ``self_url`` (default:
    ``feed_url``); ``pages``: ``(rel, href)`` links of a paged feed (RFC 5005: first, previous, next)."""
    root = etree.Element("{%s}feed" % ATOM_NS, nsmap={None: ATOM_NS, "relayd": RELAYD_NS})
    stamp = xml_datetime(updated)
    _atom(root, "title", title, type="text")
    if subtitle:
        _atom(root, "subtitle", subtitle, type="text")
    _atom(root, "id", feed_url)
    _atom(root, "updated", stamp)
    _atom(_atom(root, "author"), "name", GENERATOR)
    _atom(root, "generator", GENERATOR)
    _atom(root, "link", rel="self", href=self_url or feed_url)
    for rel, href in pages:
        _atom(root, "link", rel=rel, href=href)
    for listing in listings:
        entry = _atom(root, "entry")
        _atom(entry, "id", listing.address)
        _atom(entry, "title", listing.title, type="text")
        _atom(entry, "updated", stamp)
        _atom(entry, "link", rel="alternate", href=listing.address)
        _atom(entry, "category", scheme=KIND_SCHEME, term=listing.kind)
        etree.SubElement(entry, "{%s}ListenerCount" % RELAYD_NS).text = "%d" % listing.listeners
        if listing.description is not None:
            _content(entry, listing.description)
    return _serialize(root)


def entry(address, title, updated, description):
    """The runtime-information Atom entry (bytes) of the entity at ``address``."""
    root = etree.Element("{%s}entry" % ATOM_NS, nsmap={None: ATOM_NS})
    _atom(root, "id", address)
    _atom(root, "title", title, type="text")
    if description.created_at is not None:
        _atom(root, "published", xml_datetime(description.created_at))
    _atom(root, "updated", xml_datetime(updated))
    _atom(_atom(root, "author"), "name", GENERATOR)
    _atom(root, "link", rel="self", href=address)
    _content(root, description)
    return _serialize(root)


def error(code, detail):
    """Azure's management error body: ``<Error><Code>code</Code><Detail>detail</Detail></Error>``."""
    root = etree.Element("Error")
    etree.SubElement(root, "Code").text = xml_text(code)
    etree.SubElement(root, "Detail").text = xml_text(detail)
    return _serialize(root)
