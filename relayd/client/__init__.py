"""relayd's Hybrid Connections client, on Twisted.

* :mod:`relayd.client.connection_string` -- :class:`ConnectionInfo`: a connection string,
  where the relay is and how to sign for it;
* :mod:`relayd.client.websocket` -- :class:`RelayedConnection`: the client's WebSocket to the
  relay, on either side; :mod:`relayd.client.handshake` opens one (:class:`RelayConnectError`);
* :mod:`relayd.client.sender` -- :func:`connect`: the sender side;
* :mod:`relayd.client.listener` -- :class:`HybridListener`: the listener side (control channel),
  with :mod:`relayd.client.accept` (:class:`AcceptRequest`, an offered sender);
* :mod:`relayd.client.http`, :mod:`relayd.client.http_body` -- the HTTP side of a listener;
* :mod:`relayd.client.netcat` -- ``relayd listen`` / ``relayd connect``;
* :mod:`relayd.client.bridge` -- ``relayd bridge``: one forwarder per module over one pump.
"""

from relayd.client.accept import AcceptRequest
from relayd.client.connection_string import ConnectionInfo
from relayd.client.handshake import RelayConnectError
from relayd.client.listener import Backoff, ChannelClosed, HybridListener
from relayd.client.sender import connect
from relayd.client.websocket import ConnectionClosed, RelayedConnection

__all__ = [
    "AcceptRequest", "Backoff", "ChannelClosed", "ConnectionClosed", "ConnectionInfo",
    "HybridListener", "RelayConnectError", "RelayedConnection", "connect",
]
