"""relayd.logs in memory: the rate-limited refusal lines on a fake clock, the level and noise
filters of the observer ``twistd relayd`` logs to, the JSON format, the end-of-connection line."""

import io
import json

from twisted.application import service
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, Logger, globalLogPublisher
from twisted.python.failure import Failure

from relayd import logs
from tests.unit.test_refusal_log import Recorder


# -- RateLimitedLog ---------------------------------------------------------------------------

def test_first_burst_per_reason_and_peer_in_full_then_one_summary():
    clock, log = Clock(), Recorder()
    limited = logs.RateLimitedLog(log, clock, burst=3, interval=60)
    for i in range(50):
        limited.emit(("bad token", "10.0.0.1"), "refused {i} from 10.0.0.1", i=i)
    for i in range(2):
        limited.emit(("bad token", "10.0.0.2"), "refused {i} from 10.0.0.2", i=i)
    assert log.lines == ["refused 0 from 10.0.0.1", "refused 1 from 10.0.0.1", "refused 2 from 10.0.0.1",
                         "refused 0 from 10.0.0.2", "refused 1 from 10.0.0.2"]
    clock.advance(59)
    assert len(log.lines) == 5
    clock.advance(1)
    assert log.lines[5:] == ["bad token from 10.0.0.1: 47 more refusals in the last 60 s "
                             "(the first 3 of each interval are logged in full)"]
    # the next interval starts in full again, and no timer is left once nothing is pending
    limited.emit(("bad token", "10.0.0.1"), "refused again")
    assert log.lines[-1] == "refused again"
    clock.advance(120)
    assert len(log.lines) == 7 and not clock.getDelayedCalls()


def test_a_storm_from_many_peers_tracks_at_most_max_keys():
    clock, log = Clock(), Recorder()
    limited = logs.RateLimitedLog(log, clock, burst=1, interval=10, max_keys=4)
    for peer in range(1000):
        limited.emit(("403", "10.0.%d.%d" % divmod(peer, 256)), "refused {n}", n=peer)
    assert log.lines == ["refused 0", "refused 1", "refused 2", "refused 3"]
    assert len(limited._windows) == 5  # four peers and the overflow
    clock.advance(10)
    assert log.lines[-1].startswith("403 from other peers: 996 more refusals in the last 10 s")
    assert not limited._windows and not clock.getDelayedCalls()


def test_stop_cancels_the_summary_timer():
    clock = Clock()
    limited = logs.RateLimitedLog(Recorder(), clock, burst=0, interval=10)
    limited.emit(("x", "p"), "refused")
    assert clock.getDelayedCalls()
    limited.stop()
    assert not clock.getDelayedCalls()


# -- the observer: levels, factory noise, formats ------------------------------------------------

def _emit_through(observer, fn):
    globalLogPublisher.addObserver(observer)
    try:
        fn()
    finally:
        globalLogPublisher.removeObserver(observer)


def _three_levels(out, level, fmt="text"):
    log = Logger(namespace="relayd.test")
    observer = logs.make_observer(out, level, fmt)
    _emit_through(observer, lambda: (log.debug("a debug {n}", n=1), log.info("an info {n}", n=2),
                                     log.warn("a warning {n}", n=3), log.error("an error {n}", n=4)))
    return out.getvalue()


def test_levels():
    assert logs.level_for(verbose=True, quiet=False) == LogLevel.debug
    assert logs.level_for(verbose=False, quiet=True) == LogLevel.warn
    assert logs.level_for(verbose=False, quiet=False) == LogLevel.info
    default = _three_levels(io.StringIO(), LogLevel.info)
    assert "an info 2" in default and "a debug" not in default
    verbose = _three_levels(io.StringIO(), LogLevel.debug)
    assert "a debug 1" in verbose and "[relayd.test#debug]" in verbose
    quiet = _three_levels(io.StringIO(), LogLevel.warn)
    assert "an info" not in quiet and "a warning 3" in quiet and "an error 4" in quiet


def test_twisted_factory_start_and_stop_lines_are_dropped():
    """Pins the format Twisted's noisy factories log with: a plain Factory (noisy by default)
    started and stopped leaves nothing, another info line goes through."""
    out = io.StringIO()
    observer = logs.make_observer(out, LogLevel.debug)
    factory = Factory()
    assert factory.noisy
    _emit_through(observer, lambda: (factory.doStart(), factory.doStop(), Logger().info("kept")))
    assert "factory" not in out.getvalue().lower()
    assert "kept" in out.getvalue()


