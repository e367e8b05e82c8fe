"""The management API's OpenAPI 3 description, served at ``GET /$relayd/openapi.json``.

Built from the constants the API itself checks with (entity fields, event sizes, rule names and
keys), so the document and the relay cannot drift apart on them.  Reading the document needs
no token: it describes the API's shape and holds nothing of the namespace (no entity, rule or
key); every call it describes needs a Manage token (security scheme ``sas``: a SAS token in the
``Authorization`` header, ``ServiceBusAuthorization`` or ``sb-hc-token`` work too).
tests/integration/test_openapi.py runs schemathesis against a live relay with it.
"""

import json
import re

from relayd import __version__, entity_fields
from relayd.config import DEFAULT_MAX_EVENT, EVENT_KINDS, MAX_EVENT_LIMIT
from relayd.web import rules
from relayd.web.replies import json_error
from relayd.wire import names, sas

PATH = "/$relayd/openapi.json"
MEDIA = "application/json"
KINDS = ["hybrid_connection", "soap", *EVENT_KINDS]  # soap: config file only
RIGHTS = sorted(sas.ALL_RIGHTS)


def _ref(name):
    return {"$ref": "#/components/schemas/" + name}


def _nullable(schema):
    return dict(schema, nullable=True)


KEY = {"type": "string", "minLength": rules.MIN_KEY, "maxLength": rules.MAX_KEY, "pattern": "^[!-~]+$",
       "description": "printable ASCII without spaces; `relayd key new` makes one"}

_COMMON_SPEC = {
    "requires_client_authorization": {"type": "boolean", "default": True},
    "max_listeners": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 25},
    "response_timeout": {"type": "number", "minimum": 0.1, "maximum": 3600, "default": 60},
    "discovery": {"type": "string", "enum": list(entity_fields.DISCOVERY), "default": entity_fields.DISCOVERY[0],
                  "description": "public: listed in the discovery feed while a listener is online"},
    "display_name": _nullable({"type": "string", "maxLength": entity_fields.MAX_DISPLAY_NAME}),
    "user_metadata": _nullable({"type": "string", "maxLength": entity_fields.MAX_USER_METADATA}),
}

SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message", "trackingId"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                           "trackingId": {"type": "string"}}}},
    },
    "EntitySpec": {
        "description": "PUT body: what is left out takes its default; soap entities are declared in the "
                       "config file",
        "oneOf": [_ref("HybridConnectionSpec"), _ref("EventEntitySpec")],
    },
    "HybridConnectionSpec": {
        "type": "object", "additionalProperties": False,
        "properties": dict(_COMMON_SPEC, kind={"type": "string", "enum": ["hybrid_connection"],
                                               "default": "hybrid_connection"}),
    },
    "EventEntitySpec": {
        "type": "object", "additionalProperties": False, "required": ["kind"],
        "properties": dict(_COMMON_SPEC, kind={"type": "string", "enum": list(EVENT_KINDS)},
                           max_message={"type": "integer", "minimum": 1, "maximum": MAX_EVENT_LIMIT,
                                        "default": DEFAULT_MAX_EVENT}),
    },
    "Entity": {
        "type": "object",
        "required": ["path", "kind", "requires_client_authorization", "max_listeners", "response_timeout",
                     "max_message", "discovery", "display_name", "user_metadata", "created_at", "updated_at",
                     "rules", "static", "listeners", "online", "online_since", "offline_since"],
        "properties": {
            "path": {"type": "string"},
            "kind": {"type": "string", "enum": KINDS},
            "requires_client_authorization": {"type": "boolean"},
            "max_listeners": {"type": "integer"},
            "response_timeout": {"type": "number"},
            "max_message": {"type": "integer"},
            "discovery": {"type": "string", "enum": list(entity_fields.DISCOVERY)},
            "display_name": _nullable({"type": "string"}),
            "user_metadata": _nullable({"type": "string"}),
            "created_at": _nullable({"type": "number", "description": "seconds since the epoch"}),
            "updated_at": _nullable({"type": "number", "description": "seconds since the epoch"}),
            "rules": {"type": "array", "items": {
                "type": "object", "required": ["name", "rights"],
                "properties": {"name": {"type": "string"},
                               "rights": {"type": "array", "items": {"type": "string", "enum": RIGHTS}}}}},
            "static": {"type": "boolean", "description": "declared in the config file (read-only here)"},
            "listeners": {"type": "integer", "minimum": 0, "description": "listeners online now"},
            "online": {"type": "boolean"},
            "online_since": _nullable({"type": "number", "description": "when it went online (null: offline)"}),
            "offline_since": _nullable({"type": "number", "description": "when it went offline (null: online)"}),
        },
    },
    "Connectivity": {
        "type": "object", "required": ["path", "kind", "online", "listeners", "since"],
        "properties": {"path": {"type": "string"}, "kind": {"type": "string", "enum": KINDS},
                       "online": {"type": "boolean"}, "listeners": {"type": "integer", "minimum": 0},
                       "since": {"type": "number", "description": "when it went online or offline"}},
    },
    "ConnectivityList": {
        "type": "object", "required": ["entities", "last_event_id", "watchers"],
        "properties": {"entities": {"type": "array", "items": _ref("Connectivity")},
                       "last_event_id": {"type": "string", "description": "pass as Last-Event-ID to the "
                                                                         "stream to miss nothing after"},
                       "watchers": {"type": "integer"}, "watchers_dropped": {"type": "integer"}},
    },
    "Deleted": {"type": "object", "required": ["deleted"], "properties": {"deleted": {"type": "string"}}},
    "Status": {
        "type": "object",
        "required": ["entities", "listeners", "pending_rendezvous", "events", "traffic", "version", "uptime"],
        "properties": {"entities": {"type": "integer"}, "listeners": {"type": "integer"},
                       "pending_rendezvous": {"type": "integer"},
                       "events": {"type": "object", "description": "per event kind: published, deliveries, "
                                                                   "dropped, cut",
                                  "additionalProperties": {"type": "object",
                                                           "additionalProperties": {"type": "integer"}}},
                       "traffic": {"type": "object", "required": ["bytes_up", "bytes_down", "connections"],
                                   "properties": {
                                       "bytes_up": {"type": "integer", "description": "towards listeners"},
                                       "bytes_down": {"type": "integer", "description": "towards senders"},
                                       "connections": {"type": "integer", "description": "relayed now"},
                                       "connections_by_door": {"type": "object",
                                                               "additionalProperties": {"type": "integer"}}}},
                       "version": {"type": "string", "description": "relayd's version"},
                       "uptime": {"type": "number", "description": "seconds since the relay started"}},
    },
    "RuleSpec": {
        "type": "object", "additionalProperties": False, "required": ["rights"],
        "properties": {"rights": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": RIGHTS}},
                       "primary_key": _nullable(dict(KEY, description="generated when null or left out")),
                       "secondary_key": _nullable(dict(KEY, description="generated when null or left out"))},
    },
    "Regenerate": {
        "type": "object", "additionalProperties": False, "required": ["key_type"],
        "properties": {"key_type": {"type": "string", "enum": list(rules.KEY_TYPES)},
                       "key": _nullable(dict(KEY, description="the new key; generated when null or left out"))},
    },
    "Rule": {
        "type": "object", "required": ["name", "rights", "scope", "static", "primary_key", "secondary_key"],
        "properties": {"name": {"type": "string"},
                       "rights": {"type": "array", "items": {"type": "string", "enum": RIGHTS}},
                       "scope": {"type": "string", "description": '"namespace" or the entity path'},
                       "static": {"type": "boolean"},
                       "primary_key": {"type": "string"}, "secondary_key": _nullable({"type": "string"})},
    },
}

