"""Only the relay marks a request as an event: a client's own ``X-Relayd-Event`` header (any
letter case) is not forwarded to the listener of an ordinary entity."""

from relayd.transports.http.request import request_headers
from relayd.wire import hc


def test_a_clients_event_marker_is_not_forwarded():
    pairs = [("x-RELAYD-event", "multicast"), (hc.EVENT_HEADER, "oneway"), ("Accept", "*/*")]
    out = request_headers(pairs, "relay.example", set())
    assert {k.lower() for k in out} == {"accept", "via"}
    assert out["Accept"] == "*/*"
