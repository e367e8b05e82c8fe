"""Hybrid Connections control-channel messages (JSON in WebSocket text frames), both ways.

One codec for the relay (encodes ``accept``/``request``, decodes ``renewToken``/``response``
with :func:`decode` into :class:`RenewToken` / :class:`Response`) and for relayd's listener SDK (encodes ``renewToken``/``response``,
decodes ``accept``/``request`` with :func:`decode_from_relay` into :class:`Accept` /
:class:`Request`).  Encoders write compact JSON in the members' order shown below, byte for
byte what Azure's SDKs send (``JSON.stringify`` in hyco-ws / hyco-https).

Relay -> listener::

    {"accept": {"address": "ws://host/$hc/path?...&sb-hc-action=accept&sb-hc-id=...",
                "id": "...", "connectHeaders": {...},
                "remoteEndpoint": {"address": "1.2.3.4", "port": 5678}}}
    {"request": {"address": "...", "id": "...", "requestTarget": "/path?x=1",
                 "method": "GET", "requestHeaders": {...}, "body": false}}

Listener -> relay::

    {"renewToken": {"token": "SharedAccessSignature sr=..."}}
    {"response": {"requestId": "...", "statusCode": 200, "statusDescription": "OK",
                  "responseHeaders": {...}, "body": true}}

A ``request`` with only ``address`` and ``id`` asks the listener to open a rendezvous WebSocket
there (the request itself follows on it); a ``response`` may travel on the control channel or
on such a rendezvous.

:func:`raw_headers` and :func:`connect_headers` take what an ``accept`` carries of the sender's
handshake from its raw request head.

Pure: no Twisted, no Autobahn.  Both decoders raise :class:`MessageError` with a message that
says what is wrong with the peer's message.
"""

import json
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _string  # json.dumps' own escaper (ensure_ascii=False)
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit

# The protocol's 64 KiB: the largest control message (JSON) relayd takes, and the largest HTTP
# body that travels on the control channel (larger ones go over a rendezvous WebSocket).
MAX_CONTROL_JSON = 64 * 1024
MAX_CONTROL_BODY = 64 * 1024
EVENT_HEADER = "X-Relayd-Event"  # the relay marks event requests with it (its kind); docs/events.rst


class MessageError(ValueError):
    pass


def _compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# The relay encodes an accept (or request) per rendezvous: a fixed template with each variable part
# escaped by the JSON module's string escaper costs a third of building the dict and serialising
# it, with the same bytes (tests/unit/test_rendezvous_cost_hc.py compares them with json.dumps).
# Anything that is not a plain str (or an int port) goes through the generic encoder.

def _value(value):
    if type(value) is str:
        return _string(value)
    if type(value) is int:
        return str(value)
    return _compact(value)


def _members(mapping):
    """``{"name":"value",...}`` for a mapping of str to str, in order; None otherwise."""
    parts = []
    for name, value in mapping.items():
        if type(name) is not str or type(value) is not str:
            return None
        parts.append(_string(name) + ":" + _string(value))
    return "{" + ",".join(parts) + "}"


def _endpoint(remote_address, remote_port):
    return ',"remoteEndpoint":{"address":' + _value(remote_address) + ',"port":' + _value(remote_port) + "}"


def encode_accept(address, rendezvous_id, connect_headers, remote_address=None, remote_port=None):
    headers = dict(connect_headers)
    members = _members(headers)
    if members is None:
        body = {"address": address, "id": rendezvous_id, "connectHeaders": headers}
        if remote_address is not None:
            body["remoteEndpoint"] = {"address": remote_address, "port": remote_port}
        return _compact({"accept": body})
    out = '{"accept":{"address":' + _value(address) + ',"id":' + _value(rendezvous_id) + \
        ',"connectHeaders":' + members
    if remote_address is not None:
        out += _endpoint(remote_address, remote_port)
    return out + "}}"


def encode_request(address, request_id, request_target=None, method=None, headers=None,
                   body=False, remote_address=None, remote_port=None):
    """A ``request`` message.  With only ``address`` set it asks the listener to rendezvous."""
    out = '{"request":{"address":' + _value(address) + ',"id":' + _value(request_id)
    if method is None:
        return out + "}}"
    headers = dict(headers or {})
    members = _members(headers)
    if members is None:
        members = _compact(headers)
    out += ',"requestTarget":' + _value(request_target) + ',"method":' + _value(method) + \
        ',"requestHeaders":' + members + ',"body":' + ("true" if body else "false")
    if remote_address is not None:
        out += _endpoint(remote_address, remote_port)
    return out + "}}"


