"""The relay's per-rendezvous control messages (``accept``, ``request``) are encoded without
building and serialising a JSON document per message (issue 10 item 4): a fixed template with
the variable parts escaped by the JSON module's own string escaper.  The output is byte for byte
what ``json.dumps`` (compact, ``ensure_ascii=False``) gives for the same message, for hostile
strings too, and decodes back to the same values."""

import json
import random

import pytest

from relayd.wire import hc

HOSTILE = [
    "", "plain", 'quo"te', "back\\slash", "tab\there", "nl\nand\rcr", "nul\x00", "\x01\x1f\x7f",
    "\u2028\u2029", "é ü ß", "日本語", "emoji \U0001F600", "lone \ud800 surrogate", "</script>",
    "{\"accept\":1}", "&sb-hc-id=x", " spaced ",
]


def reference(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def random_text(rng):
    alphabet = [chr(c) for c in range(0, 0x80)] + ["é", "\u2028", "\ud83d", "\U0001F600", '"', "\\"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))


def accept_cases():
    rng = random.Random(4)
    yield "ws://h:1/$hc/e?sb-hc-action=accept&sb-hc-id=k", "id-1", {}, None, None
    yield "ws://h:1/$hc/e", "id-2", {"Host": "h:1"}, "127.0.0.1", 4242
    yield "ws://h:1/$hc/e", "id-3", {"Host": "h:1"}, "::1", None
    for text in HOSTILE:
        yield text, text, {text: text, "X-" + text: "v"}, text, 65535
    for _ in range(200):
        headers = {random_text(rng): random_text(rng) for _ in range(rng.randrange(0, 6))}
        yield random_text(rng), random_text(rng), headers, random_text(rng), rng.randrange(0, 65536)


@pytest.mark.parametrize("address, rid, headers, remote, port", list(accept_cases()))
def test_accept_is_byte_for_byte_what_json_dumps_gives(address, rid, headers, remote, port):
    body = {"address": address, "id": rid, "connectHeaders": dict(headers)}
    if remote is not None:
        body["remoteEndpoint"] = {"address": remote, "port": port}
    out = hc.encode_accept(address, rid, headers, remote, port)
    assert out == reference({"accept": body})
    assert json.loads(out) == {"accept": body}


def request_cases():
    rng = random.Random(5)
    yield ("wss://a/$hc/p?x", "r1"), {}
    yield ("wss://a", "r2", "/p/s?q=1", "POST", {"Content-Type": "text/plain"}, True), {}
    yield ("wss://a", "r3", "/", "GET", {}, False), {"remote_address": "10.0.0.1", "remote_port": 80}
    for text in HOSTILE:
        yield (text, text, text, text, {text: text}, False), {}
    for _ in range(100):
        headers = {random_text(rng): random_text(rng) for _ in range(rng.randrange(0, 6))}
        yield (random_text(rng), random_text(rng), random_text(rng), random_text(rng), headers,
               rng.random() < 0.5), {}


@pytest.mark.parametrize("args, kwargs", list(request_cases()))
def test_request_is_byte_for_byte_what_json_dumps_gives(args, kwargs):
    address, request_id = args[:2]
    msg = {"address": address, "id": request_id}
    if len(args) > 2:
        target, method, headers, body = args[2:]
        msg.update({"requestTarget": target, "method": method, "requestHeaders": dict(headers),
                    "body": bool(body)})
        if kwargs.get("remote_address") is not None:
            msg["remoteEndpoint"] = {"address": kwargs["remote_address"], "port": kwargs["remote_port"]}
    out = hc.encode_request(*args, **kwargs)
    assert out == reference({"request": msg})
    assert json.loads(out) == {"request": msg}


def test_values_that_are_not_strings_are_encoded_as_json_does():
    # list-valued headers or a port given as something else than an int: the generic encoder
    out = hc.encode_accept("a", "i", {"X": ["1", "2"], "Y": "y"}, "h", True)
    assert out == reference({"accept": {"address": "a", "id": "i", "connectHeaders": {"X": ["1", "2"], "Y": "y"},
                                        "remoteEndpoint": {"address": "h", "port": True}}})
    out = hc.encode_request("a", "r", "/", "GET", [("K", "v")], 1)
    assert out == reference({"request": {"address": "a", "id": "r", "requestTarget": "/", "method": "GET",
                                         "requestHeaders": {"K": "v"}, "body": True}})


def test_per_rendezvous_messages_build_no_json_document(monkeypatch):
    """The template path: encoding an accept or a request serialises no dict (the generic
    encoder is not called for string headers, as every door sends)."""
    def generic(obj):
        raise AssertionError("serialised a whole JSON document: %.60r" % (obj,))

    monkeypatch.setattr(hc, "_compact", generic)
    assert hc.encode_accept("ws://h/$hc/e", "i", {"Host": "h"}, "127.0.0.1", 1).startswith('{"accept":')
    assert hc.encode_request("ws://h/$hc/e", "r").startswith('{"request":')
    assert hc.encode_request("ws://h/$hc/e", "r", "/", "GET", {"Host": "h"}, False).startswith('{"request":')
