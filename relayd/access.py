"""Door-side access checks shared by every front door: find the token, verify it for an entity.

Wraps the pure :mod:`relayd.auth` with the relay's namespace (entity- then namespace-level
rules) and the host names the relay answers to.
"""

import uuid
from datetime import datetime, timezone

from relayd import auth

TOKEN_HINT = (
    "pass a SAS token in the sb-hc-token query parameter or the ServiceBusAuthorization header "
    "(make one with: relayd token --rule NAME --key KEY --uri URI)"
)


def tracking_id():
    return str(uuid.uuid4())


def one_line(text, limit=512):
    """Text safe for an HTTP status line or header: control characters and line breaks
    folded to single spaces, length bounded (no response splitting)."""
    cleaned = "".join(c if c.isprintable() else " " for c in str(text))
    return " ".join(cleaned.split())[:limit]


def with_tracking(message, tracking=None):
    """Azure-style status description: the message plus a tracking id and a timestamp."""
    message = one_line(message)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return "%s. TrackingId:%s, Timestamp:%s" % (message.rstrip("."), tracking or tracking_id(), stamp)


def candidate_hosts(request_host, public_url_host):
    hosts = []
    for host in (request_host, public_url_host):
        if host:
            host = host.lower()
            if host.startswith("["):
                host = host[1:].split("]", 1)[0]
            elif host.count(":") == 1:
                host = host.split(":", 1)[0]
            if host not in hosts:
                hosts.append(host)
    return hosts or ["localhost"]


def authorize(namespace, entity, token, right, hosts, now):
    """Verify ``token`` grants ``right`` on ``entity``; raise :class:`relayd.auth.AuthError` if not."""
    if not token:
        raise auth.Unauthorized("a SAS token is required for '%s': %s" % (entity.path, TOKEN_HINT))
    rules = namespace.rules_for(entity)
    failure = None
    for host in hosts:
        try:
            return auth.verify_token(token, "http://%s/%s" % (host, entity.path), rules, right, now)
        except auth.Forbidden as e:
            failure = e
    raise failure
