"""The request side of HTTP relaying, pure: the errors the door answers with, the target path
(dot segments kept inside their entity), and the headers forwarded to the listener (hop-by-hop,
framing and token headers removed, ``Via`` extended)."""

import re
from urllib.parse import quote, unquote

from relayd.wire import hc, http1

# A request body up to this size goes over the listener's control channel with its request
# (the Hybrid Connections protocol's limit); larger ones go by rendezvous.
SMALL_BODY = hc.MAX_CONTROL_BODY
# ``Expect`` is answered by the relay itself (100-continue), so it is not forwarded either; nor is
# the event marker (only the relay sets it, on events: a client must not make a listener such as
# ``bridge -H`` queue its ordinary requests as events).
NOT_FORWARDED = http1.HOP_BY_HOP | {"expect", hc.EVENT_HEADER.lower()}


class HttpError(Exception):
    def __init__(self, status, message, close=False, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.headers = headers  # extra response headers, e.g. Retry-After with a 503


_SEPARATORS = re.compile(r"[/\\]")


def normalise_path(raw_path, entity_depth=0, entity_name=""):
    """The path to forward for ``raw_path`` (percent-encoded, starting with '/').

    Without dot segments the path is returned as it came.  With them -- raw or percent-encoded
    (``..``, ``%2e%2e``, ``..%2f``; a backslash counts as a separator too) -- the decoded path is
    normalised (RFC 3986 remove_dot_segments) and returned re-encoded; if a ``..`` would remove
    one of the first ``entity_depth`` segments (the entity's own path) or climb above the root,
    :class:`HttpError` 400 is raised: the target escapes its entity.
    """
    decoded = unquote(raw_path)
    segments = _SEPARATORS.split(decoded.lstrip("/"))
    if not any(seg in (".", "..") for seg in segments):
        return raw_path
    out = []
    for seg in segments:
        if seg == "..":
            if len(out) <= entity_depth:
                raise HttpError(400, "the request target's dot segments ('..') climb out of %s; "
                                "request a path inside it" % ("the entity '%s'" % entity_name if entity_name
                                                                else "the relay's namespace"), close=True)
            out.pop()
        elif seg == ".":
            continue
        else:
            out.append(seg)
    if segments[-1] in (".", ".."):
        out.append("")  # "/a/b/.." is the directory "/a/"
    return "/" + quote("/".join(out), safe="/:@!$&'()*+,;=~-._")


def request_headers(pairs, via_host, drop):
    """The ``requestHeaders`` object: hop-by-hop, framing and token headers removed, Via extended."""
    out = {}
    via = None
    for name, value in pairs:
        low = name.lower()
        if low in NOT_FORWARDED or low in drop:
            continue
        if low == "via":
            via = value if via is None else via + ", " + value
            continue
        out[name] = out[name] + ", " + value if name in out else value
    out["Via"] = (via + ", " if via else "") + "1.1 " + via_host
    return out


def path_and_query(path, query):
    kept = hc.strip_sb_params(query)
    return path + ("?" + kept if kept else "")
