"""Shared Access Signature (SAS) tokens exactly as Azure Relay makes and checks them.

Wire format (fields may come in any order)::

    SharedAccessSignature sr=<urlenc resource URI>&sig=<urlenc base64 HMAC>&se=<unix expiry>&skn=<rule>

``sig`` is base64 HMAC-SHA256 keyed with the *key string's UTF-8 bytes* (not base64-decoded)
over ``<sr exactly as it appears in the token, still URL-encoded>`` + ``"\\n"`` + ``<se>``.
URL encoding is JavaScript's ``encodeURIComponent`` (upper-case hex).  Before signing, the
SDKs normalise the resource URI (:func:`resource_uri`): scheme ``http``, host lower-cased,
explicit port kept, query, fragment and the leading ``$hc/`` segment dropped.

A token is valid up to and including second ``se`` (rejected once ``now > se``).  ``sr``
covers an entity when it is a prefix of the entity URI on path-segment boundaries, ignoring
scheme and port and the case of host and path.  A token whose ``sr`` has a ``.`` or ``..``
segment (raw or percent-encoded, at any depth of encoding) is refused with 401: a scope never
climbs above its own entity path.  Pure functions, standard library only.
"""

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote, unquote, urlsplit

from relayd.wire.paths import has_dot_segment  # noqa: F401 (part of this module's API)

LISTEN = "Listen"
SEND = "Send"
MANAGE = "Manage"
ALL_RIGHTS = frozenset((LISTEN, SEND, MANAGE))
_RIGHT_NAMES = {r.lower(): r for r in ALL_RIGHTS}


class Rights:
    """The right names as a namespace: ``Rights.LISTEN`` etc."""

    LISTEN, SEND, MANAGE, ALL = LISTEN, SEND, MANAGE, ALL_RIGHTS


PREFIX = "SharedAccessSignature"
MAX_TOKEN_LENGTH = 4096
REQUIRED_FIELDS = ("sr", "sig", "se", "skn")
HC_SEGMENT = "$hc"
_FORMAT_HINT = "SharedAccessSignature sr=<url-encoded URI>&sig=<url-encoded signature>&se=<expiry>&skn=<rule name>"
_DIGITS = re.compile(r"[0-9]{1,15}\Z")
_WHITESPACE = re.compile(r"\s")  # \s on text is str.isspace()
_PORT = re.compile(r"[0-9]*\Z")
# Characters Node's url.parse() percent-escapes in a path before the SDK encodes it again.
_NODE_AUTO_ESCAPE = {c: "%%%02X" % ord(c) for c in "\t\n\r \"'<>\\^`{|}"}


class AuthError(Exception):
    """A rejected token; ``status`` is the HTTP status (401 or 403), ``str()`` says what to fix."""

    status = 401

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class Unauthorized(AuthError):
    """401: no usable token (malformed, unknown rule, bad signature, expired)."""

    status = 401


class Forbidden(AuthError):
    """403: a genuine token that does not grant this access (wrong resource or right)."""

    status = 403


def _right(name):
    if not isinstance(name, str) or not name.strip():
        raise ValueError("empty or non-text right %r; rights are Listen, Send and Manage" % (name,))
    canonical = _RIGHT_NAMES.get(name.strip().lower())
    if canonical is None:
        raise ValueError("unknown right %r; rights are Listen, Send and Manage" % (name,))
    return canonical


def normalize_rights(rights):
    """Canonical frozenset of right names (case-insensitive input); ValueError names a bad one."""
    if isinstance(rights, str):
        rights = [rights]
    return frozenset(_right(r) for r in rights)


def has_right(rights, right):
    """True when ``rights`` grant ``right``; Manage implies Listen and Send."""
    return right in rights or MANAGE in rights


