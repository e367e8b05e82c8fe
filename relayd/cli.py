"""The ``relayd`` command.

    relayd serve [twistd relayd options]       run the relay in the foreground (= twistd -n relayd)
    relayd token --rule NAME --key KEY --uri URI [--ttl SECONDS]
    relayd key show [--data-dir DIR]           the namespace rules and keys of the embedded store
    relayd key new                             a fresh random key for a config file
    relayd listen PATH  [-x CONN | --url URL --rule R --key K]   stdin/stdout <- relay listener
    relayd connect PATH [-x CONN | --url URL --rule R --key K]   stdin/stdout -> relay sender
    relayd entity list|add|delete ...          manage entities of a running relay
    relayd bridge [-x CONN] [-R ...] [-L ...] [-H ...]   publish / reach services (see relayd.client.bridge)
"""

import argparse
import json
import os
import sys
import time

from relayd import auth, config


def _token(args):
    ttl = args.ttl
    if ttl <= 0:
        print("relayd token: --ttl must be a positive number of seconds", file=sys.stderr)
        return 2
    print(auth.make_token(args.uri, args.rule, args.key, int(time.time()) + ttl))
    return 0


def _key(args):
    if args.action == "new":
        print(auth.generate_key())
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
    for rule in rules:
        print("rule:   %s\nrights: %s\nkey:    %s" % (rule.name, ", ".join(sorted(rule.rights)), rule.key))
        print("connection string: Endpoint=sb://127.0.0.1:9090/;SharedAccessKeyName=%s;SharedAccessKey=%s"
              % (rule.name, rule.key))
    return 0


def _serve(rest):
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", "-n", "relayd"] + rest
    run()
    return 0


def _entity(args):
    from relayd.client.connection import ConnectionInfo
    import urllib.error
    import urllib.parse
    import urllib.request

    info = ConnectionInfo.from_args(args)
    base = info.http_base()
    if info.key is not None:
        token = auth.make_token(base + "/", info.rule, info.key, int(time.time()) + 300)
    elif info.token:
        token = info.token
    else:
        print("relayd entity: a key (or a SharedAccessSignature) with the Manage right is needed",
              file=sys.stderr)
        return 2
    if args.action == "add":
        problem = config.validate_entity_path(args.path)
        if problem:
            print("relayd entity add: entity path %r %s" % (args.path, problem), file=sys.stderr)
            return 2
    url = base + "/$relayd/entities" + ("/" + urllib.parse.quote(args.path, safe="/")
                                        if getattr(args, "path", None) else "")
    method = {"list": "GET", "add": "PUT", "delete": "DELETE", "show": "GET"}[args.action]
    data = None
    if args.action == "add":
        data = json.dumps({"requires_client_authorization": not args.anonymous,
                           "max_listeners": args.max_listeners}).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Authorization": token})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            print(resp.read().decode())
            return 0
    except urllib.error.HTTPError as e:
        print("relayd entity %s: %s %s" % (args.action, e.code, e.read().decode(errors="replace")),
              file=sys.stderr)
        return 1
    except OSError as e:
        print("relayd entity %s: cannot reach %s: %s" % (args.action, base, e), file=sys.stderr)
        return 1


def _add_connection_args(p):
    p.add_argument("-x", "--connection-string", help="Endpoint=sb://host:port/;SharedAccessKeyName=..;SharedAccessKey=..")
    p.add_argument("--url", help="relay base URL, e.g. ws://127.0.0.1:9090 (default from -x)")
    p.add_argument("--rule", help="SAS rule name")
    p.add_argument("--key", help="SAS key (or RELAYD_KEY in the environment)")


def build_parser():
    from relayd import __version__

    parser = argparse.ArgumentParser(prog="relayd", description="relayd: a self-hosted relay")
    parser.add_argument("--version", action="version", version="relayd %s" % __version__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("token", help="print a SAS token")
    p.add_argument("--rule", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--uri", required=True, help="entity URI, e.g. ws://127.0.0.1:9090/echo")
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    p.set_defaults(func=_token)

    p = sub.add_parser("key", help="show or make keys")
    p.add_argument("action", choices=["show", "new"])
    p.add_argument("--data-dir")
    p.set_defaults(func=_key)

    p = sub.add_parser("entity", help="manage entities of a running relay")
    esub = p.add_subparsers(dest="action", required=True)
    for name in ("list", "show", "add", "delete"):
        ep = esub.add_parser(name)
        if name != "list":
            ep.add_argument("path")
        if name == "add":
            ep.add_argument("--anonymous", action="store_true", help="senders need no token")
            ep.add_argument("--max-listeners", type=int, default=25)
        _add_connection_args(ep)
        ep.set_defaults(func=_entity)

    for name in ("listen", "connect"):
        p = sub.add_parser(name, help="pipe stdin/stdout over a hybrid connection (%s side)" % name)
        p.add_argument("path")
        _add_connection_args(p)
        p.set_defaults(func=lambda args, name=name: _pipe(name, args))

    sub.add_parser("serve", help="run the relay (same as twistd -n relayd ...)", add_help=False)
    sub.add_parser("bridge", help="publish local TCP/HTTP services or reach remote ones (relayd bridge -h)",
                   add_help=False)
    return parser


def _pipe(name, args):
    from relayd.client import netcat

    return netcat.main(name, args)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    if argv[:1] == ["bridge"]:
        from relayd.client import bridge

        return bridge.main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
