"""relayd's log: levels, the text and JSON formats, the end-of-connection line, rate-limited lines.

* :func:`make_observer` -- the observer ``twistd relayd`` logs to: events below the chosen level
  (``-v`` debug, default info, ``-q`` warnings and errors) and Twisted's "Starting factory" /
  "Stopping factory" lines are dropped; the rest written as twistd's classic text lines or, with
  ``--log-format json``, one JSON object per line (:func:`format_json`).
* :func:`observer_for_twistd` -- that observer on the file twistd's own options name
  (``--logfile``, ``-n``), for :class:`LoggedService` to hand to twistd.
* :func:`log_end` -- the one line per relayed connection or HTTP request at its end, under the
  namespace :data:`END_NAMESPACE` with the fields :data:`END_FIELDS`.
* :class:`RateLimitedLog` -- refusals per (reason, peer): the first ``burst`` in each interval
  in full, then one summary line.

No secret goes into a field: callers log paths and peers, never tokens or keys (the JSON format
writes every field of an event, not only those its message names).
"""

import json
import sys
from datetime import datetime, timezone

from twisted.application import service
from twisted.logger import (FileLogObserver, FilteringLogObserver, ILogObserver, LogLevel,
                            LogLevelFilterPredicate, Logger, PredicateResult, formatEvent, formatTime,
                            formatEventAsClassicLogText)
from twisted.python import components, logfile

LEVELS = {"verbose": LogLevel.debug, "default": LogLevel.info, "quiet": LogLevel.warn}
FORMATS = ("text", "json")

# What twisted.internet.protocol.Factory logs when a noisy factory starts or stops: one pair per
# outgoing connection of a client (pinned by tests/unit/test_logs.py).
FACTORY_NOISE = frozenset({"Starting factory {factory!r}", "Stopping factory {factory!r}"})

# Keys of an event that are Twisted's bookkeeping or the legacy log's, not the event's fields.
_LEGACY_KEYS = frozenset({"message", "isError", "system", "time", "format", "why", "failure"})

END_NAMESPACE = "relayd.end"
END_FIELDS = ("door", "entity", "peer", "status", "bytes_up", "bytes_down", "duration", "tracking")
END_FORMAT = ("{door} {entity} from {peer}: {status}, {bytes_up} bytes up, {bytes_down} bytes down "
              "in {duration:.3f} s (tracking {tracking})")
_end_log = Logger(namespace=END_NAMESPACE)


def level_for(verbose, quiet):
    """The lowest level logged: debug with ``-v``, warn with ``-q``, else info."""
    return LEVELS["verbose" if verbose else "quiet" if quiet else "default"]


def not_factory_noise(event):
    """A filter predicate: drop Twisted's per-factory start and stop lines."""
    if event.get("log_format") in FACTORY_NOISE:
        return PredicateResult.no
    return PredicateResult.maybe


def _json_value(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


def event_fields(event):
    """The event's own structured fields (not Twisted's ``log_*`` keys nor the legacy log's)."""
    return {key: _json_value(value) for key, value in event.items()
            if not key.startswith("log_") and key not in _LEGACY_KEYS}


def format_json(event):
    """One line: ``{"time", "level", "namespace", "message", ...the event's fields}``; a logged
    failure adds ``"traceback"``."""
    stamp = datetime.fromtimestamp(event.get("log_time", 0), timezone.utc)
    level = event.get("log_level")
    record = {
        "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (stamp.microsecond // 1000),
        "level": level.name if level is not None else "info",
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    for key, value in event_fields(event).items():
        record.setdefault(key, value)
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False) + "\n"


def format_time(when):
    """Twisted's ``formatTime`` (one-second resolution), computed once per second: a line per
    relayed connection and HTTP request (:func:`log_end`) would otherwise pay a strftime each."""
    if when is None:
        return formatTime(when)
    second = int(when)
    if _last_time[0] != second:
        _last_time[:] = [second, formatTime(second)]
    return _last_time[1]


_last_time = [None, ""]


def format_text(event):
    """twistd's classic text line (:func:`formatEventAsClassicLogText`), its time from :func:`format_time`."""
    return formatEventAsClassicLogText(event, formatTime=format_time)


def make_observer(out, level=LogLevel.info, fmt="text"):
    """An observer writing to the text file ``out``: ``level`` and above, no factory noise."""
    if fmt not in FORMATS:
        raise ValueError("log format %r: use one of %s" % (fmt, ", ".join(FORMATS)))
    formatter = format_json if fmt == "json" else format_text
    return FilteringLogObserver(FileLogObserver(out, formatter),
                                [LogLevelFilterPredicate(defaultLogLevel=level), not_factory_noise])


def twistd_log_file(logfile_name, nodaemon):
    """The file twistd itself would log to (as its own logger chooses): stdout for ``-n`` without
    ``--logfile`` or with ``--logfile -``, else the named file (``twistd.log`` by default),
    rotated on SIGUSR1 as twistd does."""
    if logfile_name == "-" or (nodaemon and not logfile_name):
        if not nodaemon:
            raise SystemExit("Daemons cannot log to stdout, exiting!")
        return sys.stdout
    out = logfile.LogFile.fromFullPath(logfile_name or "twistd.log")
    import signal

    if not signal.getsignal(signal.SIGUSR1):
        from twisted.internet import reactor

        signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(out.rotate))
    return out


