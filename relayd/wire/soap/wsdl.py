"""Point the addresses in a listener's WSDL / XSD at the relay (pure: lxml + stdlib).

A listener publishes metadata that names its own, on-premises addresses
(``http://localhost:8080/Service.svc``).  :func:`rewrite_locations` replaces those with the
relay's public address so that clients fetching the metadata through the relay also send
their requests (and their follow-up ``?xsd=`` / ``?wsdl=`` fetches) through it.

Rewritten (namespace -> element/@attribute):

* ``http://schemas.xmlsoap.org/wsdl/soap/``   ``address/@location``  (SOAP 1.1 binding)
* ``http://schemas.xmlsoap.org/wsdl/soap12/`` ``address/@location``  (SOAP 1.2 binding)
* ``http://schemas.xmlsoap.org/wsdl/http/``   ``address/@location``
* ``http://schemas.xmlsoap.org/wsdl/``        ``import/@location``
* ``http://www.w3.org/2001/XMLSchema``        ``import|include|redefine|override/@schemaLocation``
* ``http://www.w3.org/ns/wsdl`` (WSDL 2.0)    ``endpoint/@address``, ``import|include/@location``
* WS-Addressing ``EndpointReference/Address`` text inside a WSDL 1.1 ``port`` / 2.0 ``endpoint``

A location is rewritten when it is an absolute URL whose ``scheme://host:port`` (default
ports normalised, scheme and host case-insensitive) equals a local prefix's and whose path
starts with the prefix's path at a segment boundary; the matched part is replaced by
``public_base`` and the rest (path, query, fragment) kept.  With no local prefixes every
absolute http(s) URL is rewritten, keeping its whole path.  Relative locations and
non-matching URLs are left alone.  The longest matching prefix wins.

The document is parsed with the same hardened parser as SOAP requests (no DTD, no entity
expansion, no network, bounded depth and size); any problem raises :class:`WsdlError`.
The result keeps the original XML declaration (verbatim) and encoding; if nothing needed
rewriting the original bytes are returned unchanged.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .envelope import WSA_NAMESPACES
from .xml import XmlRejected, parse_xml_hardened, serialize_like

WSDL11_NS = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP11_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
WSDL_SOAP12_NS = "http://schemas.xmlsoap.org/wsdl/soap12/"
WSDL_HTTP_NS = "http://schemas.xmlsoap.org/wsdl/http/"
WSDL20_NS = "http://www.w3.org/ns/wsdl"
XSD_NS = "http://www.w3.org/2001/XMLSchema"

MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 200

# Clark tag -> attribute holding a URL
_LOCATION_ATTRS = {
    "{%s}address" % WSDL_SOAP11_NS: "location",
    "{%s}address" % WSDL_SOAP12_NS: "location",
    "{%s}address" % WSDL_HTTP_NS: "location",
    "{%s}import" % WSDL11_NS: "location",
    "{%s}import" % XSD_NS: "schemaLocation",
    "{%s}include" % XSD_NS: "schemaLocation",
    "{%s}redefine" % XSD_NS: "schemaLocation",
    "{%s}override" % XSD_NS: "schemaLocation",
    "{%s}endpoint" % WSDL20_NS: "address",
    "{%s}import" % WSDL20_NS: "location",
    "{%s}include" % WSDL20_NS: "location",
}
_PORT_TAGS = ("{%s}port" % WSDL11_NS, "{%s}endpoint" % WSDL20_NS)
_EPR_ADDRESS_TAGS = tuple("{%s}Address" % ns for ns in WSA_NAMESPACES)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class WsdlError(ValueError):
    """The document could not be parsed safely, or the arguments are unusable."""


def _origin(parts) -> tuple[str, str, int | None]:
    """(scheme, host, port) normalised; raises ValueError for a bad port."""
    scheme = parts.scheme.lower()
    port = parts.port  # may raise ValueError
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _after_netloc(url: str, parts) -> str:
    """Everything after ``scheme://netloc`` in ``url``, verbatim."""
    return url[url.index("//") + 2 + len(parts.netloc):]


class _Rewriter:
    def __init__(self, public_base: str, local_prefixes: list[str]):
        pb = urlsplit(public_base)
        if pb.scheme.lower() not in ("http", "https") or not pb.netloc or pb.query or pb.fragment:
            raise WsdlError("public_base must be an absolute http(s) URL without query or fragment: %r"
                            % (public_base,))
        self.public_base = public_base
        self.prefixes = []
        for prefix in local_prefixes:
            parts = urlsplit(prefix.strip())
            if not parts.scheme or not parts.netloc or parts.query or parts.fragment:
                raise WsdlError("local prefix must look like scheme://host[:port][/path]: %r" % (prefix,))
            try:
                origin = _origin(parts)
            except ValueError:
                raise WsdlError("local prefix has a bad port: %r" % (prefix,)) from None
            self.prefixes.append((origin, parts.path.rstrip("/")))
        # longest path first, so the most specific prefix wins
        self.prefixes.sort(key=lambda p: len(p[1]), reverse=True)

    def rewrite(self, url: str) -> str | None:
        """The public form of ``url``, or None to leave it alone."""
        s = url.strip()
        try:
            parts = urlsplit(s)
            if not parts.scheme or not parts.netloc or "//" not in s:
                return None  # relative
            origin = _origin(parts)
        except ValueError:
            return None
        rest = _after_netloc(s, parts)
        if not self.prefixes:
            if origin[0] not in ("http", "https"):
                return None
            return self._join(rest)
        for p_origin, p_path in self.prefixes:
            if origin != p_origin:
                continue
            if rest.startswith(p_path) and (len(rest) == len(p_path) or rest[len(p_path)] in "/?#"):
                return self._join(rest[len(p_path):])
        return None

    def _join(self, remainder: str) -> str:
        base = self.public_base
        if not remainder:
            return base
        if remainder.startswith("/"):
            return base.rstrip("/") + remainder
        return base + remainder  # "?query" / "#fragment"


def rewrite_locations(document: bytes, public_base: str, local_prefixes: list[str], *,
                      max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> bytes:
    """Rewrite the service/import locations in a WSDL or XSD document; see the module
    docstring.  Raises :class:`WsdlError`."""
    rewriter = _Rewriter(public_base, list(local_prefixes))
    document = bytes(document)
    try:
        tree = parse_xml_hardened(document, max_bytes=max_bytes, max_depth=max_depth)
    except XmlRejected as e:
        raise WsdlError(str(e)) from None

    changed = False
    for el in tree.getroot().iter(*_LOCATION_ATTRS):
        attr = _LOCATION_ATTRS[el.tag]
        value = el.get(attr)
        if value is None:
            continue
        new = rewriter.rewrite(value)
        if new is not None and new != value:
            el.set(attr, new)
            changed = True
    for port in tree.getroot().iter(*_PORT_TAGS):
        for addr in port.iter(*_EPR_ADDRESS_TAGS):
            if addr.text is None or len(addr):
                continue
            new = rewriter.rewrite(addr.text)
            if new is not None and new != addr.text.strip():
                addr.text = new
                changed = True
    if not changed:
        return document
    return serialize_like(tree, document)
