"""What ``relayd bridge`` asks of each forwarder (``-R``, ``-L``, ``-H``), and what they share:
the log namespace and how addresses are written in messages."""

from twisted.logger import Logger
from zope.interface import Attribute, Interface

log = Logger(namespace="relayd.bridge")


class IForwarder(Interface):
    """One ``-R``, ``-L`` or ``-H`` of ``relayd bridge``."""

    label = Attribute("How the forwarder is named in the log, e.g. '-R redis->127.0.0.1:6379'.")

    def start():
        """Start forwarding.  A Deferred that fires once the forwarder is online (``-R``, ``-H``:
        the control channel) or listening (``-L``), or fails when it cannot start."""

    def stop():
        """Stop forwarding.  A Deferred that fires when it has."""


def address(host, port):
    """host:port, [v6]:port, or a Unix socket path (port None) for messages."""
    if port is None:
        return host
    return "%s:%d" % ("[%s]" % host if ":" in host else host, port)
