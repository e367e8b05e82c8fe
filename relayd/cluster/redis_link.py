"""The link to Redis: the one module that imports the Redis client (txredisapi, native on the
Twisted reactor: no asyncio reactor, which would change the relay's data path).

:class:`RedisLink` holds two connections -- one for commands, one subscribed to pub/sub channels
(a subscribed Redis connection takes no other command) -- and reconnects each with exponential
backoff (``BACKOFF_FIRST`` doubling to ``BACKOFF_MAX``, with jitter) for as long as it runs.  The
link is *up* while both connections are ready, else *down*; :attr:`since` is when that last
changed, and ``on_up`` / ``on_down`` callbacks run at each transition (logged once each).  While
down, :meth:`command` fails at once with :class:`RedisDown` (callers fall back or report), and
every command has a deadline (``COMMAND_TIMEOUT``): a Redis that stops answering is down.

txredisapi's protocols are built here with our own factory (the reactor and the backoff are
ours); the protocol expects ``stopTrying``, ``connectionError`` and ``isLazy`` of its factory --
pinned by tests/unit/test_cluster_redis_link.py.
"""

import json
import random

import txredisapi
from twisted.internet import defer, endpoints, protocol, ssl
from twisted.logger import Logger

BACKOFF_FIRST = 0.1  # seconds before the first reconnection attempt
BACKOFF_MAX = 2.0  # the longest wait between attempts
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 2.0  # a command unanswered this long: the link is taken down and reconnected
READY_TIMEOUT = CONNECT_TIMEOUT + COMMAND_TIMEOUT  # a new connection's AUTH, SELECT and first answer
UP, DOWN = "up", "down"


class RedisDown(Exception):
    """Redis cannot be reached now; the node works on its own until it can.  ``status``: a
    management API call that needs Redis answers 503 (relayd.web.replies.when_written)."""

    status = 503


class _Factory(protocol.Factory):
    """What txredisapi's protocols expect of their factory (see the module docstring)."""

    isLazy = False

    def __init__(self, link, role, build):
        self.link, self.role, self.build = link, role, build
        self.refused = None
        self.conn = None

    def buildProtocol(self, addr):
        p = self.build()
        p.factory = self
        return p

    def stopTrying(self):  # AUTH or SELECT failed (reported by connectionError): the link retries anyway
        pass

    def connectionError(self, message):
        self.refused = message  # logged by RedisLink._failed with the attempt's other failures


class _Subscriber(txredisapi.SubscriberProtocol):
    link = None

    def messageReceived(self, pattern, channel, message):
        self.link._message(channel, message)


def backoff_delays(rng, first=BACKOFF_FIRST, most=BACKOFF_MAX):
    """Endless delays: ``first`` doubling up to ``most``, each with +-25 % jitter."""
    delay = first
    while True:
        yield delay * (0.75 + rng.random() / 2)
        delay = min(most, delay * 2)


