"""``relayd bridge``: publish local services through the relay and reach remote ones, like
Azure Relay Bridge (azbridge).

    relayd bridge -x CONNECTION_STRING [-R ENTITY:[HOST:]PORT] [-R ENTITY:/PATH/TO.SOCK]
                  [-R ENTITY:net.tcp://HOST:PORT/PATH] [-L [BIND:]PORT:ENTITY] [-L /PATH/TO.SOCK:ENTITY]
                  [-H ENTITY:http://HOST:PORT[/BASE]] [--config FILE] [--backlog N]

HOST and BIND may be IPv6 addresses in brackets (``-L [::1]:8080:echo``, ``-R echo:[::1]:22``);
a target or bind address starting with ``/`` is a Unix socket path.

* ``-R`` (remote forwarder, the service side): listens on ENTITY; each relayed connection is
  connected to the local TCP service.  With a ``net.tcp://`` target the agent rewrites the
  [MC-NMF] Via record of the incoming preamble to that URI (so a WCF service behind it sees
  its own listen address) and passes everything else unchanged.
* ``-L`` (local forwarder, the client side): a local TCP port (or Unix socket) whose
  connections become relay sender connections to ENTITY.  Its listen backlog is ``--backlog``
  (default 1024, like the relay's ``limits.listen_backlog``).  A port or socket that cannot be
  bound ends the command at start (exit status 1, naming the address and the cause).
* ``-H`` (HTTP): serves relayed HTTP requests for ENTITY from a local HTTP service.

Several of each may be given; several agents with ``-R`` on one entity are balanced by the
relay.  Every connection is logged when it opens and closes, with byte counts.  Between
``-L``/TCP doors and ``-R`` the bytes travel as binary WebSocket messages; an empty binary
message is the half-close marker (see ``relayd.transports.nettcp.door``).
"""

import argparse
import sys
import tomllib
import uuid

from twisted.internet import defer, endpoints, error, protocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from zope.interface import implementer

from relayd.pipe import CLEAN_CLOSE_CODES, PauseReading, close_after_flush, no_delay, shutdown_write

log = Logger(namespace="relayd.bridge")

# The close reason when the local side reset the connection mid-stream.
LOCAL_RESET = "the local side reset the connection before the end of its stream"


class BridgeError(ValueError):
    pass


# -- option parsing ---------------------------------------------------------------------------