@dataclass(frozen=True)
class Rule:
    """A named authorization rule.  Keys never appear in ``repr``."""

    name: str
    key: str = field(repr=False)
    rights: frozenset
    secondary_key: str | None = field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a rule needs a non-empty name")
        if not isinstance(self.key, str) or not self.key:
            raise ValueError("rule %r needs a non-empty key" % self.name)
        object.__setattr__(self, "rights", normalize_rights(self.rights))
        if not self.secondary_key:
            object.__setattr__(self, "secondary_key", None)

    def keys(self):
        return [k for k in (self.key, self.secondary_key) if k]


@dataclass(frozen=True)
class SasToken:
    """A parsed token.  ``repr`` leaves out ``sig``: a valid token is a bearer credential."""

    sr: str
    sr_raw: str
    sig: str = field(repr=False)
    se: int
    skn: str
    se_raw: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class VerifiedToken:
    rule: Rule
    expires: int
    sr: str
    key: str | None = field(default=None, repr=False)  # which of the rule's keys signed it


def _encode(s):
    """JavaScript's encodeURIComponent."""
    return quote(s, safe="-_.!~*'()")


def _split_uri(uri):
    """(host without port, lower-cased; port text; path) of an absolute URI; ValueError if none."""
    if not isinstance(uri, str):
        raise ValueError("a URI must be text, not %s" % type(uri).__name__)
    uri = uri.strip()
    cut = min([i for i in (uri.find("?"), uri.find("#")) if i >= 0] or [len(uri)])
    uri = uri[:cut].replace("\\", "/")  # Node's url.parse turns backslashes into slashes
    parts = urlsplit(uri)
    if not parts.scheme or not parts.netloc:
        raise ValueError("%r is not an absolute URI such as sb://host/path" % uri)
    hostport = parts.netloc.rpartition("@")[2]
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        host = "[%s]" % host.lower()
        port = rest[1:] if rest.startswith(":") else None
        if rest and not rest.startswith(":"):
            raise ValueError("%r has a malformed IPv6 host" % uri)
    else:
        host, sep, port = hostport.partition(":")
        host = host.lower()
        if not sep:
            port = None
    if not host or host == "[]":
        raise ValueError("%r has no host" % uri)
    if port is not None and not _PORT.match(port):
        raise ValueError("%r has a malformed port %r" % (uri, port))
    return host, port or None, parts.path


def _idna(host):
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def resource_uri(uri):
    """The resource URI the Azure SDKs sign: ``http://<host>[:port]/<path without $hc/>``."""
    host, port, path = _split_uri(uri)
    host = _idna(host)
    if port:
        host = "%s:%s" % (host, port)
    if not path:
        path = "/"
    if path.startswith("/" + HC_SEGMENT + "/"):
        path = path[len(HC_SEGMENT) + 1:]
    path = "".join(_NODE_AUTO_ESCAPE.get(c, c) for c in path)
    return "http://%s%s" % (host, path)


def _mac(key, sr_raw, se_text):
    return hmac.new(key.encode("utf-8"), ("%s\n%s" % (sr_raw, se_text)).encode("utf-8"), hashlib.sha256).digest()


def make_token(uri, key_name, key, expiry):
    """A token for ``resource_uri(uri)`` signed with rule ``key_name``'s ``key``, valid until ``expiry``
    (absolute unix seconds)."""
    if not isinstance(key_name, str) or not key_name:
        raise ValueError("make_token needs a rule name")
    if not isinstance(key, str) or not key:
        raise ValueError("make_token needs the rule's key")
    se = "%d" % math.ceil(expiry)
    sr_raw = _encode(resource_uri(uri))
    sig = base64.b64encode(_mac(key, sr_raw, se)).decode("ascii")
    return "%s sr=%s&sig=%s&se=%s&skn=%s" % (PREFIX, sr_raw, _encode(sig), se, _encode(key_name))


def _malformed(problem):
    return Unauthorized("malformed SAS token: %s; expected '%s'" % (problem, _FORMAT_HINT))