def observer_for_twistd(twistd_options, level, fmt):
    """The observer for ``twistd relayd``, on the file twistd's options name; None with
    ``--syslog`` or ``--logger`` (twistd's own observer then, unfiltered)."""
    if twistd_options is None or twistd_options.get("syslog") or twistd_options.get("logger"):
        return None
    out = twistd_log_file(twistd_options.get("logfile"), twistd_options.get("nodaemon"))
    return make_observer(out, level, fmt)


class LoggedService(service.MultiService):
    """The service ``makeService`` hands twistd: ``child`` under it, and ``observer`` set on
    twistd's application when twistd attaches this service to it -- twistd logs to an
    ``ILogObserver`` component of its application instead of its own file observer."""

    def __init__(self, child, observer):
        super().__init__()
        self.observer = observer
        child.setServiceParent(self)

    def setServiceParent(self, parent):
        if self.observer is not None and isinstance(parent, components.Componentized):
            parent.setComponent(ILogObserver, self.observer)
        super().setServiceParent(parent)


def log_end(door, entity, peer, status, bytes_up, bytes_down, duration, tracking, log=None, **extra):
    """The line a relayed connection or HTTP request ends with, under :data:`END_NAMESPACE`:
    ``door`` (e.g. "HC", "HTTP", "TCP port"), ``entity`` (path), ``peer`` (host:port), ``status``
    (HTTP status, WebSocket close code or a word), bytes relayed each way (``bytes_up``: from the
    sender or client towards the listener), ``duration`` in seconds, ``tracking`` id.  ``extra``
    fields are added as they are (never a token or key)."""
    fields = dict(door=door, entity=entity, peer=peer, status=status, bytes_up=bytes_up,
                  bytes_down=bytes_down, duration=float(duration), tracking=tracking)
    # rendered here by str.format and handed to the logger as a format without fields: Twisted's
    # own formatter (pure Python) was most of the line's cost, one line per HTTP request
    text = END_FORMAT.format(**fields).replace("{", "{{").replace("}", "}}")
    (log or _end_log).info(text, **fields, **extra)


def peer_host(peer):
    """The host of a peer as Autobahn or Twisted write it ("tcp4:1.2.3.4:5" -> "1.2.3.4",
    "tcp6:[::1]:5" / "tcp6:::1:5" -> "::1"): refusals are counted per host, not per socket."""
    text = str(peer)
    for prefix in ("tcp4:", "tcp6:", "tcp:", "unix:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if ":" in text:
        text = text.rsplit(":", 1)[0]
    return text.strip("[]")


class RateLimitedLog:
    """Lines that a storm must not multiply, e.g. refused handshakes.

    Per key (a tuple ending with the peer: ``(reason, peer)``) the first ``burst`` lines in each
    ``interval`` seconds are logged in full; the rest are counted, and one summary line per key
    follows when the interval ends ("N more refusals ... in the last 60 s").  At most
    ``max_keys`` keys are tracked at once (memory and the summaries stay bounded under a storm
    from many peers): past that, a new key's lines count under ``(reason, "other peers")`` and
    are only summed up.  ``clock`` is the reactor or a ``task.Clock``.
    """

    OTHERS = "other peers"
    SUMMARY = ("{reason} from {peer}: {count} more refusals in the last {interval} s "
               "(the first {burst} of each interval are logged in full)")

    def __init__(self, log, clock, burst, interval, max_keys=256):
        self.log = log
        self.clock = clock
        self.burst = burst
        self.interval = interval
        self.max_keys = max_keys
        self._windows = {}  # key -> [window start, logged, suppressed]
        self._timer = None

    def emit(self, key, format, **fields):
        now = self.clock.seconds()
        window = self._windows.get(key)
        if window is not None and now - window[0] >= self.interval:
            if window[2]:
                self.summarize(key, window[2])
            window = None
        if window is None:
            if key not in self._windows and len(self._windows) >= self.max_keys:
                key = key[:-1] + (self.OTHERS,)
                window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = [now, 0, 0]
        if window[1] < self.burst and key[-1] != self.OTHERS:
            window[1] += 1
            self.log.info(format, **fields)
            return
        window[2] += 1
        if self._timer is None:
            self._timer = self.clock.callLater(self.interval, self._flush)

    def summarize(self, key, count):
        """The line for ``count`` refusals not logged in full: the key's last item is the peer."""
        self.log.info(self.SUMMARY, reason=" ".join(str(k) for k in key[:-1]), peer=key[-1], count=count,
                      interval=self.interval, burst=self.burst)

    def _flush(self):
        self._timer = None
        now = self.clock.seconds()
        pending = False
        for key, window in list(self._windows.items()):
            if now - window[0] >= self.interval:
                if window[2]:
                    self.summarize(key, window[2])
                del self._windows[key]
            elif window[2]:
                pending = True
        if pending:
            self._timer = self.clock.callLater(self.interval, self._flush)

    def stop(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
