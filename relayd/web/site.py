"""Management REST API and listener status, on the relay's HTTP port under ``/$relayd/``.

Every call needs a SAS token with the Manage right for the namespace (``sr`` = the relay's
base URL), in the ``Authorization`` or ``ServiceBusAuthorization`` header or ``sb-hc-token``.

* ``GET    /$relayd/entities``            -> list of entities with listener counts
* ``GET    /$relayd/entities/{path}``     -> one entity
* ``PUT    /$relayd/entities/{path}``     -> create/replace (JSON body: requires_client_authorization,
  max_listeners, response_timeout, kind: hybrid_connection | oneway | multicast, max_message,
  discovery: private | public, display_name, user_metadata); 201 or 200, once written to the store
* ``DELETE /$relayd/entities/{path}``     -> delete; its listeners and connections close with 1001
* ``/$relayd/rules[/{name}]``, ``/$relayd/entities/{path}/$rules[/{name}]`` -> SAS rules at run
  time (:mod:`relayd.web.rules`)
* ``GET    /$relayd/openapi.json``        -> this API's OpenAPI 3 description, the one call without a
  token (:mod:`relayd.web.openapi`)
* ``GET    /$relayd/connectivity[/{path}|/stream]`` -> online/offline and listener counts, and a live
  stream of changes (server-sent events, exempt from the connection deadline below:
  :mod:`relayd.web.connectivity`)
* ``GET    /$relayd/status``              -> namespace summary (entities, listeners, pending rendezvous,
  events: what the event kinds did)

Everything else on the port that is not ``/$hc/`` answers 404 with a JSON error (the HTTP
relaying door replaces this fallback when it is configured).

Bounds: a call is authenticated from its request head, before any of its body is read (the
front door asks :meth:`RelaydSite.refuse`), and a body may be at most ``MAX_BODY`` bytes:
a larger ``Content-Length`` is answered 413 from the head, a chunked body 413 as soon as it
grows past the cap, and nothing beyond the cap is kept.  Management connections serve one
request each (``Connection: close``), so every call passes the front door's checks, and a
connection must be done within ``limits.open_handshake_timeout + limits.http_body_timeout``
seconds plus one second per ``limits.http_body_min_rate`` bytes of the largest body.
"""

import io
from urllib.parse import parse_qsl, urlsplit

from twisted.logger import Logger
from twisted.web import http, resource, server
from zope.interface import implementer

from relayd import access

from relayd.wire import sas
from relayd.interfaces import IHeadCheck
from relayd.wire.names import validate_entity_path
from relayd.config import DEFAULT_MAX_EVENT, EVENT_KINDS, MAX_EVENT_LIMIT
from relayd import entity_fields
from relayd.namespace import HYBRID_CONNECTION, Entity, NamespaceError
from relayd.web import openapi
from relayd.web.discovery import Discovery, DiscoveryResource
from relayd.web.connectivity import ConnectivityApi
from relayd.web.rules import RulesApi, rules_call
from relayd.web.replies import BadBody, error_body as _error_body, json_error, json_reply, read_json, when_written
from relayd.web import ui

