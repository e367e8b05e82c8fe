"""What every role of a WebSocket on the HC door shares.

Wire protocol: a WebSocket on ``/$hc/{path}`` plays one of four roles, named by its opening
handshake's ``sb-hc-action`` -- ``listen`` (a listener's control channel,
:mod:`relayd.transports.listener.control`), ``connect`` (a sender,
:mod:`relayd.transports.websocket`), ``accept`` and ``request`` (a listener's rendezvous legs,
:mod:`relayd.transports.listener.legs`).  Autobahn builds one protocol per socket before the
URL is known, so :class:`relayd.transports.websocket.HybridProtocol` routes the handshake to a
:class:`Role` and hands it the connection's events from then on.  A refused handshake is an
HTTP error (:class:`Denied`) with a status and a message that says what to do.
"""

from urllib.parse import urlsplit

from relayd import access
from relayd.wire import sas


class Denied(Exception):
    """Refuse the opening handshake with an HTTP ``status`` and ``message``."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Role:
    """One role of a WebSocket on the HC door, chosen in its opening handshake.

    ``relays``: a data leg (the sender's and the rendezvous legs' roles) -- once its opening
    handshake completes, the connection stops being an Autobahn protocol:
    :func:`relayd.splice.take_over` puts a :class:`relayd.splice.WebSocketLeg` in its place,
    which forwards each frame to its partner as it arrives instead of assembling messages.
    """

    __slots__ = ("protocol",)  # one per connection: no per-instance dict for the data legs' roles

    relays = False

    def __init__(self, protocol):
        self.protocol = protocol

    def received_before_open(self, data):
        """Bytes that came while the handshake is still open; True if the role kept them."""
        return False

    def opened(self):
        """The opening handshake completed."""

    def message(self, payload, is_binary):
        """A whole message (roles that do not relay)."""

    def lost(self):
        """The connection is gone: release what the role holds (timers, registrations)."""


def param(request, name):
    """The first value of query parameter ``name`` of the handshake, or None."""
    values = request.params.get(name)
    return values[0] if values else None


def authorize(factory, host, entity, token, right):
    """Check ``token`` for ``right`` on ``entity`` (the hosts the sender may have addressed come
    from ``host``, the handshake's Host header, and the relay's public URL).  Raises :class:`Denied`."""
    public = factory.public_url
    hosts = access.candidate_hosts(host, urlsplit(public).hostname if public else None)
    try:
        return access.authorize(factory.namespace, entity, token, right, hosts, factory.clock.seconds())
    except sas.AuthError as e:
        raise Denied(e.status, str(e))
