"""The listener side of a hybrid connection: :class:`HybridListener`.

::

    def on_accept(request):              # an AcceptRequest
        if request.path_suffix != "/ok":
            return False                 # reject with 403
        d = request.accept()             # Deferred[RelayedConnection]
        d.addCallback(lambda conn: setattr(conn, "on_message", conn.send))   # echo

    listener = HybridListener(reactor, ConnectionInfo.parse(cs), "echo", on_accept,
                              on_status=lambda status, detail: print(status, detail))
    yield listener.start()               # fires once the control channel is online
    ...
    yield listener.stop()

The control channel is ``ws(s)://host/$hc/{path}?sb-hc-action=listen&sb-hc-id=...`` with a
Listen token in the ``ServiceBusAuthorization`` header.  The listener

* reconnects whenever the channel fails or closes (1008: the token expired, 1001: the entity
  was deleted, 1006: the node died) or cannot be opened (401, 404, refused, ...), after a delay around ``min(cap, base * 2**n)`` where ``n`` counts
  the failures since the channel was last online: ``backoff=(base, cap, jitter)``, by default
  ``(0.1, 5, 0.5)`` (+-50%); a pair ``(base, cap)`` draws from ``[0, step)`` (see
  :class:`~relayd.client.endpoints.Backoff`).  A status in ``give_up_on`` (e.g. 401, 403,
  404) stops the listener instead (status ``stopped``; ``start()`` fails with it);
* fails over among the relay endpoints of ``info`` (several in the connection string, or a
  name with several addresses): each attempt goes to the next one, skipping those that just
  failed (:mod:`relayd.client.endpoints`); ``target`` (``.describe()``), ``endpoint`` and
  ``address`` say which, ``online`` whether the channel is up;
* renews its token with ``{"renewToken": {"token": ...}}`` at 80% of ``token_ttl`` (only
  when it has a key to sign with; a fixed ``SharedAccessSignature`` cannot be renewed);
* pings the relay every ``keepalive`` seconds and drops (then reconnects) a channel on
  which nothing at all arrived within ``keepalive`` seconds of a ping (the timing runs on
  ``clock``; Autobahn's own auto-ping is not used, its timers round to whole seconds);
* hands the relay's HTTP ``request`` messages to ``http_handler`` (see
  :mod:`relayd.client.http`), or answers them with 501 when there is none.

``on_status(status, detail)`` is called with:

=============  ==========================================================================
``connecting`` an attempt starts; detail: the control channel URL (no token) of the endpoint
``online``     the channel is open; detail: the listener id (``sb-hc-id``)
``error``      an attempt failed; detail: a :class:`RelayConnectError` (``.status`` is the
               HTTP status, None when no HTTP answer came; ``.description``)
``offline``    an open channel closed; detail: :class:`ChannelClosed` ``(code, reason)``
``retry``      the next attempt is scheduled; detail: the delay in seconds
``stopped``    a status in ``give_up_on`` stopped the listener; detail: the RelayConnectError
``renewed``    a renewToken was sent; detail: the new token's expiry (Unix seconds)
=============  ==========================================================================

When it is called, ``listener.state`` is already the state the event led to (see
:class:`HybridListener`).  Time (backoff, renewals, pings) comes from ``clock`` (default:
the reactor), so all of it is tested on a fake clock.
"""

import math
import uuid
from collections import namedtuple

from twisted.internet import defer
from twisted.logger import Logger

from relayd import states
from relayd.client.accept import Accepted, AcceptRequest
from relayd.client.endpoints import DEFAULT_BACKOFF, Backoff, EndpointRotation, resolve_targets
from relayd.client.handshake import RelayConnectError, open_websocket
from relayd.client.websocket import RelayedConnection
from relayd.wire import hc

RENEW_AT = 0.8
CONTROL_MESSAGE_MAX = 1024 * 1024

ChannelClosed = namedtuple("ChannelClosed", "code reason")

