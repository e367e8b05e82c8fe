"""A listener's rendezvous legs, and the WebSocket protocol's part before a leg is spliced.

Wire protocol (Azure Relay Hybrid Connections, relayd flavour):

* ``/$hc/{path}?sb-hc-action=accept&sb-hc-id=KEY`` -- the listener's rendezvous leg for one
  WebSocket sender (the address comes from the ``accept`` message, used as is).  With
  ``sb-hc-statusCode`` (400-599) and ``sb-hc-statusDescription`` it rejects the sender
  instead (the sender's handshake fails with that status); that handshake ends with 410.
  The leg takes the first subprotocol it offers and answers the sender's handshake with it.
* ``/$hc/{path}?sb-hc-action=request&sb-hc-id=KEY`` -- the listener's rendezvous leg for an
  HTTP request (the address from the ``request`` message): the listener reads the request and
  writes its response over it (see :mod:`relayd.transports.http`).
* A KEY that is unknown, used or past its accept deadline: 403; an action that does not match
  the rendezvous' kind: 400.

After pairing, frames are relayed 1:1 as they arrive (see :mod:`relayd.splice`); a frame the
relay rejects closes both legs with the same code.
"""

from relayd import access, splice
from relayd.switchboard import SwitchboardError
from relayd.transports.listener.roles import Denied, Role, param

MAX_REASON = 512  # characters of a listener's sb-hc-statusDescription passed on to the sender


class RendezvousLeg(Role):
    """The ``accept`` / ``request`` role: completes the pending rendezvous once open."""

    __slots__ = ("rendezvous",)

    relays = True

    def __init__(self, protocol, rendezvous):
        super().__init__(protocol)
        self.rendezvous = rendezvous

    @classmethod
    def arrive(cls, protocol, request, action):
        """Check the leg's handshake against its rendezvous.  Returns ``(role, subprotocol)``;
        raises :class:`Denied` (a rejection ends here too, with 410)."""
        key = param(request, "sb-hc-id")
        if not key:
            raise Denied(400, "the accept address must carry sb-hc-id; use the address from the accept message as is")
        try:
            rv = protocol.factory.switchboard.find(key)
        except SwitchboardError as e:
            raise Denied(e.status, e.message)
        if action != rv.kind:
            raise Denied(400, "sb-hc-action=%s does not match this rendezvous; use its address as is" % action)
        if action == "accept":
            status = param(request, "sb-hc-statusCode")
            if status is not None:
                cls._reject(rv, status, param(request, "sb-hc-statusDescription"))
            protocol.selected_protocol = request.protocols[0] if request.protocols else None
        protocol.entity_path = rv.entity_path
        protocol.maxMessagePayloadSize = 0
        protocol.maxFramePayloadSize = 0
        return cls(protocol, rv), protocol.selected_protocol

    @staticmethod
    def _reject(rv, status, description):
        description = access.one_line(description or "Rejected by the listener", MAX_REASON)
        try:
            code = int(status)
        except ValueError:
            code = 0
        if not 400 <= code <= 599:
            raise Denied(400, "sb-hc-statusCode must be an HTTP error status from 400 to 599")
        rv.reject(code, description)
        raise Denied(410, "the connection was rejected as asked")

    def opened(self):
        rv, self.rendezvous = self.rendezvous, None
        if rv.done:
            self.protocol.close(1001, "the sender went away before the connection was accepted")
            return
        # from here the connection is a spliced data leg, not an Autobahn protocol; the
        # rendezvous completes the sender's handshake, whose onOpen splices both legs
        leg = splice.take_over(self.protocol)
        # the end line's tracking id: the sender's sb-hc-id, else a new one (never the one-time key)
        leg.tracking = rv.id if rv.id != rv.key else access.tracking_id()
        rv.accept(leg)

    def lost(self):
        rv, self.rendezvous = self.rendezvous, None
        if rv is not None and not rv.done:
            rv.cancel()


class RelayingLeg:
    """Mixin for the WebSocket protocol before and around its opening handshake.

    A data leg (``self.relays``: the sender's and the rendezvous legs' roles) does not stay an
    Autobahn protocol: when its handshake completes, :func:`relayd.splice.take_over` puts a
    :class:`relayd.splice.WebSocketLeg` in its place, which relays frames 1:1 and is what the
    doors get (:class:`relayd.interfaces.IRendezvousLeg`).  What stays here is what the protocol
    needs until then, and on a control channel."""

    selected_protocol = None
    entity_path = None
    relays = False

    def _leg_lost(self):
        """The connection ended before it became a data leg: nothing to release here (the roles
        release their rendezvous)."""

    def close(self, code, reason):
        """IClosable: close with a WebSocket close code (a control channel, or a leg refused
        before it was spliced)."""
        if self.state == self.STATE_OPEN:
            code = splice.sendable_close_code(code)
            if code is None:
                self.sendCloseFrame(isReply=False)
            else:
                reason_utf8 = (reason or "").encode("utf-8")[:123] or None
                self.sendCloseFrame(code=code, reasonUtf8=reason_utf8, isReply=False)
        elif self.state == self.STATE_CONNECTING:
            self.dropConnection(abort=True)


def splice_sender(protocol, leg):
    """The sender's handshake completed (its ``onOpen``): both become spliced data legs.
    ``leg`` is the listener's :class:`relayd.splice.WebSocketLeg` the rendezvous paired it with."""
    if leg is None or not leg.can_splice():
        protocol.close(1011, "internal error: the accept leg is gone")
        return
    splice.splice_legs(splice.take_over(protocol), leg)
