"""The ``relayd`` command.

    relayd [-v|-q] COMMAND ...
    relayd serve [twistd options] [twistd relayd options]   run the relay in the foreground
                                               (= twistd -n --pidfile= relayd ...)
    relayd serve --workers N|auto ...          N relay processes sharing the port (relayd.supervisor)
    relayd token [PATH] [-x CONN | --url URL --rule R --key K] [--uri URI] [--ttl SECONDS]
    relayd key show [--data-dir DIR]           the namespace rules and keys of the embedded store
    relayd key new                             a fresh random key for a config file
    relayd listen PATH  [-x CONN | --url URL --rule R --key K]   stdin/stdout <- relay listener
    relayd connect PATH [-x CONN | --url URL --rule R --key K]   stdin/stdout -> relay sender
    relayd publish PATH [DATA|-] [--raw] [-x CONN ...]   publish events (stdin: one per line)
    relayd subscribe PATH [--raw] [-x CONN ...]     print the events of an event entity
    relayd entity list|show|create|update|delete ...   manage entities of a running relay (add = create)
    relayd rule list|show|create|regenerate|delete ...  manage its SAS rules (relayd.cli_manage)
    relayd bridge [-x CONN] [-R ...] [-L ...] [-H ...]   publish / reach services (see relayd.client.bridge)

Wherever a key is taken, ``$RELAYD_KEY`` may hold it, and ``$RELAYD_CONNECTION_STRING`` may
stand in for ``-x``.  Mistakes are reported as one line on stderr with exit status 2 (1 when
the relay could not be reached or refused); ``-q`` keeps stderr to problems only, ``-v`` adds
what the command is doing.
"""

import argparse
import os
import sys
import time

from relayd import config

from relayd.wire import sas

EXIT_USAGE = 2

# twistd's own options that ``relayd serve`` passes on (before the plugin name); the rest are
# relayd's options.  -d is relayd's --data-dir, so twistd's --rundir is taken in its long form.
TWISTD_VALUE_OPTIONS = {"--pidfile", "--logfile", "-l", "--logger", "--reactor", "-r", "--umask", "--prefix",
                        "--uid", "-u", "--gid", "-g", "--chroot", "--rundir"}
TWISTD_FLAGS = {"--syslog", "--euid", "--no_save", "-o"}


class CommandError(ValueError):
    """A mistake on the command line; the message says what to fix."""


def _fail(message):
    raise CommandError(message)


def _say(args, message):
    """Informational output on stderr, silenced by -q."""
    if getattr(args, "verbosity", 0) >= 0:
        print(message, file=sys.stderr, flush=True)


def _verbose(args, message):
    if getattr(args, "verbosity", 0) > 0:
        print(message, file=sys.stderr, flush=True)


# -- token ------------------------------------------------------------------------------------

def _token(args):
    from relayd.client.connection_string import ENV_CONNECTION_STRING, ENV_KEY, ConnectionInfo

    ttl = args.ttl
    if ttl <= 0:
        _fail("--ttl must be a positive number of seconds")
    expiry = int(time.time()) + ttl
    if args.uri:
        if args.connection_string or args.url or os.environ.get(ENV_CONNECTION_STRING):
            info = ConnectionInfo.from_args(args)
            rule, key = info.rule, info.key
        else:
            rule, key = args.rule, args.key or os.environ.get(ENV_KEY)
        if not rule or not key:
            _fail("no SAS rule and key to sign with: pass --rule NAME and --key KEY (or $%s), "
                  "or -x CONNECTION_STRING" % ENV_KEY)
        print(sas.make_token(args.uri, rule, key, expiry))
        return 0
    if not (args.connection_string or args.url or os.environ.get(ENV_CONNECTION_STRING)):
        _fail("what is the token for? pass --uri URI, or PATH with -x CONNECTION_STRING "
              "(or --url URL --rule NAME --key KEY)")
    info = ConnectionInfo.from_args(args)
    path = info.resolve_path(args.path)
    _verbose(args, "relayd token: for %s, rule %s, valid %d s" % (info.audience(path), info.rule, ttl))
    print(info.token_for(path, ttl=ttl))
    return 0


# -- key ----------------------------------------------------------------------------------------

def endpoint_of(data_dir):
    """The connection-string endpoint the relay using ``data_dir`` listens on (it records it
    at start), or the default one."""
    try:
        with open(os.path.join(data_dir, config.ENDPOINT_FILE), encoding="utf-8") as f:
            recorded = f.read().strip()
    except OSError:
        recorded = ""
    return recorded or config.DEFAULT_ENDPOINT


def _key(args):
    if args.action == "new":
        print(sas.generate_key())
        return 0
    from relayd.namespace import SqliteStore

    data_dir = args.data_dir or config.default_data_dir()
    path = os.path.join(data_dir, "relayd.sqlite")
    if not os.path.exists(path):
        print("relayd key show: no relay state in %s (start the relay once with twistd -n relayd, "
              "or pass --data-dir)" % data_dir, file=sys.stderr)
        return 1
    store = SqliteStore(data_dir)
    rules = store.rules("")
    if not rules:
        print("relayd key show: %s has no namespace rules (they come from the config file)" % path,
              file=sys.stderr)
        return 1
    endpoint = endpoint_of(data_dir)
    for rule in rules:
        print("rule:   %s\nrights: %s\nkey:    %s" % (rule.name, ", ".join(sorted(rule.rights)), rule.key))
        print("connection string: Endpoint=%s;SharedAccessKeyName=%s;SharedAccessKey=%s"
              % (endpoint, rule.name, rule.key))
    return 0


# -- serve ----------------------------------------------------------------------------------------