# listener states (:data:`TRANSITIONS`); each timer belongs to the state that arms it
STOPPED, CONNECTING, ONLINE, RECONNECT_WAIT = "stopped", "connecting", "online", "waiting"
TRANSITIONS = {
    STOPPED: {CONNECTING, STOPPED},  # start() (stop() again does nothing)
    CONNECTING: {ONLINE, RECONNECT_WAIT, STOPPED},  # the channel opened / the attempt failed / stop()
    ONLINE: {RECONNECT_WAIT, STOPPED},  # the channel closed (or was dropped) / stop()
    RECONNECT_WAIT: {CONNECTING, STOPPED},  # the backoff delay passed / stop() or a give_up_on status
}
RETRY, RENEW, KEEPALIVE = "retry", "renew", "keepalive"
TIMERS = {STOPPED: set(), CONNECTING: set(), ONLINE: {RENEW, KEEPALIVE}, RECONNECT_WAIT: {RETRY}}


class HybridListener:
    """A listener on one hybrid connection (see the module docstring).

    States (:data:`TRANSITIONS`, read as :attr:`state`)::

        STOPPED --start()--> CONNECTING --channel open--> ONLINE
                                 ^    \\                     |
                                 |     attempt failed       channel closed or dropped
                           retry |      v                   v
                                 +--- RECONNECT_WAIT <------+

    and any state goes to STOPPED on :meth:`stop` (RECONNECT_WAIT also on a ``give_up_on``
    status).  The timers (:data:`TIMERS`) belong to a state: RECONNECT_WAIT arms the backoff
    delay, ONLINE the renewal and the keepalive ping; each transition cancels the old ones.
    """

    _log = Logger()

    def __init__(self, reactor, info, path, on_accept, *, on_status=None, token_ttl=3600,
                 keepalive=30, backoff=DEFAULT_BACKOFF, clock=None, rng=None, listener_id=None,
                 connect_timeout=30, accept_timeout=30, http_handler=None, give_up_on=()):
        if token_ttl <= 0:
            raise ValueError("token_ttl must be a positive number of seconds")
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.info = info
        self.path = info.resolve_path(path)
        self.on_accept = on_accept
        # Serves HTTP ``request`` messages (relayd.client.http); None answers them with 501.
        self.http_handler = http_handler
        self.on_status = on_status
        self.token_ttl = token_ttl
        self.keepalive = keepalive
        self.backoff = Backoff.from_spec(backoff, rng)
        self.give_up_on = frozenset(give_up_on)
        self.endpoints = info.endpoints()
        self.endpoint, self.address = self.endpoints[0], None  # of the current or last attempt
        self.rotation, self.target = EndpointRotation(rng), None  # (a Target of the rotation)
        self.listener_id = listener_id or str(uuid.uuid4())
        self.connect_timeout = connect_timeout
        self.accept_timeout = accept_timeout
        self.state = STOPPED
        self.channel = None  # the open control channel (a RelayedConnection), while ONLINE
        self.last_status = None
        self.token_expires = None
        self._attempt = None  # the Deferred of the channel being opened, while CONNECTING
        self._timers = {}  # {timer name: DelayedCall} of the current state's armed timers
        self._last_heard = self._ping_sent = self._token_time = None
        self._online_waiters = []
        self.accepted = Accepted()  # what on_accept's answers opened

    # -- public ----------------------------------------------------------------------------

    def start(self):
        """Open the control channel (and keep it open).  Fires with this listener when it
        is online the first time; fails with CancelledError if stopped before that."""
        if self.state == STOPPED:
            self.backoff.reset()
            self._connect()
        return self.when_online()

    def when_online(self):
        """A Deferred firing with this listener as soon as (or if already) online."""
        if self.state == ONLINE:
            return defer.succeed(self)
        d = defer.Deferred(lambda d: self._online_waiters.remove(d) if d in self._online_waiters else None)
        self._online_waiters.append(d)
        return d

    def stop(self):
        """Stop reconnecting, close the control channel and every accepted connection.
        Fires when all of them have closed."""
        self._to(STOPPED)
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            attempt.cancel()
        waiting = []
        channel, self.channel = self.channel, None
        if channel is not None:
            waiting.append(channel.close(1000, "the listener stopped"))
        waiting += self.accepted.close(1001, "the listener stopped")
        self._fail_waiters(defer.CancelledError("the listener was stopped before it was online"))
        return defer.gatherResults(waiting).addCallback(lambda _: None)

    def _fail_waiters(self, err):
        waiters, self._online_waiters = self._online_waiters, []
        for d in waiters:
            d.errback(err)

    @property
    def online(self):
        """True while the control channel is open."""
        return self.state == ONLINE

    @property
    def timers(self):
        """The names of the timers armed now (a subset of ``TIMERS[state]``)."""
        return frozenset(self._timers)

    @property
    def connections(self):
        """The accepted connections still open."""
        return set(self.accepted.connections)

    # -- states and timers -----------------------------------------------------------------

    def _to(self, state):
        """Leave the current state (cancelling its timers) for ``state``."""
        self.state = states.step(TRANSITIONS, "client listener", self.state, state)
        timers, self._timers = self._timers, {}
        for call in timers.values():
            call.cancel()

    def _arm(self, name, delay, fire):
        """Call ``fire`` in ``delay`` seconds unless the current state is left before."""
        assert name in TIMERS[self.state], "%s arms no %s timer" % (self.state, name)

        def due():
            del self._timers[name]
            fire()

        self._timers[name] = self.clock.callLater(delay, due)

    def _set_status(self, status, detail):
        self.last_status = (status, detail)
        if self.on_status is not None:
            try:
                self.on_status(status, detail)
            except Exception:
                self._log.failure("on_status callback failed")

    # -- CONNECTING ------------------------------------------------------------------------

    def control_url(self):
        return self.endpoint.hc_url(self.path, query=[("sb-hc-action", "listen"), ("sb-hc-id", self.listener_id)])

    def _fresh_token(self):
        now = self.clock.seconds()
        token = self.endpoint.token_for(self.path, self.token_ttl, now=now)  # its audience: this endpoint
        self._token_time = now
        self.token_expires = int(math.ceil(now + self.token_ttl)) if self.info.key else None
        return token

    def _connect(self):
        self._to(CONNECTING)
        d = self._attempt = resolve_targets(self.reactor, self.endpoints)
        d.addCallbacks(self._resolved, self._attempt_failed, callbackArgs=(d,), errbackArgs=(d,))

    def _resolved(self, targets, attempt):
        if attempt is not self._attempt:
            return
        self.rotation.update(targets)
        target = self.target = self.rotation.pick()
        self.endpoint, self.address = target.endpoint, target.address
        url = self.control_url()
        self._set_status("connecting", url)
        if self.state != CONNECTING:  # on_status stopped the listener
            return
        headers = {}
        try:
            token = self._fresh_token()
        except Exception as e:
            self._attempt_failed_with(RelayConnectError(None, "cannot make a token: %s" % e))
            return
        if token:
            headers["ServiceBusAuthorization"] = token
        options = {"maxMessagePayloadSize": CONTROL_MESSAGE_MAX, "maxFramePayloadSize": CONTROL_MESSAGE_MAX}
        d = open_websocket(self.reactor, url, RelayedConnection, headers=headers, address=target.address,
                           timeout=self.connect_timeout, options=options, trust_root=self.info.trust_root)
        self._attempt = d
        d.addCallbacks(self._connected, self._attempt_failed, callbackArgs=(d,), errbackArgs=(d,))

    def _connected(self, conn, attempt):
        if attempt is not self._attempt:
            conn.abort()
            return
        self._attempt = None
        self._to(ONLINE)
        self.channel = conn
        conn.on_close = lambda code, reason: self._channel_closed(conn, code, reason)
        conn.on_message = self._on_control_message
        conn.on_traffic = self._heard
        self._heard()
        self._ping_sent = None
        self.backoff.reset()
        self.rotation.succeeded()
        self._set_status("online", self.listener_id)
        if self.state != ONLINE:  # on_status stopped the listener
            return
        self._arm_renew()
        self._arm_keepalive()
        waiters, self._online_waiters = self._online_waiters, []
        for d in waiters:
            d.callback(self)

    def _attempt_failed(self, failure, attempt):
        if attempt is not self._attempt:
            return None
        self._attempt = None
        err = failure.value
        if not isinstance(err, RelayConnectError):
            self._log.failure("listener attempt failed unexpectedly", failure)
            err = RelayConnectError(None, failure.getErrorMessage())
        self._attempt_failed_with(err)
        return None

    def _attempt_failed_with(self, err):  # CONNECTING -> RECONNECT_WAIT (or STOPPED: give_up_on)
        if self.target is not None:
            self.rotation.failed(self.target)
        self._to(RECONNECT_WAIT)
        self._set_status("error", err)
        if err.status in self.give_up_on and self.state == RECONNECT_WAIT:
            self._to(STOPPED)
            self._set_status("stopped", err)
            self._fail_waiters(err)
            return
        self._retry_later()

    # -- ONLINE -> RECONNECT_WAIT ------------------------------------------------------------

    def _channel_closed(self, conn, code, reason):
        current = conn is self.channel  # (not one that stop() closed)
        if current:
            self.channel = None
            self.rotation.failed(self.target)  # the next attempt goes to another endpoint
            self._to(RECONNECT_WAIT)
        self._set_status("offline", ChannelClosed(code, reason))
        if current:
            self._retry_later()

    def _retry_later(self):
        if self.state != RECONNECT_WAIT:  # stopped (or on_status stopped the listener)
            return
        delay = self.backoff.next()
        self._arm(RETRY, delay, self._connect)
        self._set_status("retry", delay)

    # -- ONLINE: keepalive -------------------------------------------------------------------

    def _heard(self):
        self._last_heard = self.clock.seconds()

    def _arm_keepalive(self):
        if self.keepalive:
            self._arm(KEEPALIVE, self.keepalive, self._keepalive_tick)

    def _keepalive_tick(self):
        channel = self.channel
        if self._ping_sent is not None and self._last_heard < self._ping_sent:
            self._log.info("listener {id}: nothing from the relay for {s}s after a ping; reconnecting",
                           id=self.listener_id, s=self.keepalive)
            channel.abort("no answer from the relay within %ss of a keepalive ping" % self.keepalive)
            return
        if channel.is_connected:
            self._ping_sent = self.clock.seconds()
            channel.sendPing()
        self._arm_keepalive()

    # -- ONLINE: token renewal ---------------------------------------------------------------

    def renew_delay(self):
        """Seconds from now until the next renewToken (80% into the token's lifetime)."""
        return max(0.0, self._token_time + RENEW_AT * self.token_ttl - self.clock.seconds())

    def _arm_renew(self):
        if self.info.key is not None:  # (a fixed SharedAccessSignature cannot be renewed)
            self._arm(RENEW, self.renew_delay(), self._renew)

    def _renew(self):
        channel = self.channel
        if not channel.is_connected:
            return
        try:
            token = self._fresh_token()
            channel.send(hc.encode_renew_token(token))
        except Exception:
            self._log.failure("renewing the listener token failed")
        else:
            self._set_status("renewed", self.token_expires)
        if self.state == ONLINE:
            self._arm_renew()

    # -- control messages ------------------------------------------------------------------

    def _on_control_message(self, data):
        if not isinstance(data, str):
            if self.http_handler is not None:
                self.http_handler.control_binary(self, data)
            else:
                self._log.info("listener {id}: ignoring a binary control message", id=self.listener_id)
            return
        try:
            msg = hc.decode_from_relay(data)
        except hc.MessageError as e:
            self._log.info("listener {id}: ignoring a control message: {err}; {data!r}", id=self.listener_id,
                           err=e, data=data[:200])
            return
        if isinstance(msg, hc.Accept):
            AcceptRequest(self, msg).offer(self.on_accept)
        else:
            self._on_request_message(msg)

    def _on_request_message(self, request):
        channel = self.channel
        if self.http_handler is not None and channel is not None:
            self.http_handler.control_request(self, channel, request)
        elif not request.is_rendezvous and channel is not None:
            try:
                channel.send(hc.encode_response(request.id, 501, "Not Implemented"))
            except Exception:
                pass
