"""Hybrid Connections control-channel messages (JSON in WebSocket text frames).

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

Pure: no Twisted, no Autobahn.  ``decode`` raises :class:`MessageError` with a message that
says what is wrong with the listener's message.
"""

import json
from urllib.parse import quote, unquote_plus, urlencode, urlsplit

MAX_CONTROL_JSON = 64 * 1024


class MessageError(ValueError):
    pass


def _compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def encode_accept(address, rendezvous_id, connect_headers, remote_address=None, remote_port=None):
    body = {"address": address, "id": rendezvous_id, "connectHeaders": dict(connect_headers)}
    if remote_address is not None:
        body["remoteEndpoint"] = {"address": remote_address, "port": remote_port}
    return _compact({"accept": body})


def encode_request(address, request_id, request_target=None, method=None, headers=None,
                   body=False, remote_address=None, remote_port=None):
    """A ``request`` message.  With only ``address`` set it asks the listener to rendezvous."""
    msg = {"address": address, "id": request_id}
    if method is not None:
        msg.update(
            {"requestTarget": request_target, "method": method,
             "requestHeaders": dict(headers or {}), "body": bool(body)}
        )
        if remote_address is not None:
            msg["remoteEndpoint"] = {"address": remote_address, "port": remote_port}
    return _compact({"request": msg})


def decode(payload):
    """Decode a listener's control message into ``(kind, fields)``.

    ``kind`` is ``"renewToken"`` or ``"response"``; unknown kinds raise MessageError.
    """
    if isinstance(payload, bytes):
        if len(payload) > MAX_CONTROL_JSON:
            raise MessageError("control message is larger than %d bytes" % MAX_CONTROL_JSON)
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
        raise MessageError('control message must be a JSON object with one member, e.g. {"renewToken": {...}}')
    (kind, fields), = obj.items()
    if not isinstance(fields, dict):
        raise MessageError("%r must be a JSON object" % kind)
    if kind == "renewToken":
        token = fields.get("token")
        if not isinstance(token, str) or not token:
            raise MessageError('renewToken needs a string "token"')
        return kind, {"token": token}
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
        return kind, {
            "requestId": request_id,
            "statusCode": status,
            "statusDescription": description,
            "responseHeaders": headers,
            "body": bool(fields.get("body", False)),
        }
    raise MessageError("unknown control message %r; expected renewToken or response" % kind)


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
    extra = urlencode([("sb-hc-action", action), ("sb-hc-id", key)])
    q = kept + "&" + extra if kept else extra
    return "%s://%s%s?%s" % (scheme, parts.netloc, path, q)
