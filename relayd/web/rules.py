"""SAS rules at run time, under the management API (docs/operations.rst "Keys and rules at run
time").  Every call needs a Manage token for the namespace, as the rest of ``/$relayd/``.

Namespace rules::

    GET    /$relayd/rules                         list (with keys)
    GET    /$relayd/rules/{name}                  one rule (with keys)
    PUT    /$relayd/rules/{name}                  create: {"rights": ["Listen", "Send", "Manage"],
                                                  "primary_key": optional, "secondary_key": optional}
                                                  (keys generated unless given); 201, 409 if it exists
    POST   /$relayd/rules/{name}/regenerate       {"key_type": "primary" | "secondary", "key": optional}
    DELETE /$relayd/rules/{name}

An entity's rules: the same under ``/$relayd/entities/{path}/$rules[/{name}[/regenerate]]``
(``$`` is never part of an entity path, so the ``$rules`` segment ends the path).

Changes apply at once: a token signed by a deleted rule, or with a regenerated key, is refused
from the next check on, and the listeners' control channels and senders it opened are closed
with :data:`relayd.access.REVOKED_CODE` (1008) and :data:`relayd.access.REVOKED_REASON`; tokens
signed with the rule's other key keep working.  Rules from the config file are static: changing
or deleting one is 409.  Answers come once the change is written to the store.  Keys are never
logged.
"""

import re

from twisted.logger import Logger

from relayd.namespace import NamespaceError
from relayd.web.replies import BadBody, json_error, json_reply, read_json, when_written
from relayd.wire import sas

RULES_SEGMENT = "$rules"
REGENERATE = "regenerate"
KEY_TYPES = ("primary", "secondary")
RULE_NAME = re.compile(r"[A-Za-z0-9._-]{1,256}\Z")  # as Azure's authorization rule names
MIN_KEY, MAX_KEY = 16, 256
MAX_BODY = 16 * 1024
_KEY_CHARS = re.compile(r"[\x21-\x7e]+\Z")


def rules_call(parts):
    """``(entity path or None, rule name or None, regenerate?)`` for a management path split in
    segments, or None when it is not a rules call."""
    if parts[:1] == ["rules"]:
        path, rest = None, parts[1:]
    elif parts[:1] == ["entities"] and RULES_SEGMENT in parts:
        at = parts.index(RULES_SEGMENT)
        path, rest = "/".join(parts[1:at]), parts[at + 1:]
        if not path:
            return None
    else:
        return None
    if len(rest) > 2 or (len(rest) == 2 and rest[1] != REGENERATE):
        return path, False, False  # no such call: 404 below
    return path, (rest[0] if rest else None), len(rest) == 2


def describe(namespace, entity, rule):
    return {"name": rule.name, "rights": sorted(rule.rights),
            "scope": entity.path if entity is not None else "namespace",
            "static": namespace.is_static_rule(entity, rule.name),
            "primary_key": rule.key, "secondary_key": rule.secondary_key}


def _key(value, field):
    if value is None:
        return None
    if not isinstance(value, str) or not MIN_KEY <= len(value) <= MAX_KEY or not _KEY_CHARS.match(value):
        raise BadBody("%s must be %d to %d printable ASCII characters without spaces (or left out to have "
                      "one generated; relayd key new makes one)" % (field, MIN_KEY, MAX_KEY))
    return value


def _fields(spec, allowed):
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise BadBody("unknown fields %s; allowed: %s" % (unknown, ", ".join(allowed)))


class RulesApi:
    log = Logger()

    def __init__(self, namespace):
        self.namespace = namespace

    def render(self, request, call):
        path, name, regenerate = call
        method = request.method
        try:
            if name is False:
                return json_error(request, 404, "unknown rules path; use /$relayd/rules[/{name}[/regenerate]] or "
                                                "/$relayd/entities/{path}/$rules[/{name}[/regenerate]]")
            if name is None:
                if method != b"GET":
                    return json_error(request, 405, "use GET to list rules; PUT /.../{name} creates one")
                entity, rules = self.namespace.scope(path)
                return json_reply(request, [describe(self.namespace, entity, r) for r in rules])
            if not RULE_NAME.match(name):
                return json_error(request, 400, "rule name %r: use 1 to 256 ASCII letters, digits, '.', '-' "
                                                "and '_'" % name[:300])
            if regenerate:
                if method != b"POST":
                    return json_error(request, 405, "use POST on .../regenerate")
                return self._regenerate(request, path, name)
            if method == b"GET":
                entity, rule = self.namespace.find_rule(path, name)
                return json_reply(request, describe(self.namespace, entity, rule))
            if method == b"PUT":
                return self._create(request, path, name)
            if method == b"DELETE":
                rule, written = self.namespace.delete_rule(path, name)
                self._logged("deleted", path, rule)
                return when_written(request, written, lambda: {"deleted": rule.name})
            return json_error(request, 405, "use GET, PUT or DELETE on a rule, POST on .../regenerate")
        except BadBody as e:
            return json_error(request, e.status, str(e))
        except NamespaceError as e:
            return json_error(request, e.status, str(e))

    def _create(self, request, path, name):
        spec = read_json(request, MAX_BODY)
        _fields(spec, ("rights", "primary_key", "secondary_key"))
        rights = spec.get("rights")
        if not isinstance(rights, list) or not rights:
            raise BadBody('rights must be a non-empty list of "Listen", "Send" and "Manage"')
        try:
            rights = sas.normalize_rights(rights)
        except ValueError as e:
            raise BadBody("rights: %s" % e) from None
        primary, secondary = _key(spec.get("primary_key"), "primary_key"), _key(spec.get("secondary_key"), "secondary_key")
        entity, _ = self.namespace.scope(path)
        rule, written = self.namespace.create_rule(path, name, rights, primary, secondary)
        self._logged("created", path, rule)
        return when_written(request, written, lambda: describe(self.namespace, entity, rule), 201)

    def _regenerate(self, request, path, name):
        spec = read_json(request, MAX_BODY)
        _fields(spec, ("key_type", "key"))
        which = spec.get("key_type")
        if which not in KEY_TYPES:
            raise BadBody('key_type must be "primary" or "secondary", got %r' % (which,))
        key = _key(spec.get("key"), "key")
        rule, written = self.namespace.regenerate_rule(path, name, which, key)
        entity = self.namespace.get(path) if path is not None else None
        self._logged("%s key regenerated" % which, path, rule)
        return when_written(request, written, lambda: describe(self.namespace, entity, rule))

    def _logged(self, what, path, rule):
        self.log.info("rule {name} of {scope} {what} (rights {rights})", name=rule.name, what=what,
                      scope="entity %s" % path if path is not None else "the namespace",
                      rights=",".join(sorted(rule.rights)))
