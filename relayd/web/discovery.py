"""What the relay answers itself on entity paths: the discovery feed, Manage listings and runtime
information (:mod:`relayd.wire.atom` writes the documents).  The HTTP relaying door asks
:meth:`Discovery.answer` for every GET/HEAD before it relays anything (``HttpDoor(answers=)``),
and the management site does for what is not ``/$relayd/`` when there is no HTTP door
(:class:`DiscoveryResource`), so both doors answer the same.

* ``GET|HEAD /`` without a token: the "Publicly Listed Services" feed -- the entities with
  ``discovery = "public"`` that have a listener online: title (``display_name`` or the path),
  address, kind and listener count.  Nothing else: private entities, public ones without a
  listener, rules and counts of any of them stay out.  The work is bounded by the entities that
  have listeners (the switchboard's registry, in memory), never by all entities, and the
  document is built again only when what it lists changed (:data:`FEED_CACHE` documents kept).
* ``GET|HEAD /{path}`` that is not an entity, with a Manage token for the namespace (any of the
  places a token goes): a feed of the entities one segment below ``path`` (``/``: the top
  level), private ones too, each with its ``HybridConnectionDescription``.  Without a token or
  with one that is not Manage, the door answers as before (404): a listing shows nothing to
  anyone else.
* ``GET|HEAD /{entity}?api-version=...``: the runtime-information entry Azure's SDK reads
  (``HybridConnectionListener.GetRuntimeInformationAsync`` sends ``api-version=2016-07`` and
  the listener's own token in ``Authorization``): a token valid for the entity with any of
  Listen, Send, Manage.  Never relayed to a listener.

Errors of the last two are Azure's ``<Error><Code/><Detail/></Error>``: no token, or one that
does not do: 401 (as Azure, whose SDK reads 403 as a quota error); no such entity: 404.
"""

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from twisted.web import resource

from relayd import access
from relayd.wire import atom, sas

API_VERSION = "api-version"
PAGE = "page"  # ?page=N of a feed longer than limits.discovery_page_size entries (RFC 5005 links)
MAX_PAGE_DIGITS = 9
ANSWERED = ("GET", "HEAD")
FEED_CACHE = 4  # public feed pages kept, by (base URL, page, what they list): one per Host name in use
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")
# Azure's SDK reads 403 as QuotaExceededException: every refused token is 401, as Azure answers.
REFUSED = 401


@dataclass(frozen=True)
class Reply:
    """A whole answer: HTTP status, media type, body (a HEAD request gets its head only)."""

    status: int
    content_type: str
    body: bytes


def error_reply(status, message):
    return Reply(status, atom.ERROR_MEDIA, atom.error(status, access.with_tracking(message)))