MAX_BODY = 64 * 1024


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
        # name -> callable: more members of GET /$relayd/status (e.g. "events": the event kinds' counts)
        self.status_extras = {}
        # more resources under /$relayd/: name -> resource after the Manage token (e.g. "metrics"), and
        # request path -> resource served without one (e.g. "/$relayd/healthz": relayd.web.metrics)
        self.managed, self.open_paths = {}, {}
        self.rules = RulesApi(namespace)
        self.connectivity = ConnectivityApi(namespace, switchboard, settings.limits, clock)

    def _authorize(self, request):
        host = request.getHeader(b"host")
        return self.authorize(
            (request.args.get(b"sb-hc-token") or [b""])[0].decode("utf-8", "replace") or None,
            {k.decode("latin-1"): b",".join(v).decode("latin-1")
             for k, v in request.requestHeaders.getAllRawHeaders()},
            host.decode("latin-1") if host else None,
        )

    def authorize(self, query_token, headers, host):
        """Check a Manage token given in the query or the headers; raise sas.AuthError if not."""
        token = sas.extract_token(query_token, headers)
        if not token:
            raise sas.Unauthorized("a SAS token with the Manage right is required: " + access.TOKEN_HINT)
        hosts = access.candidate_hosts(host, None)
        failure = None
        for h in hosts:
            try:
                return sas.verify_token(token, "http://%s/" % h, self.namespace.rules, sas.MANAGE,
                                         self.clock.seconds())
            except sas.Forbidden as e:
                failure = e
        raise failure

    def _describe(self, entity):
        d = entity.describe()
        d["listeners"] = self.switchboard.cluster_listener_count(entity.path)  # every node of a cluster
        d.update(self.connectivity.describe(entity))  # online, online_since / offline_since
        return d

    def render(self, request):
        if request.path.decode("latin-1") in self.open_paths:
            return self.open_paths[request.path.decode("latin-1")].render(request)
        if request.path == openapi.PATH.encode():  # the API's description: no token
            return openapi.render(request)
        try:
            verified = self._authorize(request)
        except sas.AuthError as e:
            return json_error(request, e.status, str(e))
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if len(parts) == 1 and parts[0] in self.managed:
            return self.managed[parts[0]].render(request)
        if parts[:1] == ["connectivity"]:
            return self.connectivity.render(request, parts[1:], verified)
        rules = rules_call(parts)
        if rules is not None:
            return self.rules.render(request, rules)
        try:
            if parts == ["status"] and request.method != b"GET":
                return json_error(request, 405, "use GET on /$relayd/status")
            if parts == ["status"]:
                status = {
                    "entities": len(self.namespace.entities()),
                    "listeners": sum(self.switchboard.listener_counts().values()),
                    "pending_rendezvous": self.switchboard.pending_count(),
                }
                status.update((name, extra()) for name, extra in self.status_extras.items())
                return json_reply(request, status)
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
                entity, written = self.namespace.delete(path)
                self.log.info("entity {path} deleted", path=entity.path)
                return when_written(request, written, lambda: {"deleted": entity.path})
            return json_error(request, 405, "use GET, PUT or DELETE on an entity")
        except NamespaceError as e:
            return json_error(request, e.status, str(e))

    def _put(self, request, path):
        problem = validate_entity_path(path)
        if problem:
            return json_error(request, 400, "entity path %s" % problem)
        try:
            spec = read_json(request, MAX_BODY)
        except BadBody as e:
            return json_error(request, e.status, str(e))
        allowed = ("requires_client_authorization", "max_listeners", "response_timeout", "kind", "max_message",
                   *entity_fields.FIELDS)
        unknown = set(spec) - set(allowed)
        if unknown:
            return json_error(request, 400, "unknown fields %s; allowed: %s" % (sorted(unknown), ", ".join(allowed)))
        described = {name: spec.get(name, entity_fields.DISCOVERY[0] if name == "discovery" else None)
                     for name in entity_fields.FIELDS}
        for name, value in described.items():
            if entity_fields.problem(name, value):
                return json_error(request, 400, "%s %s" % (name, entity_fields.problem(name, value)))
        kind = spec.get("kind", HYBRID_CONNECTION)
        if kind not in (HYBRID_CONNECTION,) + EVENT_KINDS:
            return json_error(request, 400, 'kind must be "hybrid_connection" (default), "oneway" or "multicast" '
                              '(event entities); "soap" entities are declared in the config file')
        mm = spec.get("max_message", DEFAULT_MAX_EVENT)
        if "max_message" in spec and kind not in EVENT_KINDS:
            return json_error(request, 400, 'max_message applies only to kind "oneway" or "multicast"; '
                              'remove it or set the kind')
        if isinstance(mm, bool) or not isinstance(mm, int) or not 1 <= mm <= MAX_EVENT_LIMIT:
            return json_error(request, 400, "max_message must be an integer from 1 to %d" % MAX_EVENT_LIMIT)
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
        entity, written = self.namespace.put(Entity(path, kind, requires_client_authorization=rca, max_listeners=ml,
                                                    response_timeout=float(rt), max_message=mm, **described))
        self.log.info("entity {path} {what}", path=entity.path, what="replaced" if existed else "created")
        return when_written(request, written, lambda: self._describe(entity), 200 if existed else 201)


class Root(resource.Resource):
    """``/$relayd/ui/*`` -> the status page (:mod:`relayd.web.ui`), other ``/$relayd/*`` -> management;
    anything else -> the fallback (HTTP relaying or 404)."""

    def __init__(self, management, fallback=None):
        super().__init__()
        self.management = management
        self.fallback = fallback or NotFound()
        self.ui = ui.StatusPage()

    def getChild(self, name, request):
        if name == b"$relayd":
            return self.ui if request.postpath[:1] == [b"ui"] else self.management
        request.prepath.pop()
        request.postpath.insert(0, name)
        return self.fallback

    def render(self, request):
        return self.fallback.render(request)


def _phrase(status):
    return http.RESPONSES.get(status, b"Error").decode("ascii")