def parse_token(token):
    """Parse a token's fields; raise :class:`Unauthorized` saying what is wrong with it."""
    if not isinstance(token, str):
        raise Unauthorized("the SAS token must be text, not %s" % type(token).__name__)
    token = token.strip()
    if not token:
        raise Unauthorized("the SAS token is empty; expected '%s'" % _FORMAT_HINT)
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("the SAS token is %d characters long; the limit is %d" % (len(token), MAX_TOKEN_LENGTH))
    word, _, rest = token.partition(" ")
    if word != PREFIX:
        if word.startswith(PREFIX + "%20") or word.startswith(PREFIX + "+"):
            raise _malformed("it is still URL-encoded; decode it once before use")
        if word.lower() == PREFIX.lower():
            raise _malformed("the prefix is spelled %r, it must be exactly %r" % (word, PREFIX))
        if word.startswith(("sr=", "sig=", "se=", "skn=")):
            raise _malformed("the 'SharedAccessSignature ' prefix is missing")
        # (the token's own text is never echoed: error messages reach logs)
        raise _malformed("it must start with 'SharedAccessSignature '")
    rest = rest.strip()
    if not rest:
        raise _malformed("there are no fields after the prefix")
    if _WHITESPACE.search(rest):
        raise _malformed("it contains whitespace after the prefix (a '+' sent unencoded in a URL "
                         "decodes to a space: encode the token with encodeURIComponent)")
    if "&amp;" in rest:
        raise _malformed("the fields are separated by the HTML escape '&amp;'; use a plain '&'")
    fields = {}
    for part in rest.split("&"):
        if not part:
            raise _malformed("it has an empty field (two '&' in a row, or a leading or trailing '&')")
        name, sep, value = part.partition("=")
        if not sep:
            raise _malformed("field %d has no '=' (was the token URL-encoded twice?)"
                             % (len(fields) + 1))
        if name in fields:
            raise _malformed("field %r appears twice" % name)
        fields[name] = value
    for name in REQUIRED_FIELDS:
        if name not in fields:
            other = [f for f in fields if f.lower() == name]
            if other:
                raise _malformed("the %r field is missing (field names are lower-case: %r, not %r)"
                                 % (name, name, other[0]))
            raise _malformed("the %r field is missing" % name)
        if not fields[name]:
            raise _malformed("the %r field is empty" % name)
    se_raw = fields["se"]
    if not _DIGITS.match(se_raw):
        raise _malformed("the expiry se=%r is not a whole number of unix seconds" % se_raw[:40])
    sig = unquote(fields["sig"])
    try:
        mac = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("the signature sig is not valid base64") from None
    if len(mac) != hashlib.sha256().digest_size:
        raise _malformed("the signature sig is %d bytes, an HMAC-SHA256 is 32" % len(mac))
    sr = unquote(fields["sr"])
    try:
        _, _, sr_path = _split_uri(sr)
    except ValueError:
        raise _malformed("the resource sr=%r is not an absolute URI such as http://host/path" % sr[:100]) from None
    if has_dot_segment(sr_path):
        raise Unauthorized("the SAS token's resource sr=%r contains a '.' or '..' path segment (raw or "
                           "percent-encoded); a token's scope cannot climb above its entity path: make the "
                           "token for the entity's URI itself, e.g. http://host/entity" % sr[:100])
    return SasToken(sr=sr, sr_raw=fields["sr"], sig=sig, se=int(se_raw), skn=unquote(fields["skn"]), se_raw=se_raw)


def _segments(path):
    """Lower-cased, percent-decoded path segments without ``$hc``, empty and dot segments."""
    out = []
    for seg in path.split("/"):
        seg = unquote(seg).lower()
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    if out and out[0] == HC_SEGMENT:
        out.pop(0)
    return out


