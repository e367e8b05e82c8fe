"""The control-message codec and request-head helpers, byte for byte."""

import pytest

from relayd.wire import hc
from relayd.transports.hybrid.websocket import connect_headers, raw_headers


def test_encode_accept_exact_bytes():
    out = hc.encode_accept(
        "ws://h:1/$hc/echo?sb-hc-action=accept&sb-hc-id=k", "id-1",
        {"Sec-WebSocket-Key": "abc==", "X-Ü": "é"}, "127.0.0.1", 4242,
    )
    assert out == (
        '{"accept":{"address":"ws://h:1/$hc/echo?sb-hc-action=accept&sb-hc-id=k","id":"id-1",'
        '"connectHeaders":{"Sec-WebSocket-Key":"abc==","X-Ü":"é"},'
        '"remoteEndpoint":{"address":"127.0.0.1","port":4242}}}'
    )


def test_encode_request_full_and_address_only():
    assert hc.encode_request("wss://a/$hc/p?x", "r1") == '{"request":{"address":"wss://a/$hc/p?x","id":"r1"}}'
    out = hc.encode_request("wss://a", "r2", "/p/s?q=1", "POST", {"Content-Type": "text/plain"}, True)
    assert out == ('{"request":{"address":"wss://a","id":"r2","requestTarget":"/p/s?q=1","method":"POST",'
                   '"requestHeaders":{"Content-Type":"text/plain"},"body":true}}')


def test_decode_renew_and_response():
    assert hc.decode(b'{"renewToken":{"token":"SharedAccessSignature x"}}') == (
        "renewToken", {"token": "SharedAccessSignature x"})
    kind, fields = hc.decode('{"response":{"requestId":"r","statusCode":"200","body":true,'
                                   '"responseHeaders":{"Set-Cookie":"a"}}}')
    assert kind == "response"
    assert fields == {"requestId": "r", "statusCode": 200, "statusDescription": None,
                      "responseHeaders": {"Set-Cookie": "a"}, "body": True}


@pytest.mark.parametrize("payload, message", [
    (b"\xff", "not UTF-8"),
    ("nope", "not JSON"),
    ("[]", "one member"),
    ('{"a":1,"b":2}', "one member"),
    ('{"renewToken":[]}', "must be a JSON object"),
    ('{"renewToken":{}}', 'needs a string "token"'),
    ('{"response":{"statusCode":200}}', '"requestId"'),
    ('{"response":{"requestId":"r","statusCode":"x"}}', "must be a number"),
    ('{"response":{"requestId":"r","statusCode":42}}', "out of range"),
    ('{"response":{"requestId":"r","statusCode":200,"responseHeaders":[]}}', "must be an object"),
    ('{"hello":{}}', "unknown control message 'hello'"),
    (b"x" * (hc.MAX_CONTROL_JSON + 1), "larger than"),
])
def test_decode_errors_say_what_is_wrong(payload, message):
    with pytest.raises(hc.MessageError) as e:
        hc.decode(payload)
    assert message in str(e.value)


def test_strip_sb_params_keeps_order_and_others():
    assert hc.strip_sb_params("b=2&sb-hc-token=x&a=1&SB-HC-ID=3&c=%20") == "b=2&a=1&c=%20"
    assert hc.strip_sb_params("") == ""


def test_rendezvous_address():
    addr = hc.rendezvous_address("http://relay:9090", "orders/eu", "/sub path", "x=1&sb-hc-action=connect",
                                       "accept", "k1")
    assert addr == "ws://relay:9090/$hc/orders/eu/sub%20path?x=1&sb-hc-action=accept&sb-hc-id=k1"
    assert hc.rendezvous_address("https://r", "e", "", "", "request", "k") == \
        "wss://r/$hc/e?sb-hc-action=request&sb-hc-id=k"


def test_raw_headers_keep_casing_and_folding():
    head = (b"GET /$hc/echo HTTP/1.1\r\nHost: a:1\r\nsec-websocket-key: K==\r\nX-Long: one\r\n two\r\n"
            b"X-Dup: 1\r\nX-Dup: 2\r\n\r\n")
    pairs = raw_headers(head)
    assert pairs == [("Host", "a:1"), ("sec-websocket-key", "K=="), ("X-Long", "one two"),
                     ("X-Dup", "1"), ("X-Dup", "2")]
    out = connect_headers(pairs + [("Sec-WebSocket-Extensions", "permessage-deflate"),
                                   ("ServiceBusAuthorization", "secret"), ("Authorization", "Bearer x")],
                          drop_authorization=False)
    assert out == {"Host": "a:1", "Sec-WebSocket-Key": "K==", "X-Long": "one two", "X-Dup": "1, 2",
                   "Authorization": "Bearer x"}
    assert "Authorization" not in connect_headers([("Authorization", "SharedAccessSignature x")], True)


def test_strip_sb_params_keeps_the_original_encoding():
    assert hc.strip_sb_params("wsdl") == "wsdl"
    assert hc.strip_sb_params("a=b%2Fc&sb-hc-token=x+y&q=1+2") == "a=b%2Fc&q=1+2"
    assert hc.strip_sb_params("sb%2Dhc%2Dtoken=x&k") == "k"


def test_wsdl_rewrite_only_touches_the_services_own_hosts():
    from relayd.transports.soap.door import own_prefixes

    doc = (b'<d xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"><soap:address location="http://10.0.0.5:8000/"/>'
           b'<i schemaLocation="http://www.w3.org/2001/xml.xsd"/><i location="http://127.0.0.1:9/x.xsd"/></d>')
    assert own_prefixes(doc) == ["http://10.0.0.5:8000", "http://127.0.0.1:9"]
