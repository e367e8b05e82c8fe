"""``relayd entity ...`` and ``relayd rule ...``: the management API of a running relay from the
command line (docs/operations.rst).  Standard library only (urllib): no Twisted, no Autobahn.

    relayd entity list|show PATH|delete PATH
    relayd entity create|add PATH [--kind K] [--anonymous] [--max-listeners N] [--response-timeout S]
                                  [--max-message N] [--discovery private|public] [--display-name T]
                                  [--user-metadata T]
    relayd entity update PATH [the same options: only those given change]
    relayd rule list [--entity PATH]
    relayd rule show|delete NAME [--entity PATH]
    relayd rule create NAME --rights Listen,Send [--primary-key K] [--secondary-key K] [--entity PATH]
    relayd rule regenerate NAME primary|secondary [--new-key K] [--entity PATH]

Each takes the relay and a Manage credential as the other commands do (-x, or --url --rule
--key).  The relay's answer is printed as JSON; a refusal prints the status and the relay's
message on stderr and exits 1 (2 for a mistake on the command line).
"""

import json
import sys
import time
from urllib.parse import quote

from relayd.wire import sas
from relayd.wire.names import validate_entity_path

ENTITY_OPTIONS = (  # (option, API field, argparse keywords)
    ("--kind", "kind", {"choices": ["hybrid_connection", "oneway", "multicast"]}),
    ("--max-listeners", "max_listeners", {"type": int}),
    ("--response-timeout", "response_timeout", {"type": float}),
    ("--max-message", "max_message", {"type": int, "help": "largest event (oneway/multicast)"}),
    ("--discovery", "discovery", {"choices": ["private", "public"]}),
    ("--display-name", "display_name", {}),
    ("--user-metadata", "user_metadata", {}),
)
# What GET returns that PUT takes again (relayd entity update keeps the rest as it is).
UPDATABLE = ("requires_client_authorization", "max_listeners", "response_timeout", "kind", "max_message",
             "discovery", "display_name", "user_metadata")
EVENT_KINDS = ("oneway", "multicast")


class CommandError(ValueError):
    """A mistake on the command line (exit status 2); the message says what to fix."""


class Refused(Exception):
    """The relay answered with an error status, or could not be reached (exit status 1)."""


def add_parsers(sub, add_connection_args, add_verbosity_args):
    p = sub.add_parser("entity", help="manage the entities of a running relay")
    esub = p.add_subparsers(dest="action", required=True)
    for name in ("list", "show", "create", "add", "update", "delete"):
        ep = esub.add_parser(name, help="the same as create" if name == "add" else None)
        if name != "list":
            ep.add_argument("path")
        if name in ("create", "add", "update"):
            ep.add_argument("--anonymous", action="store_true", default=None,
                            help="senders need no token (requires_client_authorization = false)")
            ep.add_argument("--authorized", dest="anonymous", action="store_false",
                            help="senders need a token (the default)")
            for option, dest, keywords in ENTITY_OPTIONS:
                ep.add_argument(option, dest=dest, **keywords)
        add_connection_args(ep)
        add_verbosity_args(ep)
        ep.set_defaults(func=entity_main)

    p = sub.add_parser("rule", help="manage the SAS rules of a running relay")
    rsub = p.add_subparsers(dest="action", required=True)
    for name in ("list", "show", "create", "regenerate", "delete"):
        rp = rsub.add_parser(name)
        if name != "list":
            rp.add_argument("name", help="the rule's name")
        if name == "create":
            rp.add_argument("--rights", required=True, help="comma-separated: Listen, Send, Manage")
            rp.add_argument("--primary-key", help="default: a new random key")
            rp.add_argument("--secondary-key", help="default: a new random key")
        if name == "regenerate":
            rp.add_argument("key_type", choices=["primary", "secondary"], help="which key to replace")
            rp.add_argument("--new-key", help="default: a new random key")
        rp.add_argument("--entity", metavar="PATH", help="a rule of this entity (default: of the namespace)")
        add_connection_args(rp)
        add_verbosity_args(rp)
        rp.set_defaults(func=rule_main)


def _check_path(path):
    problem = validate_entity_path(path)
    if problem:
        raise CommandError("entity path %r %s" % (path, problem))


class Api:
    """Calls to ``/$relayd/...`` of the relay in ``args``, signed with a Manage token."""

    def __init__(self, args):
        from relayd.client.connection_string import ConnectionInfo

        info = ConnectionInfo.from_args(args, require_key=False)
        self.base = info.http_base()
        self.args = args
        if info.key is not None:
            self.token = sas.make_token(self.base + "/", info.rule, info.key, int(time.time()) + 300)
        elif info.token:
            self.token = info.token
        else:
            raise CommandError("a key (or a SharedAccessSignature) with the Manage right is needed: pass -x with "
                               "SharedAccessKeyName and SharedAccessKey, or --rule NAME --key KEY")

    def __call__(self, method, path, body=None):
        import urllib.error
        import urllib.request

        url = self.base + "/$relayd/" + quote(path, safe="/-._~$")
        if getattr(self.args, "verbosity", 0) > 0:
            print("relayd %s %s: %s %s" % (self.args.command, self.args.action, method, url), file=sys.stderr)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": self.token}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read().decode(errors="replace")
            try:
                message = json.loads(raw)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = raw.strip() or e.reason
            raise Refused("%d %s" % (e.code, message)) from None
        except (OSError, ValueError) as e:
            raise Refused("cannot reach %s: %s" % (self.base, getattr(e, "reason", None) or e)) from None


def _run(args, work):
    try:
        result = work(Api(args))
    except Refused as e:
        print("relayd %s %s: %s" % (args.command, args.action, e), file=sys.stderr, flush=True)
        return 1
    print(json.dumps(result, indent=1))
    return 0


def _entity_fields(args):
    body = {dest: getattr(args, dest) for _, dest, _ in ENTITY_OPTIONS if getattr(args, dest) is not None}
    if args.anonymous is not None:
        body["requires_client_authorization"] = not args.anonymous
    return body


def entity_main(args):
    action = args.action
    if action != "list":
        _check_path(args.path)
    where = "entities" if action == "list" else "entities/" + args.path

    def work(api):
        if action in ("list", "show"):
            return api("GET", where)
        if action == "delete":
            return api("DELETE", where)
        body = _entity_fields(args)
        if action == "update":
            current = api("GET", where)
            if current.get("static"):
                raise Refused("entity %r is declared in the config file; change it there" % args.path)
            merged = {k: current[k] for k in UPDATABLE if k in current}
            merged.update(body)
            if merged.get("kind") not in EVENT_KINDS:
                merged.pop("max_message", None)
            body = merged
        return api("PUT", where, body)

    return _run(args, work)


def rule_main(args):
    if args.entity is not None:
        _check_path(args.entity)
    base = "rules" if args.entity is None else "entities/%s/$rules" % args.entity
    where = base if args.action == "list" else "%s/%s" % (base, args.name)

    def work(api):
        if args.action in ("list", "show"):
            return api("GET", where)
        if args.action == "delete":
            return api("DELETE", where)
        if args.action == "regenerate":
            body = {"key_type": args.key_type}
            if args.new_key:
                body["key"] = args.new_key
            return api("POST", where + "/regenerate", body)
        body = {"rights": [r.strip() for r in args.rights.split(",") if r.strip()]}
        for option in ("primary_key", "secondary_key"):
            if getattr(args, option):
                body[option] = getattr(args, option)
        return api("PUT", where, body)

    return _run(args, work)