def encode_renew_token(token):
    """The listener's ``renewToken`` message carrying a fresh ``token``."""
    return _compact({"renewToken": {"token": token}})


def encode_response(request_id, status_code, status_description=None, headers=None, body=False):
    """The listener's ``response`` to the request ``request_id``.  ``headers`` maps a name to a
    value or a list of values (sent as is); ``body`` says whether a binary body message follows."""
    return _compact({"response": {
        "requestId": request_id, "statusCode": status_code, "statusDescription": status_description,
        "responseHeaders": dict(headers or {}), "body": bool(body)}})


def _one_member(payload, example, limit):
    """``(kind, fields)`` of a control message: a JSON object with one member, itself an object."""
    if isinstance(payload, bytes):
        if limit is not None and len(payload) > limit:
            raise MessageError("control message is larger than %d bytes" % limit)
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise MessageError("control message is not UTF-8")
    try:
        obj = json.loads(payload)
    except ValueError as e:
        raise MessageError("control message is not JSON: %s" % e)
    except RecursionError:
        raise MessageError("control message nests too deeply; control messages are flat JSON objects")
    if not isinstance(obj, dict) or len(obj) != 1:
        raise MessageError("control message must be a JSON object with one member, e.g. %s" % example)
    (kind, fields), = obj.items()
    if not isinstance(fields, dict):
        raise MessageError("%r must be a JSON object" % kind)
    return kind, fields


# -- listener -> relay, decoded on the relay side ------------------------------------------------

@dataclass(frozen=True)
class RenewToken:
    """The listener's fresh ``token`` for its control channel (a non-empty string)."""
    token: str


@dataclass(frozen=True)
class Response:
    """The listener's answer to the HTTP request ``request_id``.

    ``status_code``: an int from 100 to 999; ``status_description``: the reason phrase or None;
    ``response_headers``: a name -> value (or list of values) mapping, empty when not sent;
    ``body`` True: the response body follows as binary message(s) (one on the control channel,
    any number on a rendezvous)."""
    request_id: str
    status_code: int
    status_description: str | None = None
    response_headers: dict = field(default_factory=dict)
    body: bool = False


def decode(payload):
    """Decode a listener's control message (relay side) into a :class:`RenewToken` or a
    :class:`Response`; unknown kinds raise MessageError.  Bytes over :data:`MAX_CONTROL_JSON`
    are refused."""
    kind, fields = _one_member(payload, '{"renewToken": {...}}', MAX_CONTROL_JSON)
    if kind == "renewToken":
        token = fields.get("token")
        if not isinstance(token, str) or not token:
            raise MessageError('renewToken needs a string "token"')
        return RenewToken(token)
    if kind == "response":
        request_id = fields.get("requestId")
        if not isinstance(request_id, str) or not request_id:
            raise MessageError('response needs a string "requestId"')
        status = fields.get("statusCode")
        try:
            status = int(status)
        except (TypeError, ValueError, OverflowError):
            raise MessageError('response "statusCode" must be a number from 100 to 999, got %.40r' % (status,))
        if not 100 <= status <= 999:
            raise MessageError('response "statusCode" %d is out of range' % status)
        headers = fields.get("responseHeaders")
        headers = {} if headers is None else headers
        if not isinstance(headers, dict):
            raise MessageError('response "responseHeaders" must be an object')
        description = fields.get("statusDescription")
        if description is not None and not isinstance(description, str):
            raise MessageError('response "statusDescription" must be a string')
        return Response(
            request_id=request_id,
            status_code=status,
            status_description=description,
            response_headers=headers,
            body=bool(fields.get("body", False)),
        )
    raise MessageError("unknown control message %r; expected renewToken or response" % kind)


# -- relay -> listener, decoded on the listener side ---------------------------------------------

