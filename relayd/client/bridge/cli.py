"""``relayd bridge``: publish local services through the relay and reach remote ones, like
Azure Relay Bridge (azbridge).

(This module is the command: options, ``--config``, starting and stopping the forwarders; see
:mod:`relayd.client.bridge` for the others.)

    relayd bridge -x CONNECTION_STRING [-R ENTITY:[HOST:]PORT] [-R ENTITY:/PATH/TO.SOCK]
                  [-R ENTITY:net.tcp://HOST:PORT/PATH] [-L [BIND:]PORT:ENTITY] [-L /PATH/TO.SOCK:ENTITY]
                  [-H ENTITY:http://HOST:PORT[/BASE]] [--config FILE] [--backlog N]
                  [--event-queue N] [--event-queue-bytes BYTES] [--event-deadline SECONDS]

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
* ``-H`` (HTTP): serves relayed HTTP requests for ENTITY from a local HTTP service.  Events
  (requests marked ``X-Relayd-Event``) go to it one at a time per entity, in order: at most
  ``--event-queue`` events (default 1000) and ``--event-queue-bytes`` of bodies (default
  16 MiB) wait, one more is dropped and logged; the next goes when the service has answered
  or after ``--event-deadline`` seconds (default 60) (:mod:`relayd.client.event_order`).

Several of each may be given; several agents with ``-R`` on one entity are balanced by the
relay.  Every connection is logged when it opens and closes, with byte counts.  Between
``-L``/TCP doors and ``-R`` the bytes travel as binary WebSocket messages; an empty binary
message is the half-close marker (see :mod:`relayd.client.bridge.tunnel`).
"""

import argparse
import sys
import tomllib

from twisted.internet import defer

from relayd.client.bridge.forwarder import address, log
from relayd.client.bridge.tcp_local import LocalForwarder
from relayd.client.bridge.tcp_remote import RemoteForwarder
from relayd.client.event_order import (
    EVENT_DEADLINE, MAX_QUEUED_EVENT_BYTES, MAX_QUEUED_EVENTS, event_settings)
from relayd.endpoint_strings import DEFAULT_LISTEN_BACKLOG

# The keys of a --config file: the connection string and the lists of -R, -L and -H specs.
LIST_KEYS = ("remote", "local", "http")
CONFIG_KEYS = ("connection_string",) + LIST_KEYS


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


# -- the command --------------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(prog="relayd bridge", description=__doc__.split("\n\n")[0])
    p.add_argument("-x", "--connection-string", help="Endpoint=sb://host:port/;SharedAccessKeyName=..;SharedAccessKey=..")
    p.add_argument("--url", action="append",
                   help="relay base URL (overrides the connection string's endpoint); repeat it for several "
                        "endpoints: -R and -H fail over among them, -L uses the first")
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
                   help="listen backlog of the -L sockets (default %d)" % DEFAULT_LISTEN_BACKLOG)
    p.add_argument("--event-queue", dest="max_events", type=int, default=MAX_QUEUED_EVENTS, metavar="N",
                   help="-H: events that may wait for the local service, per entity (default %d); one "
                        "more is dropped" % MAX_QUEUED_EVENTS)
    p.add_argument("--event-queue-bytes", dest="max_bytes", type=int, default=MAX_QUEUED_EVENT_BYTES,
                   metavar="BYTES", help="-H: bytes of event bodies that may wait, per entity (default %d)"
                                         % MAX_QUEUED_EVENT_BYTES)
    p.add_argument("--event-deadline", dest="deadline", type=float, default=EVENT_DEADLINE, metavar="SECONDS",
                   help="-H: seconds the local service may take to answer an event before the next one "
                        "goes (default %g)" % EVENT_DEADLINE)
    return p


def load_config(args):
    if not args.config:
        return
    try:
        with open(args.config, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BridgeError("%s: %s" % (args.config, e))
    unknown = set(data) - set(CONFIG_KEYS)
    if unknown:
        raise BridgeError("%s: unknown keys %s; expected %s"
                          % (args.config, sorted(unknown), ", ".join(CONFIG_KEYS)))
    args.connection_string = args.connection_string or data.get("connection_string")
    for key in LIST_KEYS:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BridgeError("%s: %s must be a list of strings" % (args.config, key))
        getattr(args, key).extend(value)


def main(argv):
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from relayd import logs
    from relayd.client.connection_string import ConnectionInfo

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
        events = event_settings({name: getattr(args, name) for name in ("max_events", "max_bytes", "deadline")})
        for spec in args.http:
            from relayd.client.http import HttpForwarder

            entity, url = parse_http(spec)
            forwarders.append(HttpForwarder(reactor, info, entity, url, events))
    except (BridgeError, ValueError) as e:
        print("relayd bridge: %s" % e, file=sys.stderr)
        return 2
    sys.stdout.reconfigure(line_buffering=True)
    level = logs.level_for(args.verbose, args.quiet)
    globalLogBeginner.beginLoggingTo([logs.make_observer(sys.stdout, level)])  # without factory noise
    outcome = {"code": 0}

    def cannot_listen(failure, f):
        # -L: a port or socket that cannot be bound ends the command (at start: listening is
        # synchronous; should it ever fail later, the reactor is stopped with status 1)
        print("relayd bridge: %s: cannot listen on %s: %s"
              % (f.label, address(f.bind, f.port), failure.getErrorMessage()), file=sys.stderr, flush=True)
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