def covers(sr, entity_uri):
    """True when resource URI ``sr`` covers ``entity_uri`` (same host; path prefix on segment
    boundaries; scheme, port and case ignored)."""
    try:
        sr_host, _, sr_path = _split_uri(sr)
        host, _, path = _split_uri(entity_uri)
    except ValueError:
        return False
    if has_dot_segment(sr_path):
        return False  # a scope never climbs above its own path (parse_token says why)
    sr_segments = _segments(sr_path)
    entity_segments = _segments(path)
    return sr_host == host and entity_segments[: len(sr_segments)] == sr_segments


def _when(se):
    try:
        return datetime.fromtimestamp(se, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "se=%d" % se


def _signing_rule(parsed, candidates):
    """(rule, key) of the first of ``candidates`` whose key signed ``parsed``; (None, None) if none."""
    given, se_text = base64.b64decode(parsed.sig), parsed.se_raw or "%d" % parsed.se
    for candidate, key in ((c, k) for c in candidates for k in c.keys()):
        if hmac.compare_digest(_mac(key, parsed.sr_raw, se_text), given):
            return candidate, key
    return None, None


def verify_token(token, entity_uri, rules, right, now, signatures=None):
    """Check ``token`` grants ``right`` on ``entity_uri`` at time ``now``; return a
    :class:`VerifiedToken` or raise :class:`Unauthorized` (401) / :class:`Forbidden` (403).

    ``rules`` are tried in order (entity-level first); every rule named ``skn`` is tried.  ``signatures``
    (a :class:`relayd.wire.token_memo.VerifiedSignatures`) spares the HMAC of a token text seen before."""
    right = _right(right)
    cached = signatures.get(token, now) if signatures is not None else None
    parsed = cached[0] if cached is not None else parse_token(token)
    candidates = [r for r in rules if r.name == parsed.skn]
    if not candidates:
        raise Unauthorized("the SAS token is signed with rule skn=%r, which does not exist here; "
                           "use a rule defined on the namespace or the entity" % parsed.skn)
    rule = next((c for c in candidates if cached[1] in c.keys()), None) if cached is not None else None
    key = cached[1] if rule is not None else None
    if rule is None:
        rule, key = _signing_rule(parsed, candidates)
        if rule is not None and signatures is not None and parsed.se >= now:
            signatures.remember(token, parsed, key)
    if rule is None:
        raise Unauthorized("the SAS token's signature does not match rule %r's keys; sign the URL-encoded "
                           "sr, a newline and se with HMAC-SHA256 keyed by the key text (not base64-decoded)"
                           % parsed.skn)
    if parsed.se < now:
        raise Unauthorized("the SAS token expired at %s (se=%d), %d seconds ago; make a new token"
                           % (_when(parsed.se), parsed.se, math.ceil(now - parsed.se)))
    if not covers(parsed.sr, entity_uri):
        try:
            target = resource_uri(entity_uri)
        except ValueError:
            target = entity_uri
        raise Forbidden("the SAS token is for %s, which does not cover %s; make a token whose sr is "
                        "that URI or a parent of it" % (parsed.sr, target))
    if not has_right(rule.rights, right):
        raise Forbidden("rule %r grants %s but not %s; use a rule with the %s or Manage right"
                        % (rule.name, ", ".join(sorted(rule.rights)) or "no rights", right, right))
    return VerifiedToken(rule=rule, expires=parsed.se, sr=parsed.sr, key=key)


def extract_token(query_token, headers):
    """The token from the ``sb-hc-token`` query parameter (already URL-decoded), else the
    ``ServiceBusAuthorization`` header, else ``Authorization``; None if none is given."""
    if query_token and query_token.strip():
        return query_token.strip()
    found = {}
    for name, value in (headers or {}).items():
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
            if isinstance(value, bytes):
                value = value.decode("latin-1")
        if value and value.strip():
            found.setdefault(name.lower(), value.strip())
    return found.get("servicebusauthorization") or found.get("authorization")


def generate_key():
    """A new key like Azure's: 32 random bytes, base64 (44 characters)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")