def split_serve_args(rest):
    """``relayd serve`` arguments -> (twistd options, relayd options)."""
    twistd, relayd = [], []
    items = iter(rest)
    for item in items:
        name = item.split("=", 1)[0] if item.startswith("--") else item
        if name in TWISTD_VALUE_OPTIONS:
            if "=" in item and item.startswith("--"):
                twistd.append(item)
            else:
                value = next(items, None)
                if value is None:
                    _fail("serve: %s needs a value" % item)
                twistd += [item, value]
        elif item in TWISTD_FLAGS:
            twistd.append(item)
        else:
            relayd.append(item)
    if not any(t.split("=", 1)[0] == "--pidfile" for t in twistd):
        twistd.append("--pidfile=")  # no twistd.pid in the current directory unless asked for
    return twistd, relayd


def _serve(rest):
    from relayd import workers

    count, rest = workers.take_count(rest)
    twistd, relayd = split_serve_args(rest)
    if count is not None:  # N node processes under a supervisor (relayd.supervisor)
        from relayd import supervisor

        return supervisor.main(count, twistd, relayd)
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", "-n", *twistd, "relayd", *relayd]
    try:
        run()
    except Exception as e:
        # imported here, not before run(): a mistake in the options or the config file is
        # reported before the relay's parts are imported (the relay raised it if it is one)
        from relayd.relay_service import StartupError

        if not isinstance(e, StartupError):
            raise
        print("relayd: %s" % e, file=sys.stderr, flush=True)
        return 1
    return 0


# -- the parser ----------------------------------------------------------------------------------

def _add_connection_args(p):
    p.add_argument("-x", "--connection-string",
                   help="Endpoint=sb://host:port/;SharedAccessKeyName=..;SharedAccessKey=.. "
                        "(or $RELAYD_CONNECTION_STRING)")
    p.add_argument("--url", action="append",
                   help="relay base URL, e.g. ws://127.0.0.1:9090 (default from -x); repeat it for several "
                        "endpoints a listener fails over among (the others use the first)")
    p.add_argument("--rule", help="SAS rule name")
    p.add_argument("--key", help="SAS key (or $RELAYD_KEY)")


def _add_verbosity_args(p, top=False):
    default = 0 if top else argparse.SUPPRESS
    p.add_argument("-v", "--verbose", dest="verbose", action="store_true", default=default,
                   help="say more about what the command does")
    p.add_argument("-q", "--quiet", dest="quiet", action="store_true", default=default,
                   help="report problems only")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in relayd's style (exit status 2)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        print("%s: %s" % (self.prog, message), file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser():
    from relayd import __version__

    parser = _Parser(prog="relayd", description="relayd: a self-hosted relay")
    parser.add_argument("--version", action="version", version="relayd %s" % __version__)
    _add_verbosity_args(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("token", help="print a SAS token",
                       description="Print a SAS token: for PATH on the relay given by -x (or --url, "
                                   "--rule and --key), or for --uri.")
    p.add_argument("path", nargs="?", help="entity path (default: EntityPath= of -x)")
    _add_connection_args(p)
    p.add_argument("--uri", help="sign for this URI instead, e.g. sb://127.0.0.1:9090/echo")
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    _add_verbosity_args(p)
    p.set_defaults(func=_token)

    p = sub.add_parser("key", help="show or make keys")
    p.add_argument("action", choices=["show", "new"])
    p.add_argument("--data-dir")
    _add_verbosity_args(p)
    p.set_defaults(func=_key)

    from relayd import cli_manage

    cli_manage.add_parsers(sub, _add_connection_args, _add_verbosity_args)

    for name in ("listen", "connect"):
        p = sub.add_parser(name, help="pipe stdin/stdout over a hybrid connection (%s side)" % name)
        p.add_argument("path")
        _add_connection_args(p)
        _add_verbosity_args(p)
        p.set_defaults(func=lambda args, name=name: _pipe(name, args))

    from relayd import cli_events

    cli_events.add_parsers(sub, _add_connection_args, _add_verbosity_args)

    sub.add_parser("serve", help="run the relay (twistd -n --pidfile= relayd ...; takes twistd's "
                                 "--pidfile, --logfile, --reactor, --umask, --uid, --gid ...)", add_help=False)
    sub.add_parser("bridge", help="publish local TCP/HTTP services or reach remote ones (relayd bridge -h)",
                   add_help=False)
    return parser


def _pipe(name, args):
    from relayd.client import netcat

    return netcat.main(name, args)


def _verbosity(args):
    if args.verbose and args.quiet:
        _fail("-q and -v contradict each other; give one of them")
    return 1 if args.verbose else -1 if args.quiet else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    command = "relayd"
    try:
        # global -v/-q before serve/bridge (which parse their own arguments)
        flags = []
        while argv and argv[0] in ("-v", "--verbose", "-q", "--quiet"):
            flags.append(argv.pop(0))
        if argv[:1] == ["serve"]:
            command = "relayd serve"
            if flags:
                _fail("-v and -q are options of the client commands; the relay logs at info level "
                      "(twistd's --logfile and --logger say where to)")
            return _serve(argv[1:])
        if argv[:1] == ["bridge"]:
            from relayd.client.bridge.cli import main as bridge

            return bridge(flags + argv[1:])
        args = build_parser().parse_args(flags + argv)
        command = "relayd %s" % " ".join(
            part for part in (args.command, getattr(args, "action", None) if args.command in ("entity", "rule") else None)
            if part)
        args.verbosity = _verbosity(args)
        return args.func(args)
    except ValueError as e:  # CommandError, and the connection-string / URI / token checks
        print("%s: %s" % (command, e), file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