@dataclass(frozen=True)
class Accept:
    """A sender waiting for the listener: open a WebSocket to ``address`` to accept it.

    ``connect_headers``: the sender's handshake headers; ``remote_endpoint``:
    ``{"address": ..., "port": ...}`` of the sender as the relay saw it (empty when not sent).
    """
    address: str
    id: str | None = None
    connect_headers: dict = field(default_factory=dict)
    remote_endpoint: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """An HTTP request for the listener, or (``method`` None) a call to open a rendezvous
    WebSocket to ``address`` on which requests follow.

    ``body`` True: the request body follows as one binary message (on the control channel
    right after this message, or on the rendezvous the request came on)."""
    address: str | None
    id: str | None = None
    request_target: str | None = None
    method: str | None = None
    request_headers: dict = field(default_factory=dict)
    body: bool = False
    remote_endpoint: dict = field(default_factory=dict)

    @property
    def is_rendezvous(self):
        """Only an address: the listener is asked to open a rendezvous there."""
        return not self.method


def _optional(fields, key, kind, types, default=None):
    value = fields.get(key)
    if value is None:
        return default
    if not isinstance(value, types):
        raise MessageError("%s %r must be %s, got %.40r" % (
            kind, key, "an object" if types is dict else "a string", value))
    return value


def decode_from_relay(payload, limit=None):
    """Decode the relay's control message (listener side) into an :class:`Accept` or a
    :class:`Request`; anything else raises MessageError.  ``limit`` bounds bytes input (the
    control channel's own limit applies when None)."""
    kind, fields = _one_member(payload, '{"accept": {...}}', limit)
    if kind == "accept":
        if not isinstance(fields.get("address"), str):
            raise MessageError('accept needs a string "address"')
        return Accept(
            address=fields["address"],
            id=_optional(fields, "id", kind, str),
            connect_headers=dict(_optional(fields, "connectHeaders", kind, dict, {})),
            remote_endpoint=dict(_optional(fields, "remoteEndpoint", kind, dict, {})),
        )
    if kind == "request":
        method = _optional(fields, "method", kind, str)
        address = _optional(fields, "address", kind, str)
        if method is None and address is None:
            raise MessageError('request needs a "method" (an HTTP request) or an "address" (a rendezvous)')
        return Request(
            address=address,
            id=_optional(fields, "id", kind, str),
            request_target=_optional(fields, "requestTarget", kind, str),
            method=method,
            request_headers=dict(_optional(fields, "requestHeaders", kind, dict, {})),
            body=bool(fields.get("body")),
            remote_endpoint=dict(_optional(fields, "remoteEndpoint", kind, dict, {})),
        )
    raise MessageError("unknown control message %r; expected accept or request" % kind)


def strip_sb_params(query):
    """The query string without ``sb-hc-*`` parameters; everything else exactly as sent
    (order, encoding, ``?wsdl`` without ``=``)."""
    if not query:
        return ""
    kept = [part for part in query.split("&")
            if not unquote_plus(part.split("=", 1)[0]).lower().startswith("sb-hc-")]
    return "&".join(kept)


def rendezvous_address(base_url, entity_path, suffix, query, action, key):
    """The absolute ws(s):// address a listener uses to accept (or reject) a rendezvous."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = "/$hc/" + quote(entity_path, safe="/-._~") + quote(suffix or "", safe="/-._~%")
    kept = strip_sb_params(query)
    extra = "sb-hc-action=" + quote_plus(action) + "&sb-hc-id=" + quote_plus(key)  # as urlencode
    q = kept + "&" + extra if kept else extra
    return "%s://%s%s?%s" % (scheme, parts.netloc, path, q)


# -- what an accept message carries of the sender's handshake ---------------------------------------

def raw_headers(request_head):
    """Header (name, value) pairs from a raw HTTP request head, with the sender's own casing."""
    lines = request_head.decode("iso-8859-1").split("\r\n")[1:]
    headers = []
    for line in lines:
        if not line:
            continue
        if line[0] in " \t" and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return headers


_CANONICAL = {
    "sec-websocket-key": "Sec-WebSocket-Key",
    "sec-websocket-version": "Sec-WebSocket-Version",
    "sec-websocket-protocol": "Sec-WebSocket-Protocol",
    "host": "Host",
    "origin": "Origin",
    "user-agent": "User-Agent",
    "upgrade": "Upgrade",
    "connection": "Connection",
}

_NOT_FORWARDED = {"sec-websocket-extensions", "servicebusauthorization"}


def connect_headers(pairs, drop_authorization):
    """The ``connectHeaders`` object: every header the sender sent, except extensions and tokens."""
    out = {}
    for name, value in pairs:
        low = name.lower()
        if low in _NOT_FORWARDED or (drop_authorization and low == "authorization"):
            continue
        name = _CANONICAL.get(low, name)
        out[name] = out[name] + ", " + value if name in out else value
    return out
