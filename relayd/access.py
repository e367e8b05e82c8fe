"""Door-side access checks shared by every front door: find the token, verify it for an entity.

Wraps the pure :mod:`relayd.wire.sas` with the relay's namespace (entity- then namespace-level
rules) and the host names the relay answers to.
"""

import uuid
import weakref
from datetime import datetime, timezone

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
    at the time it is revoked.  Held weakly: a connection that is gone drops out by itself."""

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
            if protocol is not None and hasattr(protocol, "close"):
                protocol.close(REVOKED_CODE, REVOKED_REASON)
                closed += 1
        return closed


class RefusalLog:
    """Logs refused handshakes without letting a storm of them flood the log.

    Per cause (door and status, e.g. ``("HC connect", 401)``) the first ``burst`` refusals in
    each ``interval`` seconds are logged in full; the rest are only counted, and one summary
    line per cause ("... and N more refused like it in the last 60 s") follows when the
    interval ends.  ``clock`` is the reactor (or a ``task.Clock`` in tests).
    """

    def __init__(self, log, clock, burst, interval):
        self.log = log
        self.clock = clock
        self.burst = burst
        self.interval = interval
        self._windows = {}  # cause -> [window start, logged, suppressed]
        self._timer = None

    def refused(self, cause, format, **fields):
        now = self.clock.seconds()
        window = self._windows.get(cause)
        if window is None or now - window[0] >= self.interval:
            if window is not None and window[2]:
                self._summary(cause, window[2])
            window = self._windows[cause] = [now, 0, 0]
        if window[1] < self.burst:
            window[1] += 1
            self.log.info(format, **fields)
            return
        window[2] += 1
        if self._timer is None:
            self._timer = self.clock.callLater(self.interval, self._flush)

    def _summary(self, cause, count):
        door, status = cause
        self.log.info("{door}: {count} more handshakes refused with {status} in the last {interval} s "
                      "(logged the first {burst} of each interval)",
                      door=door, count=count, status=status, interval=self.interval, burst=self.burst)

    def _flush(self):
        self._timer = None
        now = self.clock.seconds()
        pending = False
        for cause, window in list(self._windows.items()):
            if now - window[0] >= self.interval:
                if window[2]:
                    self._summary(cause, window[2])
                del self._windows[cause]
            elif window[2]:
                pending = True
        if pending:
            self._timer = self.clock.callLater(self.interval, self._flush)

    def stop(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