def _host_port(text, spec, option):
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` -> (host or "", port)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BridgeError("%s %r: expected [IPV6]:PORT" % (option, spec))
        port = rest[1:]
        _check_ip6(host, spec, option)
    else:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise BridgeError("%s %r: put an IPv6 address in brackets, e.g. [::1]:%s" % (option, spec, port))
    try:
        port = int(port)
    except ValueError:
        raise BridgeError("%s %r: %r is not a port number" % (option, spec, port))
    return host, port


def _check_ip6(host, spec, option):
    import ipaddress

    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise BridgeError("%s %r: %r is not an IPv6 address" % (option, spec, host))


def parse_remote(spec):
    """``ENTITY:[HOST:]PORT``, ``ENTITY:[V6]:PORT``, ``ENTITY:/PATH/TO.SOCK`` or
    ``ENTITY:net.tcp://HOST:PORT/PATH`` -> (entity, host, port, via); for a Unix socket host
    is the socket path and port is None."""
    entity, sep, target = spec.partition(":")
    if not sep or not entity or not target:
        raise BridgeError("-R %r: expected ENTITY:[HOST:]PORT, ENTITY:/PATH/TO.SOCK or "
                          "ENTITY:net.tcp://HOST:PORT/PATH" % spec)
    if target.startswith("net.tcp://"):
        from urllib.parse import urlsplit

        parts = urlsplit(target)
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or not port:
            raise BridgeError("-R %r: the net.tcp URI needs a host and a port" % spec)
        return entity, parts.hostname, port, target
    if target.startswith("/"):
        return entity, target, None, None
    host, port = _host_port(target, spec, "-R")
    if not 0 < port < 65536:
        raise BridgeError("-R %r: port %d is out of range" % (spec, port))
    return entity, host or "127.0.0.1", port, None


def parse_local(spec):
    """``[BIND:]PORT:ENTITY``, ``[V6]:PORT:ENTITY`` or ``/PATH/TO.SOCK:ENTITY`` -> (bind, port,
    entity); for a Unix socket bind is the socket path and port is None."""
    head, sep, entity = spec.rpartition(":")
    if not sep or not entity or not head:
        raise BridgeError("-L %r: expected [BIND:]PORT:ENTITY or /PATH/TO.SOCK:ENTITY" % spec)
    if head.startswith("/"):
        return head, None, entity
    bind, port = _host_port(head, spec, "-L")
    if not 0 <= port < 65536:
        raise BridgeError("-L %r: port %d is out of range" % (spec, port))
    return bind or "127.0.0.1", port, entity


def parse_http(spec):
    """``ENTITY:http://HOST:PORT[/BASE]`` -> (entity, url)."""
    entity, sep, url = spec.partition(":")
    if not sep or not url.startswith(("http://", "https://")):
        raise BridgeError("-H %r: expected ENTITY:http://HOST:PORT[/BASE]" % spec)
    return entity, url


# -- splicing a relayed connection with a local TCP connection ---------------------------------

@implementer(IHalfCloseableProtocol)
class LocalSide(protocol.Protocol):
    """The local TCP end of one bridged connection."""

    def __init__(self, tunnel):
        self.tunnel = tunnel

    def connectionMade(self):
        self.tunnel.local_made(self)

    def dataReceived(self, data):
        self.tunnel.to_relay(data)

    def readConnectionLost(self):
        self.tunnel.local_eof()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.tunnel.local_lost(reason)


class Tunnel:
    """One bridged connection: a RelayedConnection <-> a local TCP connection."""

    def __init__(self, label, conn, via=None):
        self.id = uuid.uuid4().hex[:8]
        self.label = label
        self.conn = conn
        self.local = None
        self.via = via  # rewrite the net.tcp preamble's Via to this URI
        self.parser = None
        self.held = []
        self.bytes_in = 0  # relay -> local
        self.bytes_out = 0  # local -> relay
        self.done = False
        self.read_eof = False  # the local side sent EOF
        self.write_shut = False  # we shut down writing to the local side
        if via is not None:
            from relayd.wire import nmf

            # the relay already enforced its own Via limit
            self.parser = nmf.PreambleParser(max_via=65536, max_preamble=65536 + 1024)
        conn.on_message = self.from_relay
        conn.on_close = self.relay_closed
        conn.pauseProducing()  # until the local side is connected

    # relay -> local
    def from_relay(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        if self.local is None:
            self.held.append(data)
            return
        if not data:
            self.write_shut = True
            if self.read_eof:
                close_after_flush(self.local.transport)
            else:
                shutdown_write(self.local.transport)
            return
        if self.parser is not None:
            from relayd.wire import nmf

            try:
                preamble = self.parser.feed(data)
            except nmf.NmfFault as e:
                log.info("bridge {label} [{id}]: bad net.tcp preamble: {err}", label=self.label, id=self.id,
                         err=e.detail)
                self.conn.send(nmf.fault(e.name))
                self.conn.close(1000)
                return
            if preamble is None:
                return
            self.parser = None
            data = nmf.rewrite_via(preamble.raw, self.via) + preamble.rest
        self.bytes_in += len(data)
        self.local.transport.write(data)

    # local -> relay
    def to_relay(self, data):
        self.bytes_out += len(data)
        if self.conn.is_connected:
            self.conn.sendMessage(data, isBinary=True)

    def local_made(self, local):
        self.local = local
        no_delay(local.transport)
        local.transport.registerProducer(PauseReading(self.conn.transport), True)
        self.conn.transport.registerProducer(PauseReading(local.transport), True)
        held, self.held = self.held, []
        for data in held:
            self.from_relay(data)
        self.conn.resumeProducing()
        log.info("bridge {label} [{id}]: open", label=self.label, id=self.id)

    def local_eof(self):
        self.read_eof = True
        if self.conn.is_connected:
            self.conn.sendMessage(b"", isBinary=True)
        if self.write_shut and self.local is not None:
            close_after_flush(self.local.transport)

    def local_failed(self, failure):
        log.info("bridge {label} [{id}]: cannot reach the local service: {err}", label=self.label, id=self.id,
                 err=failure.getErrorMessage())
        self.done = True
        if self.conn.is_connected:
            self.conn.close(1011, "the bridge cannot reach its local service")

    def local_lost(self, reason):
        # A local side that ends without its EOF (reset, aborted) truncated its stream: say so
        # with 1011, so that the relay resets the far end's TCP connection instead of a FIN.
        clean = self.read_eof or reason is None or reason.check(error.ConnectionDone) is not None
        if not self.done:
            self.done = True
            log.info("bridge {label} [{id}]: closed by the local side{how} ({i} bytes in, {o} bytes out)",
                     label=self.label, id=self.id, how="" if clean else " without EOF (reset)",
                     i=self.bytes_in, o=self.bytes_out)
        if self.conn.is_connected:
            if clean:
                self.conn.close(1000)
            else:
                self.conn.close(1011, LOCAL_RESET)

    def relay_closed(self, code, reason):
        if not self.done:
            self.done = True
            log.info("bridge {label} [{id}]: closed by the relay side {code} {reason} ({i} bytes in, {o} bytes out)",
                     label=self.label, id=self.id, code=code, reason=reason or "", i=self.bytes_in,
                     o=self.bytes_out)
        if self.local is None:
            return
        if code in CLEAN_CLOSE_CODES or self.write_shut:
            close_after_flush(self.local.transport)
        else:
            # The far end's stream broke before its end: a reset, so the local peer never takes
            # a truncated stream for a complete one.
            if getattr(self.local.transport, "producer", None) is not None:
                self.local.transport.unregisterProducer()
            self.local.transport.abortConnection()


class _LocalFactory(protocol.Factory):
    def __init__(self, tunnel):
        self.tunnel = tunnel

    def buildProtocol(self, addr):
        return LocalSide(self.tunnel)


# -- forwarders ---------------------------------------------------------------------------------

LOCAL_SOCKET_MODE = 0o660  # -L Unix sockets: the owner and its group may connect


def _address(host, port):
    """host:port, [v6]:port, or a Unix socket path (port None) for messages."""
    if port is None:
        return host
    return "%s:%d" % ("[%s]" % host if ":" in host else host, port)


class RemoteForwarder:
    """``-R``: listen on an entity, connect each relayed connection to a local TCP service."""

    def __init__(self, reactor, info, entity, host, port, via=None):
        from relayd.client.listener import HybridListener

        self.reactor = reactor
        self.label = "-R %s->%s" % (entity, _address(host, port))
        self.host, self.port, self.via = host, port, via
        self.listener = HybridListener(reactor, info, entity, self.on_accept, on_status=self.on_status)

    def on_status(self, status, detail):
        log.info("bridge {label}: {status} {detail}", label=self.label, status=status, detail=detail)

    def on_accept(self, request):
        d = request.accept()

        def opened(conn):
            tunnel = Tunnel(self.label, conn, self.via)
            if self.port is None:
                endpoint = endpoints.UNIXClientEndpoint(self.reactor, self.host, timeout=30)
            elif ":" in self.host:
                endpoint = endpoints.TCP6ClientEndpoint(self.reactor, self.host, self.port, timeout=30)
            else:
                endpoint = endpoints.TCP4ClientEndpoint(self.reactor, self.host, self.port, timeout=30)
            endpoint.connect(_LocalFactory(tunnel)).addErrback(tunnel.local_failed)

        d.addCallbacks(opened, lambda f: log.info("bridge {label}: accept failed: {err}", label=self.label,
                                                  err=f.getErrorMessage()))
        return None

    def start(self):
        return self.listener.start()

    def stop(self):
        return self.listener.stop()


@implementer(IHalfCloseableProtocol)
class _LocalClient(protocol.Protocol):
    """``-L``: one local client; becomes a relay sender connection."""

    def __init__(self, forwarder):
        self.forwarder = forwarder
        self.tunnel = None
        self.early = []
        self.eof = False

    def connectionMade(self):
        from relayd.client.sender import connect

        self.transport.pauseProducing()
        f = self.forwarder
        d = connect(f.reactor, f.info, f.entity, headers={"X-Relayd-Transport": "tcp"})
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, conn):
        if self.transport is None or not self.transport.connected:
            conn.close(1000)
            return
        tunnel = Tunnel(self.forwarder.label, conn)
        self.tunnel = tunnel
        tunnel.local_made(self)
        self.transport.resumeProducing()

    def _failed(self, failure):
        log.info("bridge {label}: the relay refused the connection: {err}", label=self.forwarder.label,
                 err=failure.getErrorMessage())
        if self.transport is not None:
            self.transport.loseConnection()

    def dataReceived(self, data):
        if self.tunnel is not None:
            self.tunnel.to_relay(data)

    def readConnectionLost(self):
        if self.tunnel is not None:
            self.tunnel.local_eof()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        if self.tunnel is not None:
            self.tunnel.local_lost(reason)


class LocalForwarder(protocol.Factory):
    """``-L``: a local TCP port whose connections become relay sender connections."""

    def __init__(self, reactor, info, bind, port, entity, backlog=None):
        from relayd.config import DEFAULT_LISTEN_BACKLOG

        self.reactor = reactor
        self.info = info
        self.bind, self.port, self.entity = bind, port, entity  # port None: bind is a Unix socket path
        self.backlog = backlog or DEFAULT_LISTEN_BACKLOG
        self.label = "-L %s->%s" % (_address(bind, port), entity)
        self.listening = None

    def buildProtocol(self, addr):
        return _LocalClient(self)

    def start(self):
        if self.port is None:
            # wantPID: a lock file next to the socket, so a socket left by a dead agent is replaced
            endpoint = endpoints.UNIXServerEndpoint(self.reactor, self.bind, backlog=self.backlog,
                                                    mode=LOCAL_SOCKET_MODE, wantPID=True)
        elif ":" in self.bind:
            endpoint = endpoints.TCP6ServerEndpoint(self.reactor, self.port, backlog=self.backlog,
                                                    interface=self.bind)
        else:
            endpoint = endpoints.TCP4ServerEndpoint(self.reactor, self.port, backlog=self.backlog,
                                                    interface=self.bind)

        def listening(port):
            self.listening = port
            host = port.getHost()
            log.info("bridge {label}: listening on {address}", label=self.label,
                     address=_address(self.bind, getattr(host, "port", None)))
            return self

        return endpoint.listen(self).addCallback(listening)

    def stop(self):
        if self.listening is not None:
            return defer.maybeDeferred(self.listening.stopListening)
        return defer.succeed(None)


# -- the command --------------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(prog="relayd bridge", description=__doc__.split("\n\n")[0])
    p.add_argument("-x", "--connection-string", help="Endpoint=sb://host:port/;SharedAccessKeyName=..;SharedAccessKey=..")
    p.add_argument("--url", help="relay base URL (overrides the connection string's endpoint)")
    p.add_argument("--rule", help="SAS rule name")
    p.add_argument("--key", help="SAS key (or RELAYD_KEY)")
    p.add_argument("-R", dest="remote", action="append", default=[], metavar="ENTITY:[HOST:]PORT",
                   help="publish a local service: ENTITY:[HOST:]PORT, ENTITY:[IPV6]:PORT, ENTITY:/PATH/TO.SOCK "
                        "or ENTITY:net.tcp://HOST:PORT/PATH")
    p.add_argument("-L", dest="local", action="append", default=[], metavar="[BIND:]PORT:ENTITY",
                   help="reach ENTITY from a local port: [BIND:]PORT:ENTITY, [IPV6]:PORT:ENTITY or "
                        "/PATH/TO.SOCK:ENTITY")
    p.add_argument("-H", dest="http", action="append", default=[], metavar="ENTITY:http://HOST:PORT")
    p.add_argument("--config", help="TOML file with connection_string, remote, local, http lists")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    p.add_argument("--backlog", type=int, default=None,
                   help="listen backlog of the -L sockets (default %d)" % _default_backlog())
    return p


def _default_backlog():
    from relayd.config import DEFAULT_LISTEN_BACKLOG

    return DEFAULT_LISTEN_BACKLOG


def load_config(args):
    if not args.config:
        return
    try:
        with open(args.config, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BridgeError("%s: %s" % (args.config, e))
    unknown = set(data) - {"connection_string", "remote", "local", "http"}
    if unknown:
        raise BridgeError("%s: unknown keys %s; expected connection_string, remote, local, http"
                          % (args.config, sorted(unknown)))
    args.connection_string = args.connection_string or data.get("connection_string")
    for key in ("remote", "local", "http"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BridgeError("%s: %s must be a list of strings" % (args.config, key))
        getattr(args, key).extend(value)


def main(argv):
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from relayd.client.connection import ConnectionInfo

    args = build_parser().parse_args(argv)
    try:
        if args.verbose and args.quiet:
            raise BridgeError("-q and -v contradict each other; give one of them")
        load_config(args)
        if not (args.remote or args.local or args.http):
            raise BridgeError("nothing to do: give at least one -R, -L or -H")
        info = ConnectionInfo.from_args(args)
        forwarders = []
        for spec in args.remote:
            entity, host, port, via = parse_remote(spec)
            forwarders.append(RemoteForwarder(reactor, info, entity, host, port, via))
        if args.backlog is not None and not 1 <= args.backlog <= 65535:
            raise BridgeError("--backlog must be a number from 1 to 65535, got %d" % args.backlog)
        for spec in args.local:
            bind, port, entity = parse_local(spec)
            forwarders.append(LocalForwarder(reactor, info, bind, port, entity, args.backlog))
        for spec in args.http:
            from relayd.client.http import HttpForwarder

            entity, url = parse_http(spec)
            forwarders.append(HttpForwarder(reactor, info, entity, url))
    except (BridgeError, ValueError) as e:
        print("relayd bridge: %s" % e, file=sys.stderr)
        return 2
    sys.stdout.reconfigure(line_buffering=True)
    from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate

    level = LogLevel.debug if args.verbose else LogLevel.warn if args.quiet else LogLevel.info
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(
        textFileLogObserver(sys.stdout), [LogLevelFilterPredicate(defaultLogLevel=level)])])
    outcome = {"code": 0}

    def cannot_listen(failure, f):
        # -L: a port or socket that cannot be bound ends the command (at start: listening is
        # synchronous; should it ever fail later, the reactor is stopped with status 1)
        print("relayd bridge: %s: cannot listen on %s: %s"
              % (f.label, _address(f.bind, f.port), failure.getErrorMessage()), file=sys.stderr, flush=True)
        outcome["code"] = 1
        if reactor.running:
            reactor.stop()

    for f in forwarders:
        d = f.start()
        if isinstance(f, LocalForwarder):
            d.addErrback(cannot_listen, f)
        else:
            d.addErrback(lambda failure, f=f: log.failure("bridge: cannot start {f}", failure, f=f.label))
        if outcome["code"]:
            for started in forwarders:
                started.stop()
            return outcome["code"]

    def shutdown():
        return defer.gatherResults([defer.maybeDeferred(f.stop) for f in forwarders], consumeErrors=True)

    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    reactor.run()
    return outcome["code"]
