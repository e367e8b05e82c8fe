"""Hardened XML for the SOAP relay (pure: lxml + stdlib): parse untrusted documents and write
them back in the shape they came in.

Hardening
---------
Every document goes through two passes of an lxml parser built by :func:`hardened_parser`
(``resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
huge_tree=False``):

1. A streaming pass with a parser *target* (no tree is built) that raises as soon as the
   parser reports a document type declaration -- before its internal subset (and so any
   entity declaration) has been read -- or as soon as elements nest deeper than
   ``max_depth``.  Billion-laughs, external entities and 10 000-deep nesting therefore
   fail within microseconds and with bounded memory.
2. Only then the tree is built, and ``docinfo`` is checked again for a DTD.

Bodies longer than ``max_bytes`` are rejected before any parsing.  Every failure is an
:class:`XmlRejected` (which :mod:`relayd.wire.soap.envelope` turns into a ``SoapError``).
"""

from __future__ import annotations

import codecs
import re

from lxml import etree

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 100


_PARSER_OPTIONS = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=False,
    remove_pis=False,
    strip_cdata=False,  # keep CDATA sections as they were when re-serialising
)


def hardened_parser(target=None) -> etree.XMLParser:
    """A fresh lxml parser with entity resolution, DTD loading and network access off."""
    return etree.XMLParser(target=target, **_PARSER_OPTIONS)


class XmlRejected(Exception):
    """Raised by the guard pass; carries the reason."""


class _Guard:
    """Parser target for the first pass: no tree, just vetoes."""

    __slots__ = ("depth", "max_depth")

    def __init__(self, max_depth: int):
        self.depth = 0
        self.max_depth = max_depth

    def doctype(self, *args):
        raise XmlRejected("document type declarations (DTDs) are not allowed")

    def start(self, *args):
        self.depth += 1
        if self.depth > self.max_depth:
            raise XmlRejected("elements nest deeper than %d levels" % self.max_depth)

    def end(self, *args):
        self.depth -= 1

    def data(self, data):
        pass

    def comment(self, text):
        pass

    def pi(self, *args):
        pass

    def close(self):
        return None


_PARSE_FAILURES = (etree.LxmlError, ValueError, LookupError, UnicodeError, TypeError)


def parse_xml_hardened(body: bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> etree._ElementTree:
    """Parse ``body`` into a tree, refusing DTDs, depth over ``max_depth`` and documents over
    ``max_bytes``.  Raises :class:`XmlRejected` (with a human-readable reason) on any
    failure, never anything else."""
    if len(body) > max_bytes:
        raise XmlRejected("the document is %d bytes, over the %d-byte limit" % (len(body), max_bytes))
    try:
        etree.fromstring(body, hardened_parser(_Guard(max_depth)))
    except XmlRejected:
        raise
    except _PARSE_FAILURES as e:
        raise XmlRejected("malformed XML: %s" % _describe(e)) from None
    try:
        root = etree.fromstring(body, hardened_parser())
    except _PARSE_FAILURES as e:
        raise XmlRejected("malformed XML: %s" % _describe(e)) from None
    if root is None:
        raise XmlRejected("malformed XML: no root element")
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.externalDTD is not None or tree.docinfo.doctype:
        raise XmlRejected("document type declarations (DTDs) are not allowed")
    return tree


def _describe(e: Exception) -> str:
    msg = str(e) or type(e).__name__
    return msg[:200]


# --------------------------------------------------------------------------- serialisation

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, None),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_DECL_BYTES_RE = re.compile(rb"<\?xml[ \t\r\n][^<>]*?\?>[ \t\r\n]*")
_DECL_TEXT_RE = re.compile(r"<\?xml[ \t\r\n][^<>]*?\?>[ \t\r\n]*")
_TRAILING_WS_BYTES_RE = re.compile(rb"[ \t\r\n]*\Z")
_ENCODING_RE = re.compile(r"""encoding[ \t\r\n]*=[ \t\r\n]*["']([A-Za-z0-9._\-]+)["']""")


def serialize_like(tree: etree._ElementTree, original: bytes) -> bytes:
    """Serialise ``tree`` the way ``original`` was written: same byte-order mark, same XML
    declaration text (verbatim) and the same encoding; no declaration if it had none."""
    bom, codec = b"", None
    for mark, name in _BOMS:
        if original.startswith(mark):
            bom, codec = mark, name
            break
    else:
        if original.startswith(b"<\x00?\x00"):
            codec = "utf-16-le"
        elif original.startswith(b"\x00<\x00?"):
            codec = "utf-16-be"
    if codec is None:
        m = _DECL_BYTES_RE.match(original, len(bom))
        decl = m.group(0).decode("ascii", "replace") if m else ""
        em = _ENCODING_RE.search(decl)
        encoding = em.group(1) if em else "utf-8"
        trailing = _TRAILING_WS_BYTES_RE.search(original).group(0).decode("ascii")
    else:
        head = original[len(bom):len(bom) + 1024].decode(codec, "ignore")
        m = _DECL_TEXT_RE.match(head)
        decl = m.group(0) if m else ""
        encoding = codec
        unit = 4 if "32" in codec else 2
        start = max(len(bom), len(original) - 64 * unit)
        start -= (start - len(bom)) % unit
        tail = original[start:len(original) - (len(original) - start) % unit].decode(codec, "ignore")
        trailing = tail[len(tail.rstrip(" \t\r\n")):]
    try:
        if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")) and codec is None:
            raise LookupError(encoding)  # declared UTF-16 but written ASCII-compatible: don't trust it
        text = decl + etree.tostring(tree, encoding="unicode") + trailing
        return bom + text.encode(encoding, "xmlcharrefreplace")
    except (LookupError, UnicodeError):
        # An encoding Python does not know: fall back to lxml's own UTF-8 with a declaration.
        return etree.tostring(tree, encoding="utf-8", xml_declaration=True)
