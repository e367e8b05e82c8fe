"""Hostile control messages decode to a MessageError, never another exception (issue 8,
item 19): deep nesting (RecursionError in json) and numbers out of range (OverflowError)."""

import pytest

from relayd.wire import hc


@pytest.mark.parametrize("payload, message", [
    ("[" * 20000 + "]" * 20000, "nests too deeply"),
    ('{"response":' * 5000 + "1" + "}" * 5000, "nests too deeply"),
    ('{"response":{"requestId":"r","statusCode":1e400}}', '"statusCode" must be a number'),
    ('{"response":{"requestId":"r","statusCode":-1e400}}', '"statusCode" must be a number'),
    ('{"response":{"requestId":"r","statusCode":NaN}}', '"statusCode" must be a number'),
])
def test_hostile_messages_are_message_errors(payload, message):
    with pytest.raises(hc.MessageError) as e:
        hc.decode(payload.encode())
    assert message in str(e.value)


@pytest.mark.parametrize("payload", [
    "[" * 20000 + "]" * 20000,
    '{"accept":' * 5000 + "1" + "}" * 5000,
    '{"request":{"method":"GET","id":' + "[" * 20000 + "]" * 20000 + "}}",
])
def test_hostile_relay_messages_are_message_errors(payload):
    """The listener side's decoder holds to the same: a hostile relay (or a man in the middle
    of a ws:// control channel) cannot raise anything but MessageError in the SDK."""
    with pytest.raises(hc.MessageError) as e:
        hc.decode_from_relay(payload.encode())
    assert "nests too deeply" in str(e.value)
