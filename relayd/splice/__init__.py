"""Frame-level splicing of WebSocket data legs (issue 10 item 1).

Once a data leg's opening handshake is done, Autobahn's message machinery is out of the data
path: :func:`take_over` puts a :class:`~relayd.splice.leg.WebSocketLeg` (a small object with
``__slots__``) in place of the Autobahn protocol as the connection's protocol, hands it what
Autobahn had buffered after the handshake, and lets the Autobahn protocol, its settings copies
and its handshake leftovers go.  From then on the leg parses each frame itself
(:mod:`relayd.splice.reader`), checks it, unmasks the payload in place
(:func:`relayd.accel.xor_in_place`) and forwards it 1:1: same frame boundaries, same opcodes,
no message re-assembly, no extra frames.  What it writes goes through one method,
``WebSocketLeg.write(header, payload)``: straight to the socket on the zero-copy path
(:mod:`relayd.fastio`, plain TCP), through the transport otherwise (TLS).

Control frames: a ping is answered with a pong on the same leg, a pong is dropped, a close frame
starts the close handshake on its leg and closes the partner with the same code and reason.
Every control frame a leg writes waits until that leg's output is at a frame boundary.  A leg
whose TCP connection drops mid-frame leaves its partner inside a frame: no close frame can go
there, so the partner is dropped (TCP reset).  Backpressure is :mod:`relayd.pipe`'s, unchanged.
See ``docs/protocol.rst``, "Data path".
"""

from relayd import pipe
from relayd.splice.leg import CLOSE_HANDSHAKE_TIMEOUT, WebSocketLeg, sendable_close_code, socket_transport

__all__ = ("CLOSE_HANDSHAKE_TIMEOUT", "WebSocketLeg", "sendable_close_code", "socket_transport", "take_over")


def _replace_protocol(transport, old, new):
    """Make ``new`` receive what ``transport`` delivered to ``old``: the relay's counting
    wrapper (and TLS's) hand data to ``wrappedProtocol``, a bare socket transport to
    ``protocol``."""
    layer = transport
    for _ in range(4):
        if layer is None:
            break
        if getattr(layer, "wrappedProtocol", None) is old:
            layer.wrappedProtocol = new
            return
        if getattr(layer, "protocol", None) is old:
            layer.protocol = new
            return
        layer = getattr(layer, "wrappedProtocol", None)
    raise RuntimeError("cannot find the protocol %r behind its transport %r" % (old, transport))


def take_over(protocol):
    """The opened Autobahn ``protocol`` (a data leg's :class:`HybridProtocol`) replaced by a
    :class:`WebSocketLeg` on the same connection.  Call from its ``onOpen``.  The leg holds
    what arrives until :meth:`WebSocketLeg.start_data_leg`."""
    transport = protocol.transport
    leg = WebSocketLeg(protocol.factory, transport, protocol.entity_path, protocol.selected_protocol)
    leftover, protocol.data = protocol.data, b""  # Autobahn would parse it after onOpen
    _replace_protocol(transport, protocol, leg)
    leg.hold_input(leftover)
    protocol.role = None  # the role and the protocol point at each other: let both go now
    return leg


def splice_legs(a, b):
    """Start two taken-over legs and splice them (the HC sender and its accept leg); what each
    reads is counted in a :class:`relayd.traffic.Connection` (door "websocket")."""
    registry = getattr(a.factory, "traffic", None)
    if registry is not None:
        conn = registry.open("websocket", a.entity_path, a.transport.getPeer(), b.tracking)
        a.count_into(conn, conn.up)
        b.count_into(conn, conn.down)
    a.start_data_leg()
    b.start_data_leg()
    pipe.splice(a, b)
