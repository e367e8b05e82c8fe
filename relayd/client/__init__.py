"""relayd's Hybrid Connections client: listener, sender, connection strings.

See :mod:`relayd.client.listener`, :mod:`relayd.client.sender` and
:mod:`relayd.client.connection`.
"""

from relayd.client.connection import ConnectionInfo
from relayd.client.listener import AcceptRequest, Backoff, ChannelClosed, HybridListener
from relayd.client.sender import ConnectionClosed, RelayConnectError, RelayedConnection, connect

__all__ = [
    "AcceptRequest", "Backoff", "ChannelClosed", "ConnectionClosed", "ConnectionInfo",
    "HybridListener", "RelayConnectError", "RelayedConnection", "connect",
]
