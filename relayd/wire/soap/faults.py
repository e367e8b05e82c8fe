"""SOAP faults written by the relay itself (pure: lxml + stdlib).

Every function returns a :class:`Fault` -- a ``(http_status, content_type, body)`` tuple --
with a well-formed UTF-8 envelope of the requested version:

* SOAP 1.1: ``soap:Fault`` with ``faultcode`` (``soap:Client`` / ``soap:Server`` /
  ``soap:VersionMismatch`` / ``soap:MustUnderstand``), ``faultstring``, optional
  ``faultactor`` (``node=``) and ``detail``; ``text/xml; charset=utf-8``.  SOAP 1.1 has no
  subcodes, so a subcode is reported as an empty element of that QName inside
  ``detail`` (e.g. ``<detail><a:EndpointUnavailable/></detail>``).
* SOAP 1.2: ``env:Fault`` with ``env:Code/env:Value`` (``env:Sender`` / ``env:Receiver`` /
  ``env:VersionMismatch`` / ``env:MustUnderstand`` / ``env:DataEncodingUnknown``),
  optional ``env:Subcode/env:Value`` (a QName, by default in the WS-Addressing namespace,
  prefix ``a``), ``env:Reason/env:Text xml:lang="en"``, optional ``env:Node`` and
  ``env:Detail``; ``application/soap+xml; charset=utf-8``.

Codes may be given in either version's spelling ("Client"/"Sender", "Server"/"Receiver")
and are translated.  With ``relates_to`` (the request's WS-Addressing MessageID) the fault
gets ``a:Action`` (default: the addressing namespace's fault action, e.g.
``http://www.w3.org/2005/08/addressing/fault``) and ``a:RelatesTo`` headers.

HTTP status of :func:`build_fault` (SOAP 1.2 HTTP binding; SOAP 1.1 always uses 500)
unless ``http_status=`` overrides it:  Sender -> 400, everything else -> 500.

The ready-made relay faults (``http_status=`` overrides any of them):

==================  =================  ==========================================  ============
constructor          SOAP 1.1 faultcode  SOAP 1.2 Code / Subcode                     HTTP status
==================  =================  ==========================================  ============
malformed            soap:Client         env:Sender                                  1.1: 500,
                                                                                     1.2: 400
version_mismatch     soap:VersionMism.   env:VersionMismatch (+ env:Upgrade header)  500
too_large            soap:Client         env:Sender                                  413
unauthorized         soap:Client         env:Sender                                  401
forbidden            soap:Client         env:Sender                                  403
unknown_address      soap:Client         env:Sender / a:DestinationUnreachable       404
no_listener          soap:Server         env:Receiver / a:EndpointUnavailable        502
listener_failed      soap:Server         env:Receiver                                502
timeout              soap:Server         env:Receiver                                504
==================  =================  ==========================================  ============

401/403/404/413/502/504 match what the relay's plain HTTP entities answer in the same
situations (``relayd.transports.http``), so operators and HTTP-level clients see the
same statuses whatever the entity type; the SOAP body carries the detail for SOAP stacks.
A 401 response should also carry a ``WWW-Authenticate`` header -- that is the caller's job.
"""

from __future__ import annotations

import re
from collections import namedtuple
from copy import deepcopy

from lxml import etree

from .envelope import SOAP11_NS, SOAP12_NS, WSA04_NS, WSA10_NS, SoapError

SOAP11_FAULT_CONTENT_TYPE = "text/xml; charset=utf-8"
SOAP12_FAULT_CONTENT_TYPE = "application/soap+xml; charset=utf-8"
XML_NS = "http://www.w3.org/XML/1998/namespace"

WSA_FAULT_ACTION = {
    WSA10_NS: WSA10_NS + "/fault",
    WSA04_NS: WSA04_NS + "/fault",
}

Fault = namedtuple("Fault", "status content_type body")

_CODES = {
    # generic spelling -> (SOAP 1.1 local name, SOAP 1.2 local name)
    "Client": ("Client", "Sender"),
    "Sender": ("Client", "Sender"),
    "Server": ("Server", "Receiver"),
    "Receiver": ("Server", "Receiver"),
    "VersionMismatch": ("VersionMismatch", "VersionMismatch"),
    "MustUnderstand": ("MustUnderstand", "MustUnderstand"),
    "DataEncodingUnknown": ("Client", "DataEncodingUnknown"),
}

_INVALID_XML_CHARS = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text) -> str:
    return _INVALID_XML_CHARS.sub("\ufffd", str(text))


def _check_version(version: str) -> str:
    if version not in ("1.1", "1.2"):
        raise ValueError("SOAP version must be '1.1' or '1.2', not %r" % (version,))
    return version


