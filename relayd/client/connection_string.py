"""Connection strings: :func:`parse_connection_string`, and :class:`ConnectionInfo`, what one
says -- where the relay is and how to sign for it (also built from a URL or the command line's
``-x``/``--url``/``--rule``/``--key`` and ``$RELAYD_CONNECTION_STRING``/``$RELAYD_KEY``).

A connection string is the Azure one, ``key=value`` pairs separated by ``;`` (key names are
case-insensitive, unknown keys are ignored, a value may itself contain ``=``)::

    Endpoint=sb://relay.example.com/;SharedAccessKeyName=root;SharedAccessKey=...;EntityPath=echo
    Endpoint=ws://127.0.0.1:9090/;SharedAccessKeyName=root;SharedAccessKey=...

Recognised keys: ``Endpoint`` (required), ``SharedAccessKeyName`` + ``SharedAccessKey``
(a rule and its key, signed into fresh tokens as needed), ``SharedAccessSignature`` (a
ready-made token, used as is instead of a key), ``EntityPath`` (the default hybrid
connection path), and ``UseTls`` / ``UseDevelopmentEmulator`` (see below).

How the ``Endpoint`` scheme maps onto the WebSocket scheme:

* ``ws://`` and ``http://``: plain WebSocket (``ws``), default port 80.
* ``wss://`` and ``https://``: WebSocket over TLS (``wss``), default port 443.
* ``sb://`` (what Azure prints): ``wss`` on port 443 unless a port is given, *except* on a
  loopback host (``localhost``, ``127.0.0.0/8``, ``::1``), which means plain ``ws``: relayd's
  out-of-the-box listener is plain TCP on 127.0.0.1:9090 and ``relayd key show`` prints
  ``Endpoint=sb://127.0.0.1:9090/``.  ``UseTls=true|false`` in the connection string
  overrides both rules, and ``UseDevelopmentEmulator=true`` (the Azure emulator's key) means
  ``UseTls=false``.

Tokens are signed for ``http(s)://host[:port]/{entity path}`` (:meth:`ConnectionInfo.token_for`),
the audience form relayd and Azure both accept.

Several endpoints (relayd only; a listener fails over among them, see
:mod:`relayd.client.endpoints`): ``Endpoint=`` may list several URLs separated by commas,
``Endpoint=sb://10.0.0.1:9090/,sb://10.0.0.2:9090/`` (and ``--url`` may be repeated); one
endpoint is the Azure connection string unchanged.  They share the credentials, the entity
path and ``UseTls``.  Tokens are signed per endpoint (the audience is the endpoint a token goes
to, which each node accepts as its own host), so a key works on every node; a ready-made
``SharedAccessSignature`` is sent as is to each, so it must name a host every node accepts:
their common ``public_url``.
"""

import ipaddress
import math
import os
import time
from dataclasses import dataclass, replace
from urllib.parse import quote, urlsplit

ENV_KEY = "RELAYD_KEY"
ENV_CONNECTION_STRING = "RELAYD_CONNECTION_STRING"

