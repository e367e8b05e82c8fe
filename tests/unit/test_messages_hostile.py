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
