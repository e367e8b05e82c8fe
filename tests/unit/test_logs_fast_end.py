"""The end line's cheaper path (issue 12 item 7, one line per HTTP request): :func:`relayd.logs.log_end`
renders its text itself and the text observer takes its time stamp from a per-second cache; the
lines must be exactly what Twisted's own formatting writes."""

import io
import json

from twisted.logger import LogLevel, LogPublisher, Logger, formatEventAsClassicLogText, formatTime

from relayd import logs

END = dict(door="http", entity="a{b}c", peer="[::1]:5000", status=404, bytes_up=0,
           bytes_down=0, duration=0.25, tracking="-")


def emitted(fmt="text"):
    out, seen = io.StringIO(), []
    publisher = LogPublisher(logs.make_observer(out, LogLevel.info, fmt), seen.append)
    logs.log_end(log=Logger(namespace=logs.END_NAMESPACE, observer=publisher), **END)
    return out.getvalue(), seen[0]


def test_the_text_line_is_twisteds_own():
    text, event = emitted()
    as_twisted = dict(event, log_format=logs.END_FORMAT)  # the same event with the field format
    assert text == formatEventAsClassicLogText(as_twisted)
    assert "http a{b}c from [::1]:5000: 404, 0 bytes up, 0 bytes down in 0.250 s (tracking -)" in text


def test_the_json_line_keeps_every_field_and_no_format():
    text, _ = emitted("json")
    record = json.loads(text)
    assert {k: record[k] for k in logs.END_FIELDS} == END
    assert record["message"].startswith("http a{b}c from")
    assert "log_format" not in record and "format" not in record


def test_the_cached_time_is_formattimes_across_seconds():
    for when in (1764619200.0, 1764619200.999, 1764619201.0, 1764619199.5, None):
        assert logs.format_time(when) == formatTime(when)
