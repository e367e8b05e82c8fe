"""Door-side access checks shared by every front door: find the token, verify it for an entity.

Wraps the pure :mod:`relayd.wire.sas` with the relay's namespace (entity- then namespace-level
rules) and the host names the relay answers to.
"""

import uuid
import weakref
from datetime import datetime, timezone

from relayd.logs import RateLimitedLog
from relayd.wire import sas
from relayd.wire.token_memo import VerifiedSignatures

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


# Tokens whose signature matched (senders and listeners re-use one token for many connections).
SIGNATURES = VerifiedSignatures()


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
    """Verify ``token`` grants ``right`` on ``entity``; raise :class:`relayd.wire.sas.AuthError` if not."""
    if not token:
        raise sas.Unauthorized("a SAS token is required for '%s': %s" % (entity.path, TOKEN_HINT))
    rules = namespace.rules_for(entity)
    failure = None
    for host in hosts:
        try:
            return sas.verify_token(token, "http://%s/%s" % (host, entity.path), rules, right, now,
                                    signatures=SIGNATURES)
        except sas.Forbidden as e:
            failure = e
    raise failure


# A connection whose token's rule was deleted, or whose signing key was regenerated, is closed
# with this WebSocket close code and reason (docs/operations.rst "Keys and rules at run time").
REVOKED_CODE = 1008
REVOKED_REASON = "the SAS rule or key that signed this connection's token was deleted or regenerated"


class Grants:
    """Connections held open on a verified token, and the rule and key that signed it, so that
    deleting the rule or regenerating that key closes them (:meth:`revoke`).

    ``conn`` is a listener's control channel or a sender's transport: something whose
    ``protocol`` (or, behind the relay's wrappers, ``wrappedProtocol``) has ``close(code, reason)``
    at the time it is revoked -- or that has its own ``revoke(code, reason)`` (a TCP door's
    connection, whose ``close`` is its listener leg's end).  Held weakly: a connection that is
    gone drops out by itself."""

    def __init__(self):
        self._held = weakref.WeakKeyDictionary()  # conn -> (entity path, rule name, key)

    def hold(self, conn, entity, verified):
        if verified is not None and verified.key is not None:
            self._held[conn] = (entity.path, verified.rule.name, verified.key)

    def release(self, conn):
        self._held.pop(conn, None)

    def __len__(self):
        return len(self._held)

    def revoke(self, namespace):
        """Close every held connection whose rule and key are no longer among the rules in force
        for its entity; returns how many."""
        closed = 0
        for conn, (path, name, key) in list(self._held.items()):
            entity = namespace.get(path)
            rules = namespace.rules_for(entity) if entity is not None else namespace.rules
            if any(r.name == name and key in r.keys() for r in rules):
                continue
            self._held.pop(conn, None)
            protocol = getattr(conn, "wrappedProtocol", None) or getattr(conn, "protocol", None)
            close = getattr(conn, "revoke", None) or getattr(protocol, "close", None)
            if close is not None:
                close(REVOKED_CODE, REVOKED_REASON)
                closed += 1
        return closed


class RefusalLog(RateLimitedLog):
    """Refused handshakes per cause (door, status, peer host), rate-limited as
    :class:`relayd.logs.RateLimitedLog` is, with the door's own summary line."""

    refused = RateLimitedLog.emit

    def summarize(self, cause, count):
        self.log.info("{door}: {count} more handshakes refused with {status} in the last {interval} s "
                      "(from {peer}; logged the first {burst} of each interval)", door=cause[0],
                      count=count, status=cause[1], peer=cause[2] if len(cause) > 2 else "any peer",
                      interval=self.interval, burst=self.burst)
