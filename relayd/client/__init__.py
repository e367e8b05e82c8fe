"""relayd's Hybrid Connections client, on Twisted.

* :mod:`relayd.client.connection_string` -- :class:`ConnectionInfo`: a connection string,
  where the relay is and how to sign for it;
* :mod:`relayd.client.websocket` -- :class:`RelayedConnection`: the client's WebSocket to the
  relay, on either side; :mod:`relayd.client.handshake` opens one (:class:`RelayConnectError`);
* :mod:`relayd.client.sender` -- :func:`connect`: the sender side;
* :mod:`relayd.client.listener` -- :class:`HybridListener`: the listener side (control channel),
  with :mod:`relayd.client.accept` (:class:`AcceptRequest`, an offered sender) and
  :mod:`relayd.client.endpoints` (failover among relay endpoints, :class:`Backoff`);
* :mod:`relayd.client.http`, :mod:`relayd.client.http_body` -- the HTTP side of a listener;
* :mod:`relayd.client.events` -- :func:`publish` and :func:`subscribe`: events (docs/events.rst);
* :mod:`relayd.client.netcat` -- ``relayd listen`` / ``relayd connect``;
* :mod:`relayd.client.bridge` -- ``relayd bridge``: one forwarder per module over one pump.
"""

# The names below load their module on first use (PEP 562), so that importing a light module of
# the package (relayd.client.connection_string, for ``relayd token`` and ``relayd entity``) does
# not import Twisted's reactor and Autobahn with it.
_EXPORTS = {
    "AcceptRequest": "relayd.client.accept",
    "ConnectionInfo": "relayd.client.connection_string",
    "RelayConnectError": "relayd.client.handshake",
    "Backoff": "relayd.client.endpoints",
    "ChannelClosed": "relayd.client.listener",
    "HybridListener": "relayd.client.listener",
    "connect": "relayd.client.sender",
    "PublishError": "relayd.client.events",
    "Publisher": "relayd.client.events",
    "publish": "relayd.client.events",
    "subscribe": "relayd.client.events",
    "ConnectionClosed": "relayd.client.websocket",
    "RelayedConnection": "relayd.client.websocket",
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError("module 'relayd.client' has no attribute %r" % name)
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "AcceptRequest", "Backoff", "ChannelClosed", "ConnectionClosed", "ConnectionInfo",
    "HybridListener", "PublishError", "Publisher", "RelayConnectError", "RelayedConnection", "connect",
    "publish", "subscribe",
]