ERRORS = {
    400: "the request is not what the call takes (the message says what to fix)",
    401: "no valid SAS token",
    403: "the token lacks the Manage right or is not for this relay",
    404: "no such entity, rule or path",
    405: "not a method of this path",
    409: "declared in the config file, or exists already",
    413: "the body is larger than the API takes",
    500: "the change applies but could not be written to the store",
    503: "the relay serves as many connectivity streams as it may (limits.status_watchers)",
}


def _responses(success, errors):
    out = {str(status): {"description": description, "content": {MEDIA: {"schema": schema}}}
           for status, (description, schema) in success.items()}
    for status in sorted({400, 401, 403, 413} | set(errors)):
        out[str(status)] = {"description": ERRORS[status], "content": {MEDIA: {"schema": _ref("Error")}}}
    return out


def _op(summary, success, errors=(), body=None, parameters=(), body_required=True):
    op = {"summary": summary, "responses": _responses(success, errors)}
    if parameters:
        op["parameters"] = list(parameters)
    if body:
        op["requestBody"] = {"required": body_required, "content": {MEDIA: {"schema": _ref(body)}}}
    return op


# relayd.wire.names.validate_entity_path: ASCII letters, digits and -._~ in segments joined by '/',
# no '.' or '..' segment
ENTITY_PATH = {"name": "path", "in": "path", "required": True, "description": "the entity's path (may hold /)",
               "schema": {"type": "string", "maxLength": names.MAX_ENTITY_PATH,
                          "pattern": r"^(?!\.\.?(/|$))(?!.*/\.\.?(/|$))[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$"}}
