"""Parsing of SOAP requests arriving at a SOAP/HTTP relay entity (pure: lxml + stdlib).

The relay does not interpret the message: it checks that it is a SOAP envelope of the
version the HTTP binding says, reads the addressing information it may need for routing
and for addressing its own faults, takes out the relay's ``RelayAccessToken`` header and
forwards the rest unchanged.

Hardening
---------
Every document goes through the hardened parser of :mod:`relayd.wire.soap.xml`; every failure
is a :class:`SoapError`: nothing else escapes :func:`parse_request` for any input bytes.

Versions
--------
=============  ===========================  ===========================================
SOAP version   HTTP ``Content-Type``          envelope namespace / action source
=============  ===========================  ===========================================
1.1            ``text/xml``                  ``http://schemas.xmlsoap.org/soap/envelope/``;
                                             ``SOAPAction`` header (quotes stripped)
1.2            ``application/soap+xml``      ``http://www.w3.org/2003/05/soap-envelope``;
                                             ``action`` parameter of the content type
=============  ===========================  ===========================================

Only these two media types imply a version; with no (or another) content type the
envelope namespace decides.  An envelope of the other version than the content type
implies, or an ``Envelope`` in an unknown namespace, is a ``VersionMismatch``; the error's
``version`` is the envelope's own version when that is known (the sender can read it),
otherwise the content type's, otherwise 1.1.  A root element other than ``Envelope``, a
missing or repeated ``Body``, a misplaced ``Header`` or malformed XML is a
``Client`` (1.1) / ``Sender`` (1.2) error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from .xml import MAX_BYTES, MAX_DEPTH, XmlRejected, parse_xml_hardened, serialize_like

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_CONTENT_TYPE = "text/xml"
SOAP12_CONTENT_TYPE = "application/soap+xml"

WSA10_NS = "http://www.w3.org/2005/08/addressing"
WSA04_NS = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSA_NAMESPACES = (WSA10_NS, WSA04_NS)

RELAY_CONNECT_NS = "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect"
RELAY_TOKEN_HEADER = "{%s}RelayAccessToken" % RELAY_CONNECT_NS


ENVELOPE_NS = {"1.1": SOAP11_NS, "1.2": SOAP12_NS}
_VERSION_OF_NS = {SOAP11_NS: "1.1", SOAP12_NS: "1.2"}
_VERSION_OF_MEDIA = {SOAP11_CONTENT_TYPE: "1.1", SOAP12_CONTENT_TYPE: "1.2"}
_SENDER_CODE = {"1.1": "Client", "1.2": "Sender"}


class SoapError(Exception):
    """A request the relay refuses.

    ``code`` is a SOAP fault code valid for ``version`` ("Client"/"Sender",
    "VersionMismatch"); ``version`` ("1.1"/"1.2") is the version a fault about it should
    be written in; ``http_status`` is a hint (413 for an oversized body) or None for the
    binding's default.  ``faults.from_error`` turns it into a fault response.
    """

    def __init__(self, code: str, reason: str, *, version: str = "1.1", http_status: int | None = None):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.version = version
        self.http_status = http_status

    def __repr__(self):
        return "SoapError(code=%r, reason=%r, version=%r)" % (self.code, self.reason, self.version)


@dataclass(frozen=True, slots=True)
class SoapRequest:
    """A parsed SOAP request.

    ``action``: the transport action (``SOAPAction`` / content-type ``action``) when it is
    non-empty, else the WS-Addressing Action, else None.  ``soap_action`` is the transport
    action as received (None when absent, "" when empty).  ``relay_token`` is None when
    there was no ``RelayAccessToken`` header ("" when it was empty).  ``body_bytes`` is
    what to forward: the original bytes, unless the token header had to be removed.
    """

    version: str
    envelope_ns: str
    action: str | None
    to: str | None
    message_id: str | None
    relay_token: str | None
    body_bytes: bytes
    soap_action: str | None = None
    wsa_action: str | None = None
    reply_to: str | None = None
    addressing_ns: str | None = None


# --------------------------------------------------------------------------- content type

_TOKEN_RE = re.compile(r"[^\s;=\"]+")


def parse_content_type(value: str | None) -> tuple[str | None, dict[str, str]]:
    """``'application/soap+xml; charset=utf-8; action="urn:a"'`` ->
    ``('application/soap+xml', {'charset': 'utf-8', 'action': 'urn:a'})``.  The media type
    and parameter names are lower-cased; quoted values are unquoted.  Never raises."""
    if not value:
        return None, {}
    media, _, rest = value.partition(";")
    media = media.strip().lower() or None
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t;":
            i += 1
        m = _TOKEN_RE.match(rest, i)
        if not m:
            # garbage (a stray quote or '='): skip to the next parameter
            j = rest.find(";", i + 1)
            i = n if j < 0 else j
            continue
        name = m.group(0).lower()
        i = m.end()
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n or rest[i] != "=":
            params.setdefault(name, "")
            continue
        i += 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            out = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(rest[i])
                i += 1
            i += 1  # closing quote (or end)
            val = "".join(out)
        else:
            j = rest.find(";", i)
            j = n if j < 0 else j
            val = rest[i:j].strip()
            i = j
        params.setdefault(name, val)
    return media, params


def soap_version_for_content_type(content_type: str | None) -> str | None:
    """"1.1" for ``text/xml``, "1.2" for ``application/soap+xml``, else None."""
    return _VERSION_OF_MEDIA.get(parse_content_type(content_type)[0])


def is_soap_request(content_type: str | None, method: str | None) -> bool:
    """True for a POST whose media type is one of the two SOAP-over-HTTP bindings'."""
    return (method or "").upper() == "POST" and soap_version_for_content_type(content_type) is not None