class Discovery:
    """The relay's own answers on entity paths (see the module's text)."""

    def __init__(self, namespace, switchboard, settings, clock, manage_authorize):
        """``manage_authorize(query_token, headers, host)``: the management API's check of a
        namespace Manage token (raises :class:`relayd.wire.sas.AuthError`)."""
        self.namespace = namespace
        self.switchboard = switchboard
        self.public_url = settings.public_url
        self.page_size = settings.limits.discovery_page_size
        self.clock = clock
        self.manage_authorize = manage_authorize
        self._feeds = {}  # (base, page, listed, more) -> bytes, at most FEED_CACHE

    def answer(self, method, path, entity, suffix, query, headers, secure):
        """The :class:`Reply` for a request the relay answers itself, else None (relay it).

        ``path``: the decoded request path without its slashes at the ends; ``entity``/``suffix``:
        what ``namespace.resolve(path)`` gave; ``query``: the raw query string; ``headers``:
        lower-case name -> [values]; ``secure``: the request came over TLS."""
        if method not in ANSWERED:
            return None
        if entity is not None:  # the hot path: relayed requests stop here
            if suffix or API_VERSION not in query:
                return None
            query = {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)}
            return self._runtime_information(entity, query, headers, secure) if API_VERSION in query else None
        query = {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)}
        given = sas.extract_token(query.get("sb-hc-token"), headers)
        if not path and not given:
            return self._paged(query, lambda page: self._public_feed(self._base(headers, secure), page))
        if not given:
            return error_reply(REFUSED, "a SAS token is required: " + access.TOKEN_HINT) if API_VERSION in query else None
        try:
            self.manage_authorize(query.get("sb-hc-token"), _first_values(headers), _first(headers, "host"))
        except sas.AuthError as e:
            if not path:
                return error_reply(REFUSED, str(e))
            if API_VERSION not in query:
                return None  # the door's own 404: a listing shows nothing without Manage
            if isinstance(e, sas.Forbidden):  # a genuine token, e.g. a listener's asking for runtime information
                return error_reply(404, "no entity at '%s'" % path)
            return error_reply(REFUSED, str(e))
        return self._paged(query, lambda page: self._children(path, self._base(headers, secure), page))

    # -- the answers -------------------------------------------------------------------------

    def _runtime_information(self, entity, query, headers, secure):
        token = sas.extract_token(query.get("sb-hc-token"), headers)
        if not token:
            return error_reply(REFUSED, "a SAS token for '%s' is required: %s" % (entity.path, access.TOKEN_HINT))
        hosts = access.candidate_hosts(_first(headers, "host"), urlsplit(self.public_url).hostname
                                       if self.public_url else None)
        failure = None
        for right in (sas.LISTEN, sas.SEND):  # Manage grants both
            try:
                access.authorize(self.namespace, entity, token, right, hosts, self.clock.seconds())
                break
            except sas.AuthError as e:
                failure = failure or e
        else:
            return error_reply(REFUSED, str(failure))
        address = self._base(headers, secure) + entity.path
        return Reply(200, atom.ENTRY_MEDIA, atom.entry(address, entity.display_name or entity.path,
                                                       self.clock.seconds(), self._description(entity)))

    @staticmethod
    def _paged(query, build):
        raw = query.get(PAGE, "1")
        if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_PAGE_DIGITS or int(raw) < 1:
            return error_reply(400, "page must be a whole number from 1 (the feed's next/previous links give it)")
        return Reply(200, atom.FEED_MEDIA, build(int(raw)))

    def _page_of(self, items, page):
        """(the items of ``page``, whether more follow)."""
        start = (page - 1) * self.page_size
        return items[start:start + self.page_size], len(items) > start + self.page_size

    def _feed(self, feed_url, title, page, more, listings, subtitle=None):
        def at(n):
            return feed_url if n == 1 else "%s?%s=%d" % (feed_url, PAGE, n)

        links = [("first", at(1))] if page > 1 or more else []
        links += [("previous", at(page - 1))] if page > 1 else []
        links += [("next", at(page + 1))] if more else []
        return atom.feed(feed_url, title, self.clock.seconds(), listings, subtitle, at(page), links)

    def _public_feed(self, base, page):
        listed = []
        for key, count in sorted(self.switchboard.cluster_listener_counts().items()):
            entity = self.namespace.get(key)
            if count > 0 and entity is not None and entity.discovery == "public":
                listed.append((entity.display_name or entity.path, entity.path, entity.kind, count))
        shown, more = self._page_of(tuple(listed), page)
        key = (base, page, shown, more)
        body = self._feeds.get(key)
        if body is None:
            body = self._feed(base, atom.PUBLIC_TITLE, page, more, [
                atom.Listing(title, base + path, kind, count) for title, path, kind, count in shown],
                atom.PUBLIC_SUBTITLE)
            while len(self._feeds) >= FEED_CACHE:
                self._feeds.pop(next(iter(self._feeds)))
            self._feeds[key] = body
        return body

    def _children(self, path, base, page):
        prefix = path.lower() + "/" if path else ""
        depth = prefix.count("/") + 1
        children, more = self._page_of([e for e in self.namespace.entities()
                                        if e.path.lower().startswith(prefix) and e.path.count("/") + 1 == depth], page)
        return self._feed(base + path, atom.CHILDREN_TITLE % path, page, more, [
            atom.Listing(e.display_name or e.path, base + e.path, e.kind,
                         self.switchboard.cluster_listener_count(e.path),
                         self._description(e)) for e in children])

    def _description(self, entity):
        return atom.Description(entity.created_at, entity.updated_at, entity.requires_client_authorization,
                                entity.user_metadata, self.switchboard.cluster_listener_count(entity.path))

    def _base(self, headers, secure):
        """The relay's base URL with a trailing slash: ``public_url``, else the scheme and the
        request's Host (a Host with characters a host name has not: ``localhost``)."""
        if self.public_url:
            return self.public_url.rstrip("/") + "/"
        host = _first(headers, "host") or "localhost"
        if not set(host) <= _HOST_CHARS:
            host = "localhost"
        return "%s://%s/" % ("https" if secure else "http", host)


def _first(headers, name):
    values = headers.get(name)
    return values[0] if values else None


def _first_values(headers):
    return {name: values[0] for name, values in headers.items() if values}


class DiscoveryResource(resource.Resource):
    """The management site's fallback when there is no HTTP relaying door: what
    :class:`Discovery` answers, else ``otherwise`` (the site's 404)."""

    isLeaf = True

    def __init__(self, discovery, otherwise):
        super().__init__()
        self.discovery = discovery
        self.otherwise = otherwise

    def render(self, request):
        path = unquote(request.path.decode("utf-8", "replace")).strip("/")
        entity, suffix = self.discovery.namespace.resolve(path)
        headers = {name.decode("latin-1").lower(): [v.decode("latin-1") for v in values]
                   for name, values in request.requestHeaders.getAllRawHeaders()}
        query = request.uri.decode("latin-1").partition("?")[2]
        reply = self.discovery.answer(request.method.decode("latin-1"), path, entity, suffix, query, headers,
                                      request.isSecure())
        if reply is None:
            return self.otherwise.render(request)
        request.setResponseCode(reply.status)
        request.setHeader(b"content-type", reply.content_type.encode("ascii"))
        return reply.body