def test_json_lines_carry_time_level_namespace_message_and_fields():
    out = io.StringIO()
    log = Logger(namespace="relayd.test")
    observer = logs.make_observer(out, LogLevel.info, "json")
    _emit_through(observer, lambda: (
        log.info("listener {id} online on {path}", id="L1", path="echo", peer=("127.0.0.1", 5)),
        log.failure("it broke", Failure(ValueError("boom")), path="x")))
    first, second = [json.loads(line) for line in out.getvalue().splitlines()]
    assert first["level"] == "info" and first["namespace"] == "relayd.test"
    assert first["message"] == "listener L1 online on echo"
    assert first["id"] == "L1" and first["path"] == "echo" and first["peer"] == ["127.0.0.1", 5]
    assert first["time"].endswith("Z") and first["time"][:2] == "20"
    assert not any(key.startswith("log_") for key in first)  # no format string, no logger object
    assert second["level"] == "critical" and "ValueError: boom" in second["traceback"]


def test_legacy_log_messages_render_in_json():
    from twisted.python import log as legacy

    out = io.StringIO()
    _emit_through(logs.make_observer(out, LogLevel.info, "json"), lambda: legacy.msg("old style", "words"))
    record = json.loads(out.getvalue())
    assert record["message"] == "old style words"
    assert "isError" not in record and "system" not in record


def test_an_unknown_format_is_refused():
    try:
        logs.make_observer(io.StringIO(), LogLevel.info, "xml")
    except ValueError as e:
        assert "text, json" in str(e)
    else:
        raise AssertionError("no error")


def test_logged_service_hands_its_observer_to_the_twistd_application():
    observer = logs.make_observer(io.StringIO())
    child = service.Service()
    top = logs.LoggedService(child, observer)
    application = service.Application("relayd")
    top.setServiceParent(application)  # as twistd attaches makeService's service
    assert application.getComponent(ILogObserver) is observer
    assert list(top) == [child] and list(service.IServiceCollection(application)) == [top]
    # under another service (not an application) it is only a MultiService
    logs.LoggedService(service.Service(), observer).setServiceParent(service.MultiService())


# -- the end-of-connection line ------------------------------------------------------------------

END = dict(door="HC", entity="echo", peer="127.0.0.1:5000", status=1000, bytes_up=1234,
           bytes_down=5678, duration=2.5, tracking="5f0c")


def test_log_end_as_text_and_json():
    text, js = io.StringIO(), io.StringIO()
    for out, fmt in ((text, "text"), (js, "json")):
        _emit_through(logs.make_observer(out, LogLevel.info, fmt), lambda: logs.log_end(**END))
    assert text.getvalue().rstrip().endswith(
        "[relayd.end#info] HC echo from 127.0.0.1:5000: 1000, 1234 bytes up, 5678 bytes down in 2.500 s "
        "(tracking 5f0c)")
    record = json.loads(js.getvalue())
    assert record["namespace"] == logs.END_NAMESPACE
    assert {key: record[key] for key in logs.END_FIELDS} == END
    assert isinstance(record["duration"], float)


def test_log_end_takes_extra_fields_and_a_logger():
    seen = []
    log = Logger(namespace=logs.END_NAMESPACE, observer=seen.append)
    logs.log_end(log=log, kind="hybrid", **END)
    assert seen[0]["kind"] == "hybrid" and seen[0]["bytes_up"] == 1234


def test_peer_host():
    assert logs.peer_host("tcp4:10.1.2.3:5555") == "10.1.2.3"
    assert logs.peer_host("tcp:10.1.2.3:5555") == "10.1.2.3"
    assert logs.peer_host("tcp6:[::1]:5555") == "::1"
    assert logs.peer_host("tcp6:::1:5555") == "::1"


def test_the_hc_door_refusals_are_counted_per_peer():
    """access.RefusalLog (the HC door's) keys on (door, status, peer host): one peer's storm does
    not hide another's first refusals, and its summary names the peer."""
    from relayd.access import RefusalLog

    clock, log = Clock(), Recorder()
    refusals = RefusalLog(log, clock, burst=2, interval=60)
    for i in range(10):
        refusals.refused(("HC connect", 401, "10.0.0.1"), "refused {i}", i=i)
    refusals.refused(("HC connect", 401, "10.0.0.2"), "refused other")
    assert log.lines == ["refused 0", "refused 1", "refused other"]
    clock.advance(60)
    assert log.lines[-1] == ("HC connect: 8 more handshakes refused with 401 in the last 60 s "
                             "(from 10.0.0.1; logged the first 2 of each interval)")
