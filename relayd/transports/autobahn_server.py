"""What relayd changes in how Autobahn's WebSocket server protocol keeps its state, so that a
connection costs only its own state and a rendezvous little CPU (issue 10, "cheap rendezvous").

:class:`LeanServerProtocol` (a mixin before ``WebSocketServerProtocol``):

* Autobahn copies its ~29 protocol settings (``CONFIG_ATTRS``) from the factory onto every
  protocol instance when it connects, and pretty-prints them for a debug line that is then
  dropped (a third of the relay's CPU when connections arrive quickly).  Here ``CONFIG_ATTRS`` is
  empty (nothing is copied or formatted) and each setting is a :class:`FactorySetting` that reads
  the factory's value: each factory's settings are its own, an instance carries only its own
  state, and a role that needs a setting of its own (a control channel's payload limit, its
  pings) sets it on its instance, which takes precedence.
* Autobahn's deque for "sync" and chopped writes (~770 bytes per connection), which relayd never
  makes, exists only once such a write comes.
* Autobahn's plain writes (``transport.write``: the 101 responses, control channel messages,
  pings) go straight to the socket in the caller's turn where nothing is queued
  (:func:`relayd.fastio.send_now`), instead of arming EPOLLOUT and sending on the next poll.
* :func:`release` drops what Autobahn keeps of the opening handshake (:data:`HANDSHAKE_REQUEST`
  once it has been read, :data:`HANDSHAKE_LEFTOVERS` once open): a server protocol no longer
  reads them.

:class:`ClockTimer`: Autobahn schedules its timers (opening and closing handshake timeouts,
auto-ping and its timeout) with ``factory._batched_timer.call_later``, whose default (txaio's)
runs on the global reactor whatever ``reactor=`` the factory was given; a factory that sets
``_batched_timer = ClockTimer(clock)`` runs them on its injected clock.

tests/unit/test_rendezvous_cost.py pins each Autobahn behaviour this relies on.
"""

from collections import deque

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol

from relayd import fastio
from relayd.splice.leg import socket_transport

# What Autobahn keeps of the opening handshake.  The request part (raw request, parsed request
# line, headers and query) is not read after onConnect: completing the handshake needs only the
# key and the offered subprotocols and extensions, which go too once open (with the 101 response).
HANDSHAKE_REQUEST = (
    "http_request_data", "http_status_line", "http_headers", "http_request_uri", "http_request_path",
    "http_request_params", "http_request_host", "websocket_origin",
)
HANDSHAKE_LEFTOVERS = HANDSHAKE_REQUEST + (
    "http_response_data", "websocket_protocols", "websocket_extensions", "_wskey",
)


def release(protocol, names):
    """Drop the attributes ``names`` from ``protocol``'s instance (those it has)."""
    attributes = protocol.__dict__
    for name in names:
        attributes.pop(name, None)


class FactorySetting:
    """One of Autobahn's protocol settings, read from the protocol's factory (a non-data
    descriptor: a value set on the instance takes precedence)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __get__(self, protocol, cls=None):
        if protocol is None:
            return self
        try:
            factory = protocol.factory
        except AttributeError:
            raise AttributeError(self.name) from None
        return getattr(factory, self.name)


class LeanServerProtocol:
    """Mixin for a ``WebSocketServerProtocol`` subclass (see the module docstring)."""

    CONFIG_ATTRS = ()  # read from the factory instead (FactorySetting, set below the class)
    send_queue = ()  # until a "sync" or chopped write needs a real one

    def _connectionMade(self):
        super()._connectionMade()
        del self.send_queue

    def sendData(self, data, sync=False, chopsize=None):
        if sync or chopsize or self.send_queue:
            if "send_queue" not in self.__dict__:
                self.send_queue = deque()
            super().sendData(data, sync, chopsize)
            return
        # Autobahn's plain write (transport.write), sent at once where the socket allows it
        # (the 101s and the accept message of every rendezvous; see fastio.send_now)
        raw = socket_transport(self.transport)  # under the relay's counting wrapper; None on TLS
        fastio.send_now(raw if raw is not None else self.transport, data)
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state in (WebSocketProtocol.STATE_CONNECTING, WebSocketProtocol.STATE_PROXY_CONNECTING):
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        if self.logOctets:
            self.logTxOctets(data, False)


for _name in WebSocketServerProtocol.CONFIG_ATTRS:
    setattr(LeanServerProtocol, _name, FactorySetting(_name))
del _name


class ClockTimer:
    """Autobahn's ``factory._batched_timer`` on an injected clock (see the module docstring)."""

    __slots__ = ("clock",)

    def __init__(self, clock):
        self.clock = clock

    def call_later(self, delay, func, *args, **kwargs):
        return self.clock.callLater(delay, func, *args, **kwargs)