class RedisLink:
    """``RedisLink(reactor, address)``: :meth:`start`, :meth:`stop`, :meth:`command`,
    :meth:`publish`, :meth:`subscribe`; :attr:`state` (``"up"``/``"down"``) and :attr:`since`."""

    log = Logger()

    def __init__(self, reactor, address, rng=None):
        self.reactor = reactor
        self.address = address  # relayd.cluster.settings.RedisAddress
        self.rng = rng or random.Random()
        self.state = DOWN
        self.since = reactor.seconds()
        self.on_up, self.on_down = [], []
        self.on_message = None  # callable(channel, message bytes/str) for subscribed channels
        self.channels = set()
        self.running = False
        self._conns = {"command": None, "pubsub": None}
        self._retry = {}
        self._delays = {}
        self.transitions = 0

    # -- life ------------------------------------------------------------------------------

    def start(self):
        self.running = True
        for role in self._conns:
            self._connect(role)

    def stop(self):
        self.running = False
        for call in self._retry.values():
            if call.active():
                call.cancel()
        self._retry.clear()
        for role, conn in list(self._conns.items()):
            self._conns[role] = None
            if conn is not None and conn.transport is not None:
                conn.transport.abortConnection()
        self._set(DOWN, quiet=True)

    def _endpoint(self):
        a = self.address
        endpoint = endpoints.HostnameEndpoint(self.reactor, a.host, a.port, timeout=CONNECT_TIMEOUT)
        if a.tls:
            endpoint = endpoints.wrapClientTLS(ssl.optionsForClientTLS(a.host), endpoint)
        return endpoint

    def _build(self, role):
        a = self.address
        cls = _Subscriber if role == "pubsub" else txredisapi.RedisProtocol
        p = cls(password=a.password, dbid=a.db or None, username=a.username, replyTimeout=COMMAND_TIMEOUT,
                convertNumbers=True)
        if role == "pubsub":
            p.link = self
        return p

    def _connect(self, role):
        self._retry.pop(role, None)
        if not self.running:
            return
        factory = _Factory(self, role, lambda: self._build(role))
        d = self._endpoint().connect(factory)
        d.addCallback(self._ready, role, factory)
        d.addCallbacks(self._connected, self._failed, callbackArgs=(role,), errbackArgs=(role, factory))

    def _ready(self, conn, role, factory):
        """A connection counts once Redis has answered on it -- after AUTH and SELECT, a PING or
        (pub/sub) the SUBSCRIBE -- within READY_TIMEOUT: a TLS handshake or AUTH that fails, or
        a Redis that accepts but never answers, is a failed attempt, not an up and a down."""
        factory.conn = conn
        d = conn.whenConnected()
        if role == "pubsub" and self.channels:
            d.addCallback(lambda _: conn.subscribe(sorted(self.channels)))
        else:
            d.addCallback(lambda _: conn.execute_command("PING"))
        d.addTimeout(READY_TIMEOUT, self.reactor)
        return d.addCallback(lambda _: conn)

    def _connected(self, conn, role):
        if not self.running or self._conns[role] is not None:
            conn.transport.abortConnection()
            return
        self._conns[role] = conn
        self._delays.pop(role, None)
        lost = conn.connectionLost

        def connection_lost(reason, conn=conn):
            try:
                lost(reason)
            finally:
                self._lost(role, conn)

        conn.connectionLost = connection_lost
        self._update()

    def _subscribe_failed(self, failure, conn):
        self.log.warn("cluster: cannot subscribe to the cluster's channels: {error}", error=failure.getErrorMessage())
        if conn.transport is not None:
            conn.transport.loseConnection()

    def _failed(self, failure, role, factory):
        conn = factory.conn
        if conn is not None and conn.connected and conn.transport is not None:  # (not once lost)
            conn.transport.abortConnection()
        reason = factory.refused or failure.getErrorMessage()
        if role not in self._delays:  # the first failure of a series: once, not at every retry
            log = self.log.debug if self.transitions else self.log.warn  # at start: nothing said it is down
            log("cluster: cannot reach Redis at {host}:{port} ({role} connection): {reason}; retrying",
                host=self.address.host, port=self.address.port, role=role, reason=reason)
        self._schedule(role)

    def _lost(self, role, conn):
        if self._conns.get(role) is conn:
            self._conns[role] = None
            self._update()
            self._schedule(role)

    def _schedule(self, role):
        if not self.running or role in self._retry:
            return
        delays = self._delays.setdefault(role, backoff_delays(self.rng))
        self._retry[role] = self.reactor.callLater(next(delays), self._connect, role)

    def _update(self):
        self._set(UP if all(c is not None for c in self._conns.values()) else DOWN)

    def _set(self, state, quiet=False):
        if state == self.state:
            return
        self.state, self.since = state, self.reactor.seconds()
        self.transitions += 1
        a = self.address
        if quiet:  # stopped: not an outage
            pass
        elif state == UP:
            self.log.info("cluster: Redis at {host}:{port} is up", host=a.host, port=a.port)
        else:
            self.log.warn("cluster: Redis at {host}:{port} is down; serving listeners and senders that meet "
                          "on this node until it is back", host=a.host, port=a.port)
        for callback in list(self.on_up if state == UP else self.on_down):
            try:
                callback()
            except Exception:
                self.log.failure("cluster: a Redis {state} callback failed", state=state)

    # -- commands --------------------------------------------------------------------------

    @property
    def up(self):
        return self.state == UP

    def command(self, *args):
        """A Deferred of the reply of one Redis command (``"HGET", key, field``); fails with
        :class:`RedisDown` at once while the link is down."""
        conn = self._conns["command"]
        if conn is None or not self.up:
            return defer.fail(RedisDown("Redis is down"))
        d = conn.execute_command(*args)
        d.addErrback(self._command_failed, conn)
        return d

    def _command_failed(self, failure, conn):
        if failure.check(txredisapi.ResponseError):
            return failure  # Redis answered with an error: the link is fine
        if self._conns["command"] is conn:  # unanswered: down now, and reconnect
            self._conns["command"] = None
            self._update()
            if conn.connected and conn.transport is not None:
                conn.transport.abortConnection()
            self._schedule("command")
        raise RedisDown("Redis did not answer: %s" % failure.getErrorMessage())

    def eval(self, script, keys, args):
        """Run a Lua ``script`` (EVAL: scripts are small and few)."""
        return self.command("EVAL", script, len(keys), *keys, *args)

    def publish(self, channel, message):
        return self.command("PUBLISH", channel, message)

    def subscribe(self, channel):
        """Receive ``channel``'s messages through :attr:`on_message`, now and after every reconnection."""
        self.channels.add(channel)
        conn = self._conns["pubsub"]
        if conn is not None:
            conn.subscribe([channel]).addErrback(self._subscribe_failed, conn)

    def _message(self, channel, message):
        if self.on_message is not None:
            self.on_message(channel, message)


def dumps(value):
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