def too_large_message():
    return "the request body is larger than the management API's limit of %d bytes" % MAX_BODY


class CappedRequest(server.Request):
    """A request whose body may be at most ``MAX_BODY`` bytes: past it, a 413 goes out at once,
    the connection closes, and what was read is dropped (never spooled to a file)."""

    refused = False
    received = 0

    def setResponseCode(self, code, message=None):
        super().setResponseCode(code, message)
        if code == 405 and not self.responseHeaders.hasHeader(b"allow"):  # RFC 9110: name what is allowed
            allowed = openapi.allowed_methods(self.path.decode("latin-1"))
            if allowed:
                self.setHeader(b"allow", allowed.encode())

    def gotLength(self, length):
        if length is not None and length > MAX_BODY:
            self._refuse_body()
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self.refused:
            return
        self.received += len(data)
        if self.received > MAX_BODY:
            self._refuse_body()
            return
        super().handleContentChunk(data)

    def _refuse_body(self):
        self.refused = True
        self.content = io.BytesIO()
        body = _error_body(413, too_large_message())
        transport = self.channel.transport
        transport.write(b"HTTP/1.1 413 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                        b"Connection: close\r\n\r\n%s" % (_phrase(413).encode(), len(body), body))
        transport.loseConnection()

    def requestReceived(self, command, path, version):
        if self.refused:
            return  # answered already; the connection is closing
        super().requestReceived(command, path, version)


class OneRequestChannel(http.HTTPChannel):
    """Serves one request per connection (the front door checks each request's head before its
    body is read) within a deadline for the whole connection."""

    _deadline = None

    def checkPersistence(self, request, version):
        request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        return False

    def connectionMade(self):
        super().connectionMade()
        self._deadline = self.site.clock.callLater(self.site.connection_deadline, self._too_slow)

    def _too_slow(self):
        self._deadline = None
        self.transport.abortConnection()

    def lift_deadline(self):
        """For a long-lived response (the connectivity stream, :mod:`relayd.web.connectivity`),
        which keeps deadlines of its own: no connection deadline, no idle timeout."""
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()
        self.setTimeout(None)

    def connectionLost(self, reason):
        self.lift_deadline()
        super().connectionLost(reason)


@implementer(IHeadCheck)
class RelaydSite(server.Site):
    protocol = OneRequestChannel
    requestFactory = CappedRequest

    def __init__(self, root, management, settings, clock):
        super().__init__(root)
        self.management = management
        self.clock = clock
        limits = settings.limits
        self.connection_deadline = (limits.open_handshake_timeout + limits.http_body_timeout
                                    + MAX_BODY / limits.http_body_min_rate)

    def refuse(self, head):
        """Check a request from its head (bytes up to, without, the blank line) before its body is
        read.  Returns None to go on, or (status, phrase, JSON body) to answer and close."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            return self._refusal(400, "malformed HTTP request line")
        target = parts[1].decode("latin-1")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or any(c in value for c in b"\r\n\x00"):
                return self._refusal(400, "malformed header line")
            key = name.decode("latin-1").lower()
            value = value.strip().decode("latin-1")
            headers[key] = headers[key] + "," + value if key in headers else value
        length = None
        if "content-length" in headers:
            values = {v.strip() for v in headers["content-length"].split(",")}
            if len(values) != 1 or not values.copy().pop().isdigit():
                return self._refusal(400, "Content-Length must be one decimal number")
            length = int(values.pop())
        parts = urlsplit(target)
        if (parts.path.startswith("/$relayd/") and parts.path != openapi.PATH and not ui.is_page(parts.path)
                and parts.path not in self.management.open_paths):
            query_token = next((v for k, v in parse_qsl(parts.query, keep_blank_values=True)
                                if k == "sb-hc-token"), None)
            try:
                self.management.authorize(query_token or None, headers, headers.get("host"))
            except sas.AuthError as e:
                return self._refusal(e.status, str(e))
        if length is not None and length > MAX_BODY:
            return self._refusal(413, too_large_message())
        return None

    @staticmethod
    def _refusal(status, message):
        return status, _phrase(status), _error_body(status, message)


def make_site(namespace, switchboard, settings, clock, fallback=None):
    management = Management(namespace, switchboard, settings, clock)
    discovery = Discovery(namespace, switchboard, settings, clock, management.authorize)  # the HTTP door's too
    site = RelaydSite(Root(management, fallback or DiscoveryResource(discovery, NotFound())), management, settings,
                      clock)
    site.discovery = discovery
    site.displayTracebacks = False
    site.noisy = False
    return site
