"""relayd: a self-hosted relay service (Azure Relay Hybrid Connections on Twisted)."""

__version__ = "0.1.0"
