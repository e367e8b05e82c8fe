"""Hybrid Connections WebSocket front door (Autobahn): ``/$hc/{path}[/suffix]?sb-hc-action=...``.

Wire protocol (Azure Relay Hybrid Connections, relayd flavour):

* ``sb-hc-action=listen`` — a listener's control channel.  Needs a token with Listen.
  The relay sends ``accept`` (and, for HTTP relaying, ``request``) JSON text messages; the
  listener may send ``renewToken``.  The channel closes with 1008 when the token expires
  (unless renewed), 1001 when the entity is deleted; the relay pings it when idle.
* ``sb-hc-action=connect`` — a sender.  Needs a token with Send unless the entity allows
  anonymous senders.  The handshake stays open until a listener accepts (then 101), rejects
  (the listener's status) or the accept deadline passes (504).
* ``sb-hc-action=accept&sb-hc-id=KEY`` — the listener's rendezvous leg for one sender
  (the address comes from the ``accept`` message).  With ``sb-hc-statusCode`` and
  ``sb-hc-statusDescription`` it rejects instead; that handshake ends with 410.

After pairing, frames are relayed as they arrive (see :mod:`relayd.pipe`).  Handshake
errors are HTTP 400/401/403/404/500 with a tracking id in the status description.
"""

import json
import struct
from urllib.parse import unquote, urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from zope.interface import implementer

from relayd import access, pipe

from relayd.wire import sas
from relayd.interfaces import IClosable, IListenerChannel, IRendezvousLeg
from relayd.namespace import Entity
from relayd.switchboard import SwitchboardError
from relayd.transports.listener.offers import AcceptOffer
from relayd.wire import hc

HC_PREFIX = "/$hc/"
DATA_ROLES = ("connect", "accept", "request")
MAX_REASON = 512
# Bytes a sender may send before its handshake has completed (it waits for a listener);
# beyond this the relay stops reading it until the handshake ends.
PREOPEN_BUFFER_MAX = 64 * 1024