RULE_NAME = {"name": "name", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": "^%s$" % rules.RULE_NAME.pattern.removesuffix("\\Z")}}


ENTITY_QUERY = {"name": "entity", "in": "query", "required": False, "description": "only this entity",
                "schema": {"type": "string"}}
# /$relayd/connectivity/stream is the stream: an entity named "stream" is asked with ?entity=stream
CONNECTIVITY_PATH = dict(ENTITY_PATH, schema=dict(ENTITY_PATH["schema"], **{"not": {"enum": ["stream"]}}))
TEXT = "text/plain"


def _text(description):
    return {"description": description, "content": {TEXT: {"schema": {"type": "string"}}}}


def _other_paths():
    """Connectivity, metrics and the health probe (relayd.web.connectivity, relayd.web.metrics)."""
    stream = _op("a live stream of connectivity events (server-sent events: NewListenerRegistered, "
                 "ListenerUnregistered, ...); it ends when the token expires", {}, [404, 405, 503],
                 parameters=[ENTITY_QUERY, {"name": "Last-Event-ID", "in": "header", "required": False,
                                            "schema": {"type": "string"}}])
    stream["responses"]["200"] = {"description": "the stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}
    metrics = _op("Prometheus text format: Azure Relay's metrics per entity and relayd's own", {}, [])
    metrics["responses"].update({"200": _text("the exposition (text/plain; version=0.0.4)"),
                                 "405": _text("use GET")})
    health = {"summary": "health probe: no token, no details", "security": [],
              "responses": {"200": _text("ok: the relay serves"), "405": _text("use GET"),
                            "503": _text("stopping")}}
    return {
        "/$relayd/connectivity": {"get": _op("every entity's online state and listener count",
                                             {200: ("the states", _ref("ConnectivityList"))}, [404, 405],
                                             parameters=[ENTITY_QUERY])},
        "/$relayd/connectivity/stream": {"get": stream},
        "/$relayd/connectivity/{path}": {"get": _op("one entity's online state and listener count",
                                                    {200: ("the state", _ref("Connectivity"))}, [404, 405],
                                                    parameters=[CONNECTIVITY_PATH])},
        "/$relayd/metrics": {"get": metrics},
        "/$relayd/healthz": {"get": health},
    }


def _rule_paths(prefix, parameters, scope):
    return {
        prefix: {"get": _op("list the SAS rules of %s (with their keys)" % scope,
                            {200: ("the rules", {"type": "array", "items": _ref("Rule")})}, [404, 405],
                            parameters=parameters)},
        prefix + "/{name}": {
            "get": _op("one rule of %s" % scope, {200: ("the rule", _ref("Rule"))}, [404, 405],
                       parameters=parameters + [RULE_NAME]),
            "put": _op("create a rule of %s; its tokens work at once" % scope, {201: ("created", _ref("Rule"))},
                       [404, 405, 409, 500], "RuleSpec", parameters + [RULE_NAME]),
            "delete": _op("delete a rule of %s: its tokens are refused and its connections closed (1008)" % scope,
                          {200: ("deleted", _ref("Deleted"))}, [404, 405, 409, 500],
                          parameters=parameters + [RULE_NAME]),
        },
        prefix + "/{name}/regenerate": {
            "post": _op("replace the primary or secondary key of a rule of %s" % scope,
                        {200: ("the rule with its new key", _ref("Rule"))}, [404, 405, 409, 500], "Regenerate",
                        parameters + [RULE_NAME]),
        },
    }


def document():
    """The OpenAPI 3.0 document (a dict)."""
    paths = {
        PATH: {"get": dict(_op("this document", {200: ("the OpenAPI document", {"type": "object"})}, [405]),
                           security=[])},
        "/$relayd/status": {"get": _op("namespace summary", {200: ("counts", _ref("Status"))}, [404, 405])},
        "/$relayd/entities": {"get": _op("every entity with its listener count",
                                         {200: ("the entities", {"type": "array", "items": _ref("Entity")})},
                                         [404, 405])},
        "/$relayd/entities/{path}": {
            "get": _op("one entity", {200: ("the entity", _ref("Entity"))}, [404, 405], parameters=[ENTITY_PATH]),
            "put": _op("create or replace an entity (answers once written to the store; no body: "
                       "every field's default)",
                       {200: ("replaced", _ref("Entity")), 201: ("created", _ref("Entity"))},
                       [404, 405, 409, 500], "EntitySpec", [ENTITY_PATH], body_required=False),
            "delete": _op("delete an entity; its listeners and connections close with 1001",
                          {200: ("deleted", _ref("Deleted"))}, [404, 405, 409, 500], parameters=[ENTITY_PATH]),
        },
    }
    paths.update(_rule_paths("/$relayd/rules", [], "the namespace"))
    paths.update(_rule_paths("/$relayd/entities/{path}/$rules", [ENTITY_PATH], "an entity"))
    paths.update(_other_paths())
    return {
        "openapi": "3.0.3",
        "info": {"title": "relayd management API", "version": __version__,
                 "description": "Entities, SAS rules and status of a relayd namespace (docs/operations.rst). "
                                "Every call needs a SAS token with the Manage right for the namespace "
                                "(sr = the relay's base URL); `relayd token --rule NAME --key KEY --uri URL` "
                                "makes one."},
        "security": [{"sas": []}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"sas": {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "SharedAccessSignature sr=...&sig=...&se=...&skn=... with the Manage right"}},
        },
    }


BODY = json.dumps(document(), indent=1).encode()

# The document's paths as patterns over a request path: an entity path never holds '$' (so it
# never runs into '/$rules'), a rule name never '/'.
_TEMPLATES = [(re.compile(re.escape(template).replace(r"\{path\}", "[^$]+").replace(r"\{name\}", "[^/]+") + r"\Z"),
               ", ".join(method.upper() for method in item))
              for template, item in document()["paths"].items()]


def render(request):
    """``GET`` of the document (any other method: 405)."""
    if request.method != b"GET":
        return json_error(request, 405, "use GET on %s" % PATH)
    request.setHeader(b"content-type", MEDIA.encode())
    return BODY


def allowed_methods(path):
    """The methods the document gives for a request path (``Allow`` of a 405), or None."""
    for pattern, methods in _TEMPLATES:
        if pattern.match(path):
            return methods
    return None