def translate_code(version: str, code: str) -> str:
    """The local name of ``code`` in ``version`` ("Client" <-> "Sender", "Server" <-> "Receiver")."""
    try:
        pair = _CODES[code]
    except KeyError:
        raise ValueError("unknown SOAP fault code %r" % (code,)) from None
    return pair[0] if _check_version(version) == "1.1" else pair[1]


def default_status(version: str, code: str) -> int:
    """The HTTP status the SOAP HTTP bindings prescribe for a fault with ``code``."""
    if _check_version(version) == "1.1":
        return 500
    return 400 if translate_code(version, code) == "Sender" else 500


def _subcode_qname(subcode, addressing_ns: str) -> etree.QName:
    if isinstance(subcode, etree.QName):
        return subcode
    subcode = str(subcode)
    if subcode.startswith("{"):
        return etree.QName(subcode)
    prefix, sep, local = subcode.rpartition(":")
    if sep and prefix not in ("a", "wsa"):
        raise ValueError("subcode %r: use Clark notation '{ns}name' for a non-WS-Addressing QName" % subcode)
    return etree.QName(addressing_ns, local)


def build_fault(version: str, code: str, reason: str, *, subcode=None, detail=None, wsa_action: str | None = None,
                relates_to: str | None = None, node: str | None = None, addressing_ns: str = WSA10_NS,
                http_status: int | None = None, upgrade: bool = False) -> Fault:
    """Build a SOAP ``version`` fault; see the module docstring.

    ``subcode``: a bare name (WS-Addressing namespace ``addressing_ns``), ``a:Name``,
    ``{ns}Name`` or an ``etree.QName``.  ``detail``: text, an element or a list of elements
    (copied).  ``node``: the relay's URI (``faultactor`` / ``env:Node``: the relay is an
    intermediary, not the ultimate receiver).  ``upgrade``: add a SOAP 1.2 ``env:Upgrade``
    header naming both supported envelopes (for VersionMismatch faults).
    """
    _check_version(version)
    local_code = translate_code(version, code)
    status = http_status if http_status is not None else default_status(version, code)
    if relates_to is not None and wsa_action is None:
        wsa_action = WSA_FAULT_ACTION.get(addressing_ns, addressing_ns.rstrip("/") + "/fault")
    sub = _subcode_qname(subcode, addressing_ns) if subcode is not None else None

    if version == "1.1":
        env_ns, p = SOAP11_NS, "soap"
    else:
        env_ns, p = SOAP12_NS, "env"
    nsmap = {p: env_ns}
    if upgrade:
        nsmap.update(env=SOAP12_NS, soap=SOAP11_NS)
    if wsa_action is not None or relates_to is not None or (sub is not None and sub.namespace == addressing_ns):
        nsmap["a"] = addressing_ns
    if sub is not None and sub.namespace and sub.namespace not in nsmap.values():
        nsmap["sc"] = sub.namespace

    def E(local, parent=None, text=None):
        tag = "{%s}%s" % (env_ns, local)
        el = etree.Element(tag) if parent is None else etree.SubElement(parent, tag)
        if text is not None:
            el.text = _clean(text)
        return el

    def qname_text(qn: etree.QName) -> str:
        if not qn.namespace:
            return qn.localname
        prefix = next(k for k, v in nsmap.items() if v == qn.namespace)
        return "%s:%s" % (prefix, qn.localname)

    envelope = etree.Element("{%s}Envelope" % env_ns, nsmap=nsmap)
    if wsa_action is not None or relates_to is not None or upgrade:
        header = E("Header", envelope)
        if upgrade:
            # SOAP 1.2 part 1, 5.4.7 / appendix A; both prefixes are declared on the Envelope.
            up = etree.SubElement(header, "{%s}Upgrade" % SOAP12_NS)
            for qname in ("env:Envelope", "soap:Envelope"):
                etree.SubElement(up, "{%s}SupportedEnvelope" % SOAP12_NS).set("qname", qname)
        if wsa_action is not None:
            etree.SubElement(header, "{%s}Action" % addressing_ns).text = _clean(wsa_action)
        if relates_to is not None:
            etree.SubElement(header, "{%s}RelatesTo" % addressing_ns).text = _clean(relates_to)
    body = E("Body", envelope)
    fault = E("Fault", body)

    subcode_in_detail = version == "1.1" and sub is not None
    detail_items = []
    if isinstance(detail, (list, tuple)):
        detail_items.extend(detail)
    elif detail is not None and not isinstance(detail, str):
        detail_items.append(detail)
    detail_text = detail if isinstance(detail, str) else None

    if version == "1.1":
        etree.SubElement(fault, "faultcode").text = "%s:%s" % (p, local_code)
        etree.SubElement(fault, "faultstring").text = _clean(reason)
        if node is not None:
            etree.SubElement(fault, "faultactor").text = _clean(node)
        detail_el = etree.Element("detail")
    else:
        code_el = E("Code", fault)
        E("Value", code_el, "%s:%s" % (p, local_code))
        if sub is not None:
            sc = E("Subcode", code_el)
            E("Value", sc, qname_text(sub))
        reason_el = E("Reason", fault)
        E("Text", reason_el, reason).set("{%s}lang" % XML_NS, "en")
        if node is not None:
            E("Node", fault, node)
        detail_el = E("Detail")
    if subcode_in_detail or detail_items or detail_text is not None:
        fault.append(detail_el)  # attach first, so children reuse the envelope's prefixes
        if detail_text is not None:
            detail_el.text = _clean(detail_text)
        if subcode_in_detail:
            etree.SubElement(detail_el, sub.text)
        for item in detail_items:
            detail_el.append(deepcopy(item))

    data = etree.tostring(envelope, encoding="utf-8", xml_declaration=True)
    ctype = SOAP11_FAULT_CONTENT_TYPE if version == "1.1" else SOAP12_FAULT_CONTENT_TYPE
    return Fault(status, ctype, data)


