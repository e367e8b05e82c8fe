"""relayd's Hybrid Connections client: listener, sender, connection strings.

See :mod:`relayd.client.listener` (with :mod:`relayd.client.accept`), :mod:`relayd.client.sender`
and :mod:`relayd.client.connection`.
"""

from relayd.client.accept import AcceptRequest
from relayd.client.connection import ConnectionInfo
from relayd.client.listener import Backoff, ChannelClosed, HybridListener
from relayd.client.sender import ConnectionClosed, RelayConnectError, RelayedConnection, connect

__all__ = [
    "AcceptRequest", "Backoff", "ChannelClosed", "ConnectionClosed", "ConnectionInfo",
    "HybridListener", "RelayConnectError", "RelayedConnection", "connect",
]
