"""The sender side of a hybrid connection.

:func:`connect` opens ``ws(s)://host/$hc/{path}[/suffix]?[query&]sb-hc-action=connect`` with
a Send token in the ``ServiceBusAuthorization`` header and fires with a
:class:`~relayd.client.websocket.RelayedConnection` once a listener has accepted; it fails with
:class:`~relayd.client.handshake.RelayConnectError` carrying the relay's HTTP status and status
description (404 no listener, 401/403 token trouble, 504 nobody accepted in time, or the
listener's own status when it rejected).  The connection itself, its messages, streaming,
flow control and closing, is :mod:`relayd.client.websocket`'s.
"""

from urllib.parse import parse_qsl

from relayd.client.handshake import DEFAULT_TIMEOUT, open_websocket
from relayd.client.websocket import RelayedConnection


def _query_pairs(query):
    if not query:
        return []
    if isinstance(query, str):
        return parse_qsl(query.lstrip("?"), keep_blank_values=True)
    if isinstance(query, dict):
        return list(query.items())
    return list(query)


def connect(reactor, info, path=None, *, suffix="", query=None, headers=None, subprotocols=None,
            sender_id=None, timeout=DEFAULT_TIMEOUT, token_ttl=3600):
    """Connect to the hybrid connection at ``path`` (default: the connection string's
    EntityPath) as a sender.

    ``suffix`` is appended to the path (``/$hc/echo/suffix``), ``query`` (dict, list of
    pairs or string) goes into the query string, ``headers`` into the handshake (the
    listener sees them in ``connectHeaders``), ``subprotocols`` into
    Sec-WebSocket-Protocol, ``sender_id`` into ``sb-hc-id``.  Fires with a
    :class:`RelayedConnection` once a listener accepted; fails with
    :class:`RelayConnectError`.
    """
    path = info.resolve_path(path)
    pairs = [(k, v) for k, v in _query_pairs(query) if not str(k).lower().startswith("sb-hc-")]
    pairs.append(("sb-hc-action", "connect"))
    if sender_id:
        pairs.append(("sb-hc-id", sender_id))
    url = info.hc_url(path, suffix, pairs)
    hdrs = dict(headers or {})
    token = info.token_for(path, token_ttl)
    if token:
        hdrs["ServiceBusAuthorization"] = token
    return open_websocket(reactor, url, RelayedConnection, headers=hdrs, protocols=subprotocols,
                          timeout=timeout, trust_root=info.trust_root)
