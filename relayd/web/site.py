"""Management REST API and listener status, on the relay's HTTP port under ``/$relayd/``.

Every call needs a SAS token with the Manage right for the namespace (``sr`` = the relay's
base URL), in the ``Authorization`` or ``ServiceBusAuthorization`` header or ``sb-hc-token``.

* ``GET    /$relayd/entities``            -> list of entities with listener counts
* ``GET    /$relayd/entities/{path}``     -> one entity
* ``PUT    /$relayd/entities/{path}``     -> create/replace (JSON body: requires_client_authorization,
  max_listeners); 201 or 200
* ``DELETE /$relayd/entities/{path}``     -> delete; its listeners and connections close with 1001
* ``GET    /$relayd/status``              -> namespace summary (entities, listeners, pending rendezvous)

Everything else on the port that is not ``/$hc/`` answers 404 with a JSON error (the HTTP
relaying door replaces this fallback when it is configured).
"""

import json

from twisted.logger import Logger
from twisted.web import resource, server

from relayd import access, auth
from relayd.config import validate_entity_path
from relayd.namespace import Entity, NamespaceError

MAX_BODY = 64 * 1024


def json_error(request, status, message):
    tracking = access.tracking_id()
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps({"error": {"code": status, "message": message, "trackingId": tracking}}).encode()


def json_reply(request, obj, status=200):
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(obj, indent=1).encode()


class NotFound(resource.Resource):
    isLeaf = True

    def render(self, request):
        return json_error(
            request, 404,
            "nothing at %s; hybrid connection WebSockets live under /$hc/{path}"
            % request.path.decode("utf-8", "replace"),
        )


class Management(resource.Resource):
    isLeaf = True
    log = Logger()

    def __init__(self, namespace, switchboard, settings, clock):
        super().__init__()
        self.namespace = namespace
        self.switchboard = switchboard
        self.settings = settings
        self.clock = clock

    def _authorize(self, request):
        token = auth.extract_token(
            (request.args.get(b"sb-hc-token") or [b""])[0].decode("utf-8", "replace") or None,
            {k.decode("latin-1"): b",".join(v).decode("latin-1")
             for k, v in request.requestHeaders.getAllRawHeaders()},
        )
        if not token:
            raise auth.Unauthorized("a SAS token with the Manage right is required: " + access.TOKEN_HINT)
        host = request.getHeader(b"host")
        hosts = access.candidate_hosts(host.decode("latin-1") if host else None, None)
        failure = None
        for h in hosts:
            try:
                return auth.verify_token(token, "http://%s/" % h, self.namespace.rules, auth.MANAGE,
                                         self.clock.seconds())
            except auth.Forbidden as e:
                failure = e
        raise failure

    def _describe(self, entity):
        d = entity.describe()
        d["listeners"] = self.switchboard.listener_count(entity.path)
        return d

    def render(self, request):
        try:
            self._authorize(request)
        except auth.AuthError as e:
            return json_error(request, e.status, str(e))
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        try:
            if parts == ["status"] and request.method == b"GET":
                return json_reply(request, {
                    "entities": len(self.namespace.entities()),
                    "listeners": sum(self.switchboard.listener_counts().values()),
                    "pending_rendezvous": self.switchboard.pending_count(),
                })
            if parts[:1] != ["entities"]:
                return json_error(request, 404, "unknown management path; see /$relayd/entities")
            path = "/".join(parts[1:])
            if not path:
                if request.method != b"GET":
                    return json_error(request, 405, "use GET on /$relayd/entities")
                return json_reply(request, [self._describe(e) for e in self.namespace.entities()])
            if request.method == b"GET":
                entity = self.namespace.get(path)
                if entity is None:
                    return json_error(request, 404, "no entity %r" % path)
                return json_reply(request, self._describe(entity))
            if request.method == b"PUT":
                return self._put(request, path)
            if request.method == b"DELETE":
                entity = self.namespace.remove(path)
                self.log.info("entity {path} deleted", path=entity.path)
                return json_reply(request, {"deleted": entity.path})
            return json_error(request, 405, "use GET, PUT or DELETE on an entity")
        except NamespaceError as e:
            return json_error(request, 409 if "config file" in str(e) else 404, str(e))

    def _put(self, request, path):
        problem = validate_entity_path(path)
        if problem:
            return json_error(request, 400, "entity path %s" % problem)
        body = request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return json_error(request, 413, "entity description larger than %d bytes" % MAX_BODY)
        try:
            spec = json.loads(body or b"{}")
        except ValueError as e:
            return json_error(request, 400, "body is not JSON: %s" % e)
        if not isinstance(spec, dict):
            return json_error(request, 400, "body must be a JSON object")
        unknown = set(spec) - {"requires_client_authorization", "max_listeners", "response_timeout"}
        if unknown:
            return json_error(request, 400, "unknown fields %s; allowed: requires_client_authorization, "
                              "max_listeners, response_timeout" % sorted(unknown))
        rt = spec.get("response_timeout", 60.0)
        if isinstance(rt, bool) or not isinstance(rt, (int, float)) or not 0.1 <= rt <= 3600:
            return json_error(request, 400, "response_timeout must be a number of seconds from 0.1 to 3600")
        rca = spec.get("requires_client_authorization", True)
        ml = spec.get("max_listeners", 25)
        if not isinstance(rca, bool):
            return json_error(request, 400, "requires_client_authorization must be true or false")
        if isinstance(ml, bool) or not isinstance(ml, int) or not 1 <= ml <= 10000:
            return json_error(request, 400, "max_listeners must be an integer from 1 to 10000")
        existed = self.namespace.get(path) is not None
        entity = self.namespace.add(Entity(path, requires_client_authorization=rca, max_listeners=ml,
                                           response_timeout=float(rt)))
        self.log.info("entity {path} {what}", path=entity.path, what="replaced" if existed else "created")
        return json_reply(request, self._describe(entity), 200 if existed else 201)


class Root(resource.Resource):
    """``/$relayd/*`` -> management; anything else -> the fallback (HTTP relaying or 404)."""

    def __init__(self, management, fallback=None):
        super().__init__()
        self.management = management
        self.fallback = fallback or NotFound()

    def getChild(self, name, request):
        if name == b"$relayd":
            return self.management
        request.prepath.pop()
        request.postpath.insert(0, name)
        return self.fallback

    def render(self, request):
        return self.fallback.render(request)


def make_site(namespace, switchboard, settings, clock, fallback=None):
    site = server.Site(Root(Management(namespace, switchboard, settings, clock), fallback))
    site.displayTracebacks = False
    site.noisy = False
    return site