# --------------------------------------------------------------------------- relay faults

def malformed(version: str, reason: str = "the request is not a well-formed SOAP message", **kw) -> Fault:
    """Client/Sender; 500 for SOAP 1.1, 400 for SOAP 1.2."""
    return build_fault(version, "Sender", reason, **kw)


def version_mismatch(version: str, reason: str = "the SOAP envelope version is not supported here", **kw) -> Fault:
    """VersionMismatch, 500, with an ``env:Upgrade`` header listing SOAP 1.2 and 1.1."""
    kw.setdefault("upgrade", True)
    return build_fault(version, "VersionMismatch", reason, **kw)


def too_large(version: str, reason: str = "the request body is over the relay's size limit", **kw) -> Fault:
    """Client/Sender, 413."""
    kw.setdefault("http_status", 413)
    return build_fault(version, "Sender", reason, **kw)


def unauthorized(version: str, reason: str = "a valid relay access token is required", **kw) -> Fault:
    """Client/Sender, 401 (no/invalid/expired token)."""
    kw.setdefault("http_status", 401)
    return build_fault(version, "Sender", reason, **kw)


def forbidden(version: str, reason: str = "the token does not grant Send on this entity", **kw) -> Fault:
    """Client/Sender, 403 (valid token, missing right)."""
    kw.setdefault("http_status", 403)
    return build_fault(version, "Sender", reason, **kw)


def unknown_address(version: str, reason: str = "no SOAP relay exists at this address", *,
                    address: str | None = None, **kw) -> Fault:
    """Client/Sender + a:DestinationUnreachable, 404; ``address`` goes in ``a:ProblemIRI``."""
    kw.setdefault("http_status", 404)
    kw.setdefault("subcode", "DestinationUnreachable")
    if address is not None and "detail" not in kw:
        ns = kw.get("addressing_ns", WSA10_NS)
        problem = etree.Element("{%s}ProblemIRI" % ns, nsmap={"a": ns})
        problem.text = _clean(address)
        kw["detail"] = [problem]
    return build_fault(version, "Sender", reason, **kw)


def no_listener(version: str, reason: str = "no listener is connected to this SOAP relay", **kw) -> Fault:
    """Server/Receiver + a:EndpointUnavailable, 502."""
    kw.setdefault("http_status", 502)
    kw.setdefault("subcode", "EndpointUnavailable")
    return build_fault(version, "Receiver", reason, **kw)


def listener_failed(version: str, reason: str = "the listener went away before answering", **kw) -> Fault:
    """Server/Receiver, 502 (rendezvous broke mid-request)."""
    kw.setdefault("http_status", 502)
    return build_fault(version, "Receiver", reason, **kw)


def timeout(version: str, reason: str = "the listener did not answer in time", **kw) -> Fault:
    """Server/Receiver, 504."""
    kw.setdefault("http_status", 504)
    return build_fault(version, "Receiver", reason, **kw)


def from_error(error: SoapError, **kw) -> Fault:
    """The fault answering a :class:`SoapError` raised by ``envelope.parse_request``."""
    if error.code == "VersionMismatch":
        return version_mismatch(error.version, error.reason, **kw)
    if error.http_status == 413:
        return too_large(error.version, error.reason, **kw)
    if error.http_status is not None:
        kw.setdefault("http_status", error.http_status)
    return build_fault(error.version, error.code, error.reason, **kw)