def _unquote_action(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


# --------------------------------------------------------------------------- the request

def _text(el) -> str:
    return "".join(el.itertext()).strip()


def _remove_keeping_tail(el) -> None:
    """Remove ``el``; lxml drops its tail with it, so keep any non-blank tail text."""
    parent = el.getparent()
    tail = el.tail
    if tail and tail.strip():
        prev = el.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(el)


def parse_request(body: bytes, content_type: str | None, soap_action_header: str | None, *,
                  max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> SoapRequest:
    """Parse and vet a SOAP request body.  Raises :class:`SoapError` and nothing else."""
    media, params = parse_content_type(content_type)
    ct_version = _VERSION_OF_MEDIA.get(media)
    err_version = ct_version or "1.1"

    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise SoapError(_SENDER_CODE[err_version], "the request body is not bytes", version=err_version)
    size = body.nbytes if isinstance(body, memoryview) else len(body)
    if size > max_bytes:  # before any copy or parse
        raise SoapError(_SENDER_CODE[err_version],
                        "the request body is %d bytes, over the %d-byte limit" % (size, max_bytes),
                        version=err_version, http_status=413)
    if not isinstance(body, bytes):
        body = bytes(body)
    try:
        tree = parse_xml_hardened(body, max_bytes=max_bytes, max_depth=max_depth)
    except XmlRejected as e:
        raise SoapError(_SENDER_CODE[err_version], str(e), version=err_version) from None

    root = tree.getroot()
    if not isinstance(root.tag, str):  # pragma: no cover - lxml never returns a comment as root
        raise SoapError(_SENDER_CODE[err_version], "the root is not an element", version=err_version)
    qn = etree.QName(root)
    if qn.localname != "Envelope":
        v = _VERSION_OF_NS.get(qn.namespace) or err_version
        raise SoapError(_SENDER_CODE[v], "the root element is %s, not a SOAP Envelope" % _show(qn), version=v)
    env_version = _VERSION_OF_NS.get(qn.namespace)
    if env_version is None:
        raise SoapError("VersionMismatch", "the Envelope is in namespace %r, which is neither SOAP 1.1 nor 1.2"
                        % (qn.namespace or ""), version=err_version)
    if ct_version is not None and env_version != ct_version:
        raise SoapError("VersionMismatch",
                        "a SOAP %s envelope was sent with content type %s (SOAP %s)" % (env_version, media, ct_version),
                        version=env_version)
    version = env_version
    env_ns = qn.namespace
    sender = _SENDER_CODE[version]

    header = body_el = None
    for child in root:
        if not isinstance(child.tag, str):
            continue
        if child.tag == "{%s}Header" % env_ns:
            if header is not None:
                raise SoapError(sender, "the Envelope has more than one Header", version=version)
            if body_el is not None:
                raise SoapError(sender, "the Header comes after the Body", version=version)
            header = child
        elif child.tag == "{%s}Body" % env_ns:
            if body_el is not None:
                raise SoapError(sender, "the Envelope has more than one Body", version=version)
            body_el = child
        elif body_el is None and header is None:
            raise SoapError(sender, "unexpected element %s before the Header/Body" % _show(etree.QName(child)),
                            version=version)
    if body_el is None:
        raise SoapError(sender, "the Envelope has no Body", version=version)

    found: dict[str, dict[str, str]] = {}  # WS-Addressing namespace -> {header: value}
    tokens = []
    if header is not None:
        for h in header:
            if not isinstance(h.tag, str):
                continue
            if h.tag == RELAY_TOKEN_HEADER:
                tokens.append(h)
                continue
            hq = etree.QName(h)
            if hq.namespace in WSA_NAMESPACES and hq.localname in ("To", "Action", "MessageID", "ReplyTo"):
                seen = found.setdefault(hq.namespace, {})
                if hq.localname in seen:
                    continue  # the first of each wins
                if hq.localname == "ReplyTo":
                    addr = h.find("{%s}Address" % hq.namespace)
                    seen["ReplyTo"] = _text(addr) if addr is not None else ""
                else:
                    seen[hq.localname] = _text(h)
    # WS-Addressing 1.0 wins over the 2004/08 submission if a message mixes them.
    addressing_ns = next((ns for ns in WSA_NAMESPACES if ns in found), None)
    wsa = found.get(addressing_ns, {})

    relay_token = None
    if tokens:
        relay_token = _text(tokens[0])
        for t in tokens:
            _remove_keeping_tail(t)
        forward = serialize_like(tree, body)
    else:
        forward = body

    if version == "1.1":
        soap_action = _unquote_action(soap_action_header)
    else:
        soap_action = params.get("action")
    action = soap_action or wsa.get("Action") or None

    return SoapRequest(
        version=version,
        envelope_ns=env_ns,
        action=action,
        to=wsa.get("To") or None,
        message_id=wsa.get("MessageID") or None,
        relay_token=relay_token,
        body_bytes=forward,
        soap_action=soap_action,
        wsa_action=wsa.get("Action") or None,
        reply_to=wsa.get("ReplyTo") or None,
        addressing_ns=addressing_ns,
    )


def _show(qn: etree.QName) -> str:
    return "{%s}%s" % (qn.namespace, qn.localname) if qn.namespace else qn.localname