class Denied(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def raw_headers(request_head):
    """Header (name, value) pairs from a raw HTTP request head, with the sender's own casing."""
    lines = request_head.decode("iso-8859-1").split("\r\n")[1:]
    headers = []
    for line in lines:
        if not line:
            continue
        if line[0] in " \t" and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return headers


_CANONICAL = {
    "sec-websocket-key": "Sec-WebSocket-Key",
    "sec-websocket-version": "Sec-WebSocket-Version",
    "sec-websocket-protocol": "Sec-WebSocket-Protocol",
    "host": "Host",
    "origin": "Origin",
    "user-agent": "User-Agent",
    "upgrade": "Upgrade",
    "connection": "Connection",
}

_NOT_FORWARDED = {"sec-websocket-extensions", "servicebusauthorization"}


def connect_headers(pairs, drop_authorization):
    """The ``connectHeaders`` object: every header the sender sent, except extensions and tokens."""
    out = {}
    for name, value in pairs:
        low = name.lower()
        if low in _NOT_FORWARDED or (drop_authorization and low == "authorization"):
            continue
        name = _CANONICAL.get(low, name)
        out[name] = out[name] + ", " + value if name in out else value
    return out


@implementer(IListenerChannel, IClosable, IRendezvousLeg)
class HybridProtocol(WebSocketServerProtocol):
    """One WebSocket on the HC door; its role (control channel, sender, accept leg) is set in onConnect."""

    _log = Logger()

    role = None
    entity = None
    partner = None
    pause_reader = None
    listener_id = None
    _untrack = None
    _rendezvous = None
    _token_timer = None
    _accept_leg = None
    _pressure = None
    _preopen_held = False
    _on_lost = None

    # -- handshake ----------------------------------------------------------------------

    def onConnect(self, request):
        try:
            return self._route(request)
        except Denied as e:
            tracking = access.tracking_id()
            action = request.params.get("sb-hc-action", ["?"])[0]
            self._refusal_logged = True
            self.factory.refusals.refused(
                ("HC " + action[:20], e.status),
                "HC {action} on {path} from {peer} denied: {status} {message} (tracking {tracking})",
                action=action, path=request.path,
                peer=self.peer, status=e.status, message=e.message, tracking=tracking,
            )
            raise ConnectionDeny(e.status, access.with_tracking(e.message, tracking))
        except Exception:
            self._log.failure("HC handshake failed unexpectedly")
            raise ConnectionDeny(500, access.with_tracking("internal error in the relay"))

    _deny_headers = None
    _refusal_logged = False

    def failHandshake(self, reason, code=400, responseHeaders=None):
        """Autobahn's refusal of a handshake (ConnectionDeny carries no headers): adds the
        headers a refusal needs, e.g. Retry-After with a 503."""
        if self._deny_headers:
            responseHeaders = list(responseHeaders or ()) + self._deny_headers
        # Logged once, rate-limited (a storm of refusals must not flood the log), instead of
        # Autobahn's two lines per refusal.
        if not self._refusal_logged:
            self.factory.refusals.refused(("HC handshake", code), "HC handshake from {peer} refused: {code} {reason}",
                                          peer=self.peer, code=code, reason=access.one_line(reason, 200))
        self.wasNotCleanReason = reason
        self.sendHttpErrorResponse(code, reason, responseHeaders)
        self.wasClean = True  # an orderly refusal: no "dropping connection" warning
        self.dropConnection(abort=False)

    def _param(self, request, name):
        values = request.params.get(name)
        return values[0] if values else None

    def _route(self, request):
        f = self.factory
        path = unquote(request.path)
        if not path.startswith(HC_PREFIX):
            raise Denied(404, "WebSocket paths start with /$hc/ followed by the hybrid connection path")
        rel = path[len(HC_PREFIX):]
        action = (self._param(request, "sb-hc-action") or "").lower()
        if action not in ("listen", "connect", "accept", "request"):
            raise Denied(400, "sb-hc-action must be listen, connect or accept, got %r" % action)
        self.head_pairs = raw_headers(self.http_request_data)
        self.request = request
        if action == "accept" or action == "request":
            return self._on_accept(request, rel, action)
        entity, suffix = f.namespace.resolve(rel)
        token = sas.extract_token(self._param(request, "sb-hc-token"), request.headers)
        if entity is None and action == "listen" and f.namespace.create_on_listen and rel:
            entity = self._create_on_listen(rel, token, request)
            suffix = ""
        if entity is None:
            raise Denied(404, "no hybrid connection at '%s'" % rel.strip("/"))
        self.entity = entity
        self.suffix = suffix
        if action == "listen":
            return self._on_listen(request, token)
        return self._on_sender(request, token)

    def _hosts(self, request):
        public = self.factory.public_url
        return access.candidate_hosts(request.headers.get("host"), urlsplit(public).hostname if public else None)

    def _check(self, request, entity, token, right):
        try:
            return access.authorize(
                self.factory.namespace, entity, token, right, self._hosts(request),
                self.factory.clock.seconds(),
            )
        except sas.AuthError as e:
            raise Denied(e.status, str(e))

    def _create_on_listen(self, rel, token, request):
        path = rel.strip("/")
        candidate = Entity(path)
        verified = self._check(request, candidate, token, sas.MANAGE)
        self._log.info("creating hybrid connection {path} on first listen (rule {rule})",
                       path=path, rule=verified.rule.name)
        try:
            return self.factory.namespace.add(candidate)
        except Exception as e:
            raise Denied(400, str(e))

    # -- listener control channel -------------------------------------------------------

    def _on_listen(self, request, token):
        f = self.factory
        verified = self._check(request, self.entity, token, sas.LISTEN)
        self.role = "listen"
        self.entity_path = self.entity.path
        self.listener_id = self._param(request, "sb-hc-id") or access.tracking_id()
        self.maxMessagePayloadSize = f.limits.control_message_max
        self.maxFramePayloadSize = f.limits.control_message_max
        self.autoPingInterval = f.limits.control_ping_interval
        self.autoPingTimeout = f.limits.control_ping_timeout
        try:
            f.switchboard.add_listener(self.entity.path, self, self.entity.max_listeners)
        except SwitchboardError as e:
            raise Denied(e.status, e.message)
        self._arm_token_timer(verified.expires)
        self._log.info("listener {id} online on {path} from {peer}",
                       id=self.listener_id, path=self.entity.path, peer=self.peer)
        return None

    def _arm_token_timer(self, expires):
        if self._token_timer is not None and self._token_timer.active():
            self._token_timer.cancel()
        delay = max(0.0, expires - self.factory.clock.seconds())
        self._token_timer = self.factory.clock.callLater(delay, self._token_expired)

    def _token_expired(self):
        self._token_timer = None
        self._log.info("listener {id} on {path}: token expired, closing", id=self.listener_id,
                       path=self.entity_path)
        self.close(1008, "the listener's token expired; send renewToken before it does")

    def _can_offer(self):
        return self.state == self.STATE_OPEN and not (self._pressure is not None and self._pressure.paused)

    def offer(self, rendezvous):
        if not self._can_offer():
            return False
        offer = rendezvous.offer
        message = offer.message(self.factory.base_url(offer.host, offer.secure), rendezvous)
        if message is not None:
            self.sendMessage(message.encode("utf-8"), isBinary=False)
        return True

    def offer_raw(self, text, body):
        """Send a control message followed by its body as one binary message (HTTP requests)."""
        if not self._can_offer():
            return False
        self.sendMessage(text.encode("utf-8"), isBinary=False)
        self.sendMessage(body, isBinary=True)
        return True

    def _on_control_message(self, payload, is_binary):
        try:
            kind, fields = hc.decode(payload)
        except hc.MessageError as e:
            self._log.info("listener {id}: bad control message: {err}", id=self.listener_id, err=e)
            return
        if kind == "renewToken":
            try:
                verified = self._check(self.request, self.entity, fields["token"], sas.LISTEN)
            except Denied as e:
                self.close(1008, "renewToken rejected: %s" % e.message)
                return
            self._arm_token_timer(verified.expires)
            return
        router = self.factory.response_router
        if router is not None:
            router.control_response(self, fields)

    # -- sender -------------------------------------------------------------------------

    def _on_sender(self, request, token):
        f = self.factory
        dropped_authorization = False
        if self.entity.requires_client_authorization:
            self._check(request, self.entity, token, sas.SEND)
            dropped_authorization = not (
                self._param(request, "sb-hc-token") or "servicebusauthorization" in request.headers
            )
        self.role = "connect"
        self.entity_path = self.entity.path
        self.maxMessagePayloadSize = 0
        self.maxFramePayloadSize = 0
        query = urlsplit(self.http_request_uri).query
        offer = AcceptOffer(
            request.headers.get("host"), ISSLTransport.providedBy(self.transport),
            connect_headers(self.head_pairs, dropped_authorization),
            self.suffix, query, self.transport.getPeer(),
        )
        # The accept deadline (switchboard) bounds this handshake from here on.
        if self.openHandshakeTimeoutCall is not None:
            self.openHandshakeTimeoutCall.cancel()
            self.openHandshakeTimeoutCall = None
        try:
            rv = f.switchboard.open_rendezvous(self.entity.path, offer, self._param(request, "sb-hc-id"))
        except SwitchboardError as e:
            if e.retry_after is not None:  # 503: too many senders waiting (see failHandshake)
                self._deny_headers = [("Retry-After", "%d" % e.retry_after)]
            raise Denied(e.status, e.message)
        finally:
            self.head_pairs = offer = None  # the offer has what it needs: drop the handshake copy
        self._rendezvous = rv
        offered = list(request.protocols)

        def paired(leg):
            self._rendezvous = None
            self._accept_leg = leg
            protocol = leg.selected_protocol
            return protocol if protocol in offered else None

        def failed(failure):
            self._rendezvous = None
            failure.trap(SwitchboardError)
            e = failure.value
            raise ConnectionDeny(e.status, access.with_tracking(e.message))

        return rv.result.addCallbacks(paired, failed)

    # -- accept leg ---------------------------------------------------------------------

    def _on_accept(self, request, rel, action):
        f = self.factory
        key = self._param(request, "sb-hc-id")
        if not key:
            raise Denied(400, "the accept address must carry sb-hc-id; use the address from the accept message as is")
        try:
            rv = f.switchboard.find(key)
        except SwitchboardError as e:
            raise Denied(e.status, e.message)
        if action == "request" or rv.kind != "accept":
            if action != "request" or rv.kind != "request":
                raise Denied(400, "sb-hc-action=%s does not match this rendezvous; use its address as is" % action)
            self.role = "request"
            self.entity_path = rv.entity_path
            self.maxMessagePayloadSize = 0
            self.maxFramePayloadSize = 0
            self._rendezvous = rv
            self.selected_protocol = None
            return None
        status = self._param(request, "sb-hc-statusCode")
        if status is not None:
            description = access.one_line(
                self._param(request, "sb-hc-statusDescription") or "Rejected by the listener", MAX_REASON)
            try:
                code = int(status)
            except ValueError:
                code = 0
            if not 400 <= code <= 599:
                raise Denied(400, "sb-hc-statusCode must be an HTTP error status from 400 to 599")
            rv.reject(code, description)
            raise Denied(410, "the connection was rejected as asked")
        self.role = "accept"
        self.entity_path = rv.entity_path
        self.maxMessagePayloadSize = 0
        self.maxFramePayloadSize = 0
        self._rendezvous = rv
        self.selected_protocol = request.protocols[0] if request.protocols else None
        return self.selected_protocol

    # -- open / messages / close ----------------------------------------------------------

    def dataReceived(self, data):
        if self.state == self.STATE_CONNECTING and self._rendezvous is not None and self.role == "connect":
            # A sender waiting for a listener: what it sends now is processed once the
            # handshake completes (Autobahn does that from its buffer).  Keep it, bounded.
            self.data += data
            if len(self.data) > PREOPEN_BUFFER_MAX and not self._preopen_held:
                self._preopen_held = True
                pipe.hold_reading(self.transport, pipe.HELD_BY_HANDSHAKE)
            return
        super().dataReceived(data)

    def _release_preopen(self):
        if self._preopen_held:
            self._preopen_held = False
            pipe.release_reading(self.transport, pipe.HELD_BY_HANDSHAKE)

    def onOpen(self):
        self._release_preopen()
        if self.role == "listen":
            self.transport.bufferSize = self.factory.limits.control_queue_max
            self._pressure = pipe.pause_when_full(self.transport, ControlChannelPressure(self))
        elif self.role in ("accept", "request"):
            rv, self._rendezvous = self._rendezvous, None
            if rv.done:
                self.close(1001, "the sender went away before the connection was accepted")
                return
            rv.accept(self)  # completes the sender's handshake; its onOpen splices both legs
        elif self.role == "connect":
            leg, self._accept_leg = self._accept_leg, None
            if leg is None or leg.state != leg.STATE_OPEN:
                self.close(1011, "internal error: the accept leg is gone")
                return
            self.start_data_leg()
            leg.start_data_leg()
            pipe.splice(self, leg)

    def start_data_leg(self):
        buffer_size = self.factory.limits.leg_buffer
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = buffer_size
        self._untrack = self.factory.switchboard.track(self.entity_path, self)

    # Data legs: forward each validated piece of a frame to the peer as it arrives.  Control
    # channels buffer whole (size-limited) messages as Autobahn does by default.
    #
    # Nothing is forwarded once this leg is no longer OPEN: Autobahn (failByDrop=False) keeps
    # parsing a frame it has just rejected (bad RSV, opcode, mask, continuation order, invalid
    # UTF-8) after sending its close frame, so a rejected frame would otherwise still reach the
    # peer.  The rejection itself closes the peer at once (see sendCloseFrame).
    #
    # Binary payload needs no check beyond the frame header, so it goes on as it is read.
    # Text is valid only once its frame has been checked to the end (and, for the final
    # frame, once the message does not end inside a code point), so a text frame is held
    # until then, up to limits.leg_buffer bytes; a longer one is forwarded in pieces of that
    # size, each validated before it goes.

    _text = False  # the message being received is text
    _held = ()  # validated text of the current frame not yet forwarded
    _held_size = 0

    def _forwarding(self):
        return self.partner is not None and self.state == self.STATE_OPEN

    def _flush_held(self):
        held, self._held, self._held_size = self._held, (), 0
        if held and self._forwarding():
            self.partner.frame_data(held[0] if len(held) == 1 else b"".join(held))

    def onMessageBegin(self, isBinary):
        if self.role in DATA_ROLES:
            self._text = not isBinary
            self._held, self._held_size = (), 0
            if self._forwarding():
                self.partner.begin_message(isBinary)
        else:
            super().onMessageBegin(isBinary)

    def onMessageFrameBegin(self, length):
        if self.role in DATA_ROLES:
            if self._forwarding():
                self.partner.frame_begin(length)
        else:
            super().onMessageFrameBegin(length)

    def onMessageFrameData(self, payload):
        if self.role in DATA_ROLES:
            if not payload or not self._forwarding():
                return
            if self._text:
                if self._held_size + len(payload) <= self.factory.limits.leg_buffer:
                    self._held = self._held + (payload,) if self._held else (payload,)
                    self._held_size += len(payload)
                    return
                self._flush_held()
            self.partner.frame_data(payload)
        else:
            super().onMessageFrameData(payload)

    def onMessageFrameEnd(self):
        if self.role in DATA_ROLES:
            # Autobahn checks the end of a text message (FIN) only after this: hold the final
            # frame's text until onMessageEnd.
            frame = self.current_frame
            if self._held and frame is not None and not frame.fin:
                self._flush_held()
        else:
            super().onMessageFrameEnd()

    def onMessageEnd(self):
        if self.role in DATA_ROLES:
            if self._forwarding():
                self._flush_held()
                self.partner.end_message()
            self._held, self._held_size = (), 0
        else:
            super().onMessageEnd()

    def onMessage(self, payload, isBinary):
        if self.role == "listen":
            if isBinary:
                router = self.factory.response_router
                if router is not None:
                    router.control_binary(self, payload)
            else:
                self._on_control_message(payload, isBinary)

    def onCloseFrame(self, code, reasonRaw):
        peer = self.partner
        if peer is not None:
            pipe.unsplice(self)
            try:
                reason = reasonRaw.decode("utf-8") if reasonRaw else None
            except UnicodeDecodeError:
                reason = None
            peer.close(code, reason)
        return super().onCloseFrame(code, reasonRaw)

    def connectionLost(self, reason):
        try:
            self._cleanup()
        finally:
            super().connectionLost(reason)
            self._break_cycles()

    def _break_cycles(self):
        """Drop the references that tie a closed protocol into cycles, so its memory (and its
        transport's) returns at once instead of at the next full garbage collection."""
        self.partner = None
        self._on_lost = None
        self._accept_leg = None
        self._rendezvous = None
        # Autobahn resolves is_closed with the protocol itself: protocol -> Deferred -> protocol.
        self.is_closed = defer.succeed(None)
        self.is_open = defer.succeed(None)
        # Timers Autobahn leaves armed after the TCP connection is gone hold the protocol (a
        # bound method) until they fire, and are held by it.
        for name in ("closeHandshakeTimeoutCall", "serverConnectionDropTimeoutCall"):
            call = getattr(self, name, None)
            if call is not None:
                try:
                    call.cancel()
                except Exception:
                    pass
                setattr(self, name, None)

    def _cleanup(self):
        if self._token_timer is not None and self._token_timer.active():
            self._token_timer.cancel()
        self._token_timer = None
        pressure, self._pressure = self._pressure, None
        if pressure is not None:
            pressure.stopProducing()
        if self.role == "listen":
            self.factory.switchboard.remove_listener(self.entity_path, self)
            self._log.info("listener {id} offline on {path}", id=self.listener_id, path=self.entity_path)
        rv, self._rendezvous = self._rendezvous, None
        if rv is not None and not rv.done:
            rv.cancel()
        if self._untrack is not None:
            self._untrack()
            self._untrack = None
        peer = self.partner
        if peer is not None:
            pipe.unsplice(self)
            peer.close(1001, "the other side of the relayed connection went away")
        closer = self._on_lost
        if closer is not None:
            closer()

    # -- sending relayed messages --------------------------------------------------------
    #
    # A relayed message is re-fragmented (RFC 6455 5.4 allows an intermediary to do so when
    # no extension is negotiated; relayd refuses compression): every piece of payload goes out
    # as its own COMPLETE frame, the first with the message's opcode, the rest as
    # continuations, and the message ends with an empty FIN continuation frame (a message
    # with no payload at all is one empty FIN frame with the message's opcode).  Between two
    # calls the outgoing stream is therefore always at a frame boundary, so the pongs and close
    # frames Autobahn writes can never land inside a frame.  These override Autobahn's
    # streaming API of the same names (the HTTP door and the TCP doors call them).

    _out_opcode = None  # opcode of the message being sent; None outside a message
    _out_started = False  # a frame of it has been written (later frames are continuations)

    def _write_frame(self, opcode, payload, fin):
        n = len(payload)
        b0 = (0x80 if fin else 0) | opcode
        if n <= 125:
            header = bytes((b0, n))
        elif n <= 0xFFFF:
            header = struct.pack("!BBH", b0, 126, n)
        else:
            header = struct.pack("!BBQ", b0, 127, n)
        # Straight to the transport: Autobahn's sendData only adds its send queue (used for
        # "sync"/chopped writes, which relayd never makes) and per-call debug-log arguments.
        if n:
            self.transport.writeSequence((header, payload))
        else:
            self.transport.write(header)

    def beginMessage(self, isBinary=False, doNotCompress=False):
        if self.state != self.STATE_OPEN:
            return
        if self._out_opcode is not None:
            raise RuntimeError("beginMessage while a relayed message is still being sent")
        self._out_opcode = self.MESSAGE_TYPE_BINARY if isBinary else self.MESSAGE_TYPE_TEXT
        self._out_started = False

    def beginMessageFrame(self, length):
        """No-op: frames are cut by :meth:`sendMessageFrameData`, one per piece of payload."""

    def sendMessageFrameData(self, payload, sync=False):
        if self.state != self.STATE_OPEN or not payload:
            return
        opcode = self._out_opcode
        if opcode is None:
            raise RuntimeError("sendMessageFrameData outside a message (call beginMessage first)")
        if self._out_started:
            opcode = 0
        self._out_started = True
        self._write_frame(opcode, payload, False)

    def endMessage(self):
        if self.state != self.STATE_OPEN:
            self._out_opcode = None
            return
        opcode = self._out_opcode
        if opcode is None:
            raise RuntimeError("endMessage outside a message (call beginMessage first)")
        self._write_frame(0 if self._out_started else opcode, b"", True)
        self._out_opcode = None
        self._out_started = False

    def sendCloseFrame(self, code=None, reasonUtf8=None, isReply=False):
        # A close this leg starts while still spliced is the relay failing it (protocol
        # error, invalid payload, message too big, ping timeout) or the relay closing it; the
        # peer is told at once, with the same code, instead of after this leg's close handshake.
        first = self.state == self.STATE_OPEN
        super().sendCloseFrame(code=code, reasonUtf8=reasonUtf8, isReply=isReply)
        peer = self.partner
        if first and not isReply and peer is not None:
            pipe.unsplice(self)
            reason = (reasonUtf8 or b"").decode("utf-8", "replace")
            peer.close(code, "the other side of the relayed connection was closed%s" % (
                ": " + reason if reason else ""))

    # -- ILeg (what the peer calls) / IClosable -------------------------------------------

    def begin_message(self, is_binary):
        self.beginMessage(isBinary=is_binary)

    def frame_begin(self, length):
        """No-op (see beginMessageFrame): every frame_data() goes out as one whole frame."""

    def frame_data(self, data):
        self.sendMessageFrameData(data)

    def end_message(self):
        self.endMessage()

    def send_message(self, data):
        """One whole binary message (a TCP door's read, or the empty half-close marker)."""
        self.sendMessage(data, isBinary=True)

    def notify_on_lost(self, callback):
        self._on_lost = callback

    def close(self, code, reason):
        if self.state == self.STATE_OPEN:
            if code in (None, 1005):
                self.sendCloseFrame(isReply=False)
            else:
                if code in (1006, 1015) or not (1000 <= code <= 4999):
                    code = 1001
                reason_utf8 = (reason or "").encode("utf-8")[:123] or None
                self.sendCloseFrame(code=code, reasonUtf8=reason_utf8, isReply=False)
        elif self.state == self.STATE_CONNECTING:
            self.dropConnection(abort=True)


class ControlChannelPressure(pipe.PauseReading):
    """The producer on a control channel's transport.  While more than
    ``limits.control_queue_max`` bytes wait to be written to the listener (it is not reading),
    the relay stops reading the channel (its pings would only queue more pongs), offers it no
    senders (the switchboard balances to other listeners or fails the sender at once) and, if
    it stays so for ``limits.control_stall_timeout`` seconds, closes it with 1008."""

    def __init__(self, channel):
        super().__init__(None, channel.transport)
        self.channel = channel
        self.timer = None

    def pauseProducing(self):
        super().pauseProducing()
        channel = self.channel
        if channel is not None and self.timer is None:
            self.timer = channel.factory.clock.callLater(
                channel.factory.limits.control_stall_timeout, self._stalled)

    def resumeProducing(self):
        super().resumeProducing()
        self._cancel()

    def _cancel(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _stalled(self):
        self.timer = None
        channel = self.channel
        if channel is None:
            return
        limits = channel.factory.limits
        channel._log.info(
            "listener {id} on {path} has not read its control channel for {t} s ({n} bytes queued); closing it",
            id=channel.listener_id, path=channel.entity_path, t=limits.control_stall_timeout,
            n=limits.control_queue_max)
        channel.close(1008, "the listener did not read its control channel for %g s; a listener must "
                            "keep reading it" % limits.control_stall_timeout)

    def stopProducing(self):
        self._cancel()
        self.channel = None
        super().stopProducing()


class HybridFactory(WebSocketServerFactory):
    """Shared state of the HC door: namespace, switchboard, settings."""

    protocol = HybridProtocol

    def __init__(self, namespace, switchboard, settings, clock):
        super().__init__(url=None, server="relayd")
        self.namespace = namespace
        self.switchboard = switchboard
        self.settings = settings
        self.limits = settings.limits
        self.public_url = settings.public_url
        self.clock = clock
        self.refusals = access.RefusalLog(HybridProtocol._log, clock, self.limits.refusal_log_burst,
                                          self.limits.refusal_log_interval)
        self.response_router = None  # IResponseRouter: see set_response_router
        self.setProtocolOptions(
            perMessageCompressionAccept=lambda offers: None,
            openHandshakeTimeout=self.limits.open_handshake_timeout,
            closeHandshakeTimeout=5,
            maxConnections=self.limits.max_connections,
            utf8validateIncoming=True,
            failByDrop=False,
            autoFragmentSize=0,
        )

    def stopFactory(self):
        self.refusals.stop()
        super().stopFactory()

    def base_url(self, host, secure=False):
        if self.public_url:
            return self.public_url
        return "%s://%s" % ("wss" if secure else "ws", host or "localhost")

    def set_response_router(self, router):
        """Send what listeners answer on their control channels (``response`` messages and
        the binary bodies after them) to ``router`` (an IResponseRouter: the HTTP door)."""
        self.response_router = router
