"""Contracts between the switchboard and the transports (front doors and listener legs).

The switchboard knows listeners and pending rendezvous only through these interfaces;
it never imports a transport, Twisted web or Autobahn.
"""

from zope.interface import Attribute, Interface


class IListenerChannel(Interface):
    """A listener's control channel, registered on one entity."""

    entity_path = Attribute("The path of the entity this listener is registered on.")
    listener_id = Attribute("Identifier of this listener (sb-hc-id or generated).")

    def offer(rendezvous):
        """Tell the listener that a sender is waiting: send the control message that
        ``rendezvous.offer`` (an :class:`IOffer`) builds.

        Must not raise for a live channel; a channel that can no longer deliver returns False.
        """

    def offer_raw(text, body):
        """Send the control message ``text`` followed by ``body`` as one binary message (a
        small HTTP request with its body).  False when the channel can no longer deliver."""

    def close(code, reason):
        """Close the control channel with a WebSocket close code and a reason."""


class IOffer(Interface):
    """What a door asks a listener to do for one sender, handed to the switchboard with the
    rendezvous request.  The switchboard carries it opaquely to the listener's channel, which
    asks it for its control message, and drops it once the message is sent."""

    kind = Attribute("'accept' (a WebSocket rendezvous) or 'request' (a relayed HTTP request): "
                     "the sb-hc-action the listener's rendezvous leg must use.")
    host = Attribute("The Host the sender addressed (the rendezvous address uses it when the "
                     "relay has no public_url), or None.")
    secure = Attribute("True when the sender came over TLS (the rendezvous address is wss://).")

    def message(base_url, rendezvous):
        """The control message (text) for the listener, with the rendezvous address built on
        ``base_url`` and ``rendezvous.key``; None when nothing goes out with the offer."""


class IResponseRouter(Interface):
    """Where a control channel sends what a listener answers on it (the HTTP door's pending
    requests).  Registered with the WebSocket door's factory (``set_response_router``)."""

    def control_response(channel, response):
        """A ``response`` control message (a ``relayd.wire.hc.Response``) arrived on ``channel``."""

    def control_binary(channel, payload):
        """A binary message (a response body that follows its ``response``) arrived on
        ``channel``."""


class IClosable(Interface):
    """Anything the switchboard may close when an entity is deleted (data legs, pending requests)."""

    def close(code, reason):
        """Close with a WebSocket close code (or the transport's equivalent) and a reason."""


class ILeg(Interface):
    """One side of a spliced connection (see relayd.pipe).

    Messages are forwarded piece by piece as they arrive, never buffered whole:
    ``begin_message`` / ``frame_begin`` / ``frame_data`` ... / ``end_message``.  A WebSocket
    leg writes every ``frame_data`` piece as one complete frame of its own (the message
    re-fragmented), so its outgoing stream is at a frame boundary between calls and control
    frames (pongs, close) never land inside a relayed frame.  A leg forwards nothing of a frame
    it rejects, and closes its peer at once with the same close code.
    """

    transport = Attribute("The Twisted transport (an IPushProducer / IConsumer).")

    def begin_message(is_binary):
        """Start a message of the given type."""

    def frame_begin(length):
        """The sender started a frame of ``length`` payload bytes (a hint; WebSocket legs
        ignore it, since they cut their own frames)."""

    def frame_data(data):
        """Write the next piece of the current message's payload (validated already)."""

    def end_message():
        """Finish the current message."""

    def send_message(data):
        """Send ``data`` as one whole binary message (a TCP read; ``b""`` is the half-close
        marker between TCP doors and bridge agents)."""

    def close(code, reason):
        """Close this leg with a close code and reason."""


class IRendezvousLeg(ILeg):
    """A listener's rendezvous leg, as a door gets it from ``Rendezvous.result``."""

    selected_protocol = Attribute("The WebSocket subprotocol the listener chose, or None.")

    def start_data_leg():
        """Make this a data leg: its write buffer gets ``limits.leg_buffer`` and deleting the
        entity closes it.  Call once, before splicing."""

    def notify_on_lost(callback):
        """Call ``callback()`` (no arguments) when this leg's connection is lost; None stops."""

    def send_text(text):
        """Send ``text`` as one whole text message (the HTTP door's ``request`` message)."""


class IHeadCheck(Interface):
    """A door that checks a request from its head alone, before any of the body is read (the
    front door asks it while it still owns the socket)."""

    def refuse(head):
        """``head``: the request head, bytes up to (without) the blank line.  Returns None to go
        on, or ``(status, phrase, body)`` for the front door to answer and close."""