_SCHEMES = {
    "ws": (False, 80),
    "http": (False, 80),
    "wss": (True, 443),
    "https": (True, 443),
    "sb": (True, 443),
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _is_loopback(host):
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _flag(name, value):
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError("connection string: %s must be true or false, got %r" % (name, value))


def _endpoint(url, use_tls, number=None):
    """One relay URL -> (host, port, secure, entity path or ""); ``number``: its place in a list."""
    where = "relay URL %r" % url if number is None else "endpoint %d of the list (%r)" % (number, url)
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError("%s: the scheme must be ws, wss, http, https or sb" % where)
    if not parts.hostname:
        raise ValueError("%s has no host name" % where)
    try:
        explicit_port = parts.port
    except ValueError:
        raise ValueError("%s has a bad port number" % where)
    secure = _SCHEMES[scheme][0]
    if scheme == "sb" and _is_loopback(parts.hostname):
        secure = False
    if use_tls is not None:
        secure = use_tls
    port = (443 if secure else 80) if explicit_port is None else explicit_port
    return parts.hostname, port, secure, (parts.path or "").strip("/")


def parse_connection_string(text):
    """``key=value;...`` into a dict with lower-cased keys (values as given, stripped)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("connection string is empty; expected Endpoint=sb://host:port/;"
                         "SharedAccessKeyName=RULE;SharedAccessKey=KEY")
    out = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError("connection string: %r is not of the form Key=Value" % part)
        out[name.strip().lower()] = value.strip()
    return out


@dataclass
class ConnectionInfo:
    """A relay endpoint plus the credentials for it.

    ``secure`` selects wss/https; ``port`` is always set (the scheme's default when the URL
    had none).  ``rule``/``key`` sign tokens on demand; ``token`` is a fixed ready-made
    SAS token (``SharedAccessSignature=``) used when no key is known.  ``trust_root``
    (code only, not in connection strings) is what wss server certificates are checked
    against; by default the platform's store, which OpenSSL lets ``$SSL_CERT_FILE`` replace.
    """

    host: str
    port: int
    secure: bool = False
    rule: str | None = None
    key: str | None = None
    token: str | None = None
    entity_path: str | None = None
    trust_root: object = None  # for wss: e.g. twisted.internet.ssl.Certificate; None = platform trust
    alternates: tuple = ()  # further endpoints, ((host, port, secure), ...): see endpoints()

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_url(cls, url, rule=None, key=None, token=None, entity_path=None, use_tls=None):
        """From a ``ws://``, ``wss://``, ``http://``, ``https://`` or ``sb://`` base URL, or
        several (a list, or one string with commas): the first is the endpoint, the others its
        :attr:`alternates` (see :meth:`endpoints`)."""
        urls = url if isinstance(url, (list, tuple)) else [url]
        if len(urls) == 1 and isinstance(urls[0], str) and "," in urls[0]:
            urls = urls[0].split(",")
        if not urls or not all(u and isinstance(u, str) and u.strip() for u in urls):
            which = "" if len(urls) < 2 else " (an empty one in the list %r)" % ",".join(map(str, urls))
            raise ValueError("relay URL is empty%s; expected e.g. ws://127.0.0.1:9090" % which)
        parsed = [_endpoint(u, use_tls, i + 1 if len(urls) > 1 else None) for i, u in enumerate(urls)]
        paths = {p for *_, p in parsed if p}
        if len(paths) > 1:
            raise ValueError("the relay URLs %s name different entity paths (%s); give the entity path "
                             "once (EntityPath= or PATH)" % (", ".join(urls), ", ".join(sorted(paths))))
        if paths and not entity_path:
            entity_path = paths.pop()
        if (rule is None) != (key is None):
            missing = "SAS key (SharedAccessKey / --key / $%s)" % ENV_KEY if key is None else \
                "SAS rule name (SharedAccessKeyName / --rule)"
            raise ValueError("a SAS rule name and a key go together: the %s is missing" % missing)
        (host, port, secure, _), rest = parsed[0], parsed[1:]
        return cls(host=host, port=port, secure=secure, rule=rule, key=key, token=token,
                   entity_path=entity_path or None, alternates=tuple(e[:3] for e in rest))

    @classmethod
    def parse(cls, connection_string):
        """From an Azure-style connection string (see the module docstring)."""
        fields = parse_connection_string(connection_string)
        endpoint = fields.get("endpoint")
        if not endpoint:
            raise ValueError("connection string has no Endpoint=; expected "
                             "Endpoint=sb://host:port/;SharedAccessKeyName=RULE;SharedAccessKey=KEY")
        use_tls = None
        if "usetls" in fields:
            use_tls = _flag("UseTls", fields["usetls"])
        elif "usedevelopmentemulator" in fields and _flag("UseDevelopmentEmulator",
                                                          fields["usedevelopmentemulator"]):
            use_tls = False
        rule = fields.get("sharedaccesskeyname") or None
        key = fields.get("sharedaccesskey") or None
        token = fields.get("sharedaccesssignature") or None
        if rule is None and key is not None:
            raise ValueError("connection string has SharedAccessKey but no SharedAccessKeyName")
        if key is None and rule is not None and token is None:
            raise ValueError("connection string has SharedAccessKeyName but no SharedAccessKey")
        if key is None:
            rule = None
        return cls.from_url(endpoint, rule=rule, key=key, token=token,
                            entity_path=fields.get("entitypath") or None, use_tls=use_tls)

    @classmethod
    def from_args(cls, args, require_key=True, environ=None):
        """From CLI options: ``args.connection_string`` / ``args.url`` / ``args.rule`` / ``args.key``.

        ``--url``, ``--rule`` and ``--key`` override the matching parts of ``-x``.  Without
        ``-x`` the connection string may come from ``$RELAYD_CONNECTION_STRING``; without
        ``--key`` (and no key in the connection string) the key may come from ``$RELAYD_KEY``.
        With ``require_key=False`` credentials are optional (anonymous senders).
        """
        env = os.environ if environ is None else environ
        cs = getattr(args, "connection_string", None) or env.get(ENV_CONNECTION_STRING)
        url = getattr(args, "url", None)
        base = cls.parse(cs) if cs else None
        if base is None and not url:
            raise ValueError("no relay given: pass -x 'Endpoint=sb://host:port/;SharedAccessKeyName=RULE;"
                             "SharedAccessKey=KEY' or --url ws://host:port --rule RULE --key KEY")
        rule = getattr(args, "rule", None) or (base.rule if base else None)
        key = getattr(args, "key", None) or (base.key if base else None) or env.get(ENV_KEY) or None
        token = base.token if base else None
        if rule and not key:
            raise ValueError("no SAS key for rule %r: pass --key KEY, SharedAccessKey= in -x, "
                             "or set $%s" % (rule, ENV_KEY))
        if key and not rule:
            if getattr(args, "key", None) or (base and base.key) or require_key:
                raise ValueError("no SAS rule name for the key: pass --rule NAME or "
                                 "SharedAccessKeyName= in -x")
            key = None  # only $RELAYD_KEY is set, and no rule: not asked for credentials
        if require_key and not key and not token:
            raise ValueError("no SAS rule and key: pass --rule NAME --key KEY, or a connection "
                             "string with SharedAccessKeyName and SharedAccessKey")
        if url:
            return cls.from_url(url, rule=rule, key=key, token=token,
                                entity_path=base.entity_path if base else None)
        return cls(host=base.host, port=base.port, secure=base.secure, rule=rule, key=key,
                   token=token, entity_path=base.entity_path, alternates=base.alternates)

    # -- addresses ----------------------------------------------------------------------

    def endpoints(self):
        """One ConnectionInfo per relay endpoint, this one's first, each with the same
        credentials and entity path.  Listeners fail over among them
        (:mod:`relayd.client.endpoints`); everything else uses the first."""
        first = replace(self, alternates=())
        return [first] + [replace(first, host=h, port=p, secure=s) for h, p, s in self.alternates]

    def _netloc(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        if self.port == (443 if self.secure else 80):
            return host
        return "%s:%d" % (host, self.port)

    def ws_base(self):
        """``ws://host[:port]`` or ``wss://host[:port]``, no trailing slash."""
        return "%s://%s" % ("wss" if self.secure else "ws", self._netloc())

    def http_base(self):
        """``http://host[:port]`` or ``https://host[:port]``, no trailing slash."""
        return "%s://%s" % ("https" if self.secure else "http", self._netloc())

    def hc_url(self, path, suffix="", query=None):
        """``ws(s)://host/$hc/{path}{suffix}?{query}`` with ``query`` a list of pairs or a dict."""
        path = self.resolve_path(path)
        if suffix and not suffix.startswith("/"):
            suffix = "/" + suffix
        url = "%s/$hc/%s%s" % (self.ws_base(), quote(path, safe="/-._~"), quote(suffix or "", safe="/-._~%"))
        if query:
            items = list(query.items()) if isinstance(query, dict) else list(query)
            url += "?" + "&".join("%s=%s" % (quote(str(k), safe="-._~"), quote(str(v), safe="-._~"))
                                  for k, v in items)
        return url

    def resolve_path(self, path):
        path = (path or self.entity_path or "").strip("/")
        if not path:
            raise ValueError("no hybrid connection path: pass one, or set EntityPath= in the connection string")
        return path

    # -- tokens -------------------------------------------------------------------------

    def audience(self, path):
        return "%s/%s" % (self.http_base(), self.resolve_path(path))

    def token_for(self, path, ttl=3600, now=None):
        """A SAS token (``SharedAccessSignature sr=...``) for the entity at ``path`` valid for
        ``ttl`` seconds; the fixed ``SharedAccessSignature`` when there is no key; None when
        there are no credentials at all."""
        if self.key is None:
            return self.token
        from relayd.wire import sas

        now = time.time() if now is None else now
        expiry = int(math.ceil(now + ttl))
        return sas.make_token(self.audience(path), self.rule, self.key, expiry)

    def __repr__(self):
        return "ConnectionInfo(%r, rule=%r, key=%s, entity_path=%r)" % (
            ",".join(e.ws_base() for e in self.endpoints()) if self.alternates else self.ws_base(),
            self.rule, "***" if self.key else None, self.entity_path)
