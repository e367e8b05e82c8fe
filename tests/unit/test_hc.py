"""The Hybrid Connections control-message codec (relayd.wire.hc), both directions, byte for byte;
and the request-head helpers the relay uses with it.

Relay side: encodes accept/request, decodes renewToken/response.  Listener side (relayd's SDK
and bridge): encodes renewToken/response, decodes accept/request.  The strings "as hyco-ws /
hyco-https send it" are what those SDKs' ``JSON.stringify`` produces for the message objects they
build (tests/interop/node/node_modules/hyco-ws/lib/HybridConnectionWebSocketServer.js, renewToken;
hyco-https/lib/_hyco_outgoing.js, response: keys in that order, an array header sent as its
first value)."""

import pytest

from relayd.wire import hc
from relayd.transports.websocket import connect_headers, raw_headers


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
    assert hc.decode(b'{"renewToken":{"token":"SharedAccessSignature x"}}') == hc.RenewToken(
        "SharedAccessSignature x")
    response = hc.decode('{"response":{"requestId":"r","statusCode":"200","body":true,'
                         '"responseHeaders":{"Set-Cookie":"a"}}}')
    assert response == hc.Response(request_id="r", status_code=200, status_description=None,
                                   response_headers={"Set-Cookie": "a"}, body=True)
    # the optional members' defaults: no description, no headers, no body
    assert hc.decode(b'{"response":{"requestId":"r","statusCode":204}}') == hc.Response("r", 204, None, {}, False)


def test_decoded_messages_are_frozen():
    import dataclasses

    for message in (hc.decode(b'{"renewToken":{"token":"t"}}'),
                    hc.decode(b'{"response":{"requestId":"r","statusCode":200}}')):
        with pytest.raises(dataclasses.FrozenInstanceError):
            message.body = True


@pytest.mark.parametrize("payload, message", [
    (b"\xff", "not UTF-8"),
    ("nope", "not JSON"),
    ("[]", "one member"),
    ('{"a":1,"b":2}', "one member"),
    ('{"renewToken":[]}', "must be a JSON object"),
    ('{"renewToken":{}}', 'needs a string "token"'),
    ('{"renewToken":{"token":5}}', 'needs a string "token"'),
    ('{"response":{"requestId":5,"statusCode":200}}', 'needs a string "requestId"'),
    ('{"response":{"requestId":"r","statusCode":200,"statusDescription":5}}', '"statusDescription" must be a string'),
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
    from relayd.transports.http.soap import own_prefixes

    doc = (b'<d xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"><soap:address location="http://10.0.0.5:8000/"/>'
           b'<i schemaLocation="http://www.w3.org/2001/xml.xsd"/><i location="http://127.0.0.1:9/x.xsd"/></d>')
    assert own_prefixes(doc) == ["http://10.0.0.5:8000", "http://127.0.0.1:9"]


# -- listener -> relay: encoded by the listener SDK, decoded by the relay -------------------------

TOKEN = ("SharedAccessSignature sr=http%3A%2F%2F127.0.0.1%3A9090%2Fecho&sig=q3%2Bk%2F0Zr8h2WwE%3D"
         "&se=1764600000&skn=listen")


def test_encode_renew_token_is_what_hyco_ws_sends():
    assert hc.encode_renew_token(TOKEN) == '{"renewToken":{"token":"%s"}}' % TOKEN


def test_encode_response_exact_bytes():
    assert hc.encode_response("r-1", 200, "OK", {"content-type": "text/plain", "x-a": "1"}, True) == (
        '{"response":{"requestId":"r-1","statusCode":200,"statusDescription":"OK",'
        '"responseHeaders":{"content-type":"text/plain","x-a":"1"},"body":true}}')
    # the defaults: no description (null), no headers, no body
    assert hc.encode_response("r-2", 501) == (
        '{"response":{"requestId":"r-2","statusCode":501,"statusDescription":null,'
        '"responseHeaders":{},"body":false}}')
    # multi-valued headers go as lists; text is UTF-8, not \u escapes
    assert hc.encode_response("r", 500, "502 Bad Gateway (from the service)",
                              {"Set-Cookie": ["a=1", "b=2"], "X-Name": "Ünïcode"}).encode() == (
        b'{"response":{"requestId":"r","statusCode":500,"statusDescription":"502 Bad Gateway (from the service)",'
        b'"responseHeaders":{"Set-Cookie":["a=1","b=2"],"X-Name":"\xc3\x9cn\xc3\xafcode"},"body":false}}')


HYCO_WS_RENEW = b'{"renewToken":{"token":"' + TOKEN.encode() + b'"}}'
HYCO_HTTPS_RESPONSE = (b'{"response":{"requestId":"9f6f4a1e-2c0b-4d2e-8d9a-3b1f3f0c2a11","statusCode":201,'
                       b'"statusDescription":"Created","responseHeaders":{"content-type":"application/json",'
                       b'"set-cookie":"a=1","x-powered-by":"Express"},"body":true}}')


def test_relay_decodes_what_the_sdks_send():
    assert hc.decode(HYCO_WS_RENEW) == hc.RenewToken(token=TOKEN)
    assert hc.decode(HYCO_HTTPS_RESPONSE) == hc.Response(
        request_id="9f6f4a1e-2c0b-4d2e-8d9a-3b1f3f0c2a11", status_code=201, status_description="Created",
        response_headers={"content-type": "application/json", "set-cookie": "a=1", "x-powered-by": "Express"},
        body=True)
    # and from text, as a WebSocket text frame's payload may be handed over
    assert hc.decode(HYCO_HTTPS_RESPONSE.decode()) == hc.decode(HYCO_HTTPS_RESPONSE)


def test_relay_decodes_what_relayd_listeners_send():
    assert hc.decode(hc.encode_renew_token(TOKEN).encode()) == hc.RenewToken(TOKEN)
    message = hc.encode_response("r", 404, "Not Found", {"Set-Cookie": ["a", "b"]}, False)
    assert hc.decode(message.encode()) == hc.Response(
        request_id="r", status_code=404, status_description="Not Found",
        response_headers={"Set-Cookie": ["a", "b"]}, body=False)
    # non-ASCII text survives the round trip
    message = hc.encode_response("r", 500, "Ünïcode", {"X-Name": "é"}, True)
    assert hc.decode(message.encode()) == hc.Response("r", 500, "Ünïcode", {"X-Name": "é"}, True)
    # the SDK's own shape is byte-identical to hyco-https's for the same response
    assert hc.encode_response("9f6f4a1e-2c0b-4d2e-8d9a-3b1f3f0c2a11", 201, "Created",
                              {"content-type": "application/json", "set-cookie": "a=1",
                               "x-powered-by": "Express"}, True).encode() == HYCO_HTTPS_RESPONSE


@pytest.mark.parametrize("message", [HYCO_WS_RENEW, HYCO_HTTPS_RESPONSE,
                                     '{"response":{"requestId":"r","statusDescription":"Ü","statusCode":200}}'.encode()])
def test_a_message_cut_short_is_never_decoded(message):
    """A control message arrives whole (one WebSocket message); any prefix of one is refused,
    also one that splits a UTF-8 character."""
    for cut in range(len(message)):
        with pytest.raises(hc.MessageError):
            hc.decode(message[:cut])
    assert isinstance(hc.decode(message), (hc.RenewToken, hc.Response))


# -- relay -> listener: encoded by the relay, decoded by the listener SDK -------------------------

# Messages as Azure's relay service sends them (the shape the Hybrid Connections protocol
# reference shows: pretty-printed, remoteEndpoint on both, body a JSON boolean).
AZURE_ACCEPT = """{
    "accept" : {
        "address" : "wss://ns-node.servicebus.windows.net:443/$hc/orders?sb-hc-action=accept&sb-hc-id=Nzc0N2Q4",
        "id" : "8a0b1e37-4c3f-4bd4-9d41-0f2c2e1d6a52",
        "connectHeaders" : {
            "Host" : "ns.servicebus.windows.net",
            "Sec-WebSocket-Protocol" : "chat, superchat",
            "Sec-WebSocket-Extensions" : "permessage-deflate"
        },
        "remoteEndpoint" : {
            "address" : "10.1.1.1",
            "port" : 21012
        }
    }
}"""
AZURE_REQUEST = """{
    "request" : {
        "address" : "wss://ns-node.servicebus.windows.net:443/$hc/orders?sb-hc-action=request&sb-hc-id=YTJkNmU",
        "id" : "b7c3e1d2-5a6f-4e80-9c1d-2f3a4b5c6d7e",
        "requestTarget" : "/orders/abc?x=1",
        "method" : "POST",
        "remoteEndpoint" : {
            "address" : "10.1.1.1",
            "port" : 21013
        },
        "requestHeaders" : {
            "Host" : "ns.servicebus.windows.net",
            "Content-Type" : "application/json"
        },
        "body" : true
    }
}"""


def test_listener_decodes_what_azure_sends():
    assert hc.decode_from_relay(AZURE_ACCEPT) == hc.Accept(
        address="wss://ns-node.servicebus.windows.net:443/$hc/orders?sb-hc-action=accept&sb-hc-id=Nzc0N2Q4",
        id="8a0b1e37-4c3f-4bd4-9d41-0f2c2e1d6a52",
        connect_headers={"Host": "ns.servicebus.windows.net", "Sec-WebSocket-Protocol": "chat, superchat",
                         "Sec-WebSocket-Extensions": "permessage-deflate"},
        remote_endpoint={"address": "10.1.1.1", "port": 21012})
    request = hc.decode_from_relay(AZURE_REQUEST.encode())
    assert request == hc.Request(
        address="wss://ns-node.servicebus.windows.net:443/$hc/orders?sb-hc-action=request&sb-hc-id=YTJkNmU",
        id="b7c3e1d2-5a6f-4e80-9c1d-2f3a4b5c6d7e", request_target="/orders/abc?x=1", method="POST",
        request_headers={"Host": "ns.servicebus.windows.net", "Content-Type": "application/json"},
        body=True, remote_endpoint={"address": "10.1.1.1", "port": 21013})
    assert not request.is_rendezvous


def test_listener_decodes_what_relayd_sends():
    accept = hc.encode_accept("ws://h:1/$hc/echo?sb-hc-action=accept&sb-hc-id=k", "k",
                              {"Sec-WebSocket-Key": "abc=="}, "127.0.0.1", 4242)
    assert hc.decode_from_relay(accept.encode()) == hc.Accept(
        "ws://h:1/$hc/echo?sb-hc-action=accept&sb-hc-id=k", "k", {"Sec-WebSocket-Key": "abc=="},
        {"address": "127.0.0.1", "port": 4242})
    # no remote endpoint: an empty dict, as for connect headers left out
    assert hc.decode_from_relay('{"accept":{"address":"ws://h/$hc/e"}}') == hc.Accept("ws://h/$hc/e")
    full = hc.encode_request("wss://a", "r2", "/p/s?q=1", "POST", {"X-Multi": ["1", "2"]}, True)
    assert hc.decode_from_relay(full) == hc.Request("wss://a", "r2", "/p/s?q=1", "POST", {"X-Multi": ["1", "2"]}, True)
    call = hc.decode_from_relay(hc.encode_request("wss://a/$hc/p?sb-hc-action=request&sb-hc-id=r1", "r1"))
    assert call == hc.Request("wss://a/$hc/p?sb-hc-action=request&sb-hc-id=r1", "r1")
    assert call.is_rendezvous and not call.body


@pytest.mark.parametrize("payload, message", [
    (b"\xff", "not UTF-8"),
    ("{", "not JSON"),
    ('{"accept":{"address":"a"},"request":{}}', "one member"),
    ('{"accept":"ws://h"}', "must be a JSON object"),
    ('{"accept":{"id":"x"}}', 'accept needs a string "address"'),
    ('{"accept":{"address":7}}', 'accept needs a string "address"'),
    ('{"accept":{"address":"a","connectHeaders":[]}}', "'connectHeaders' must be an object"),
    ('{"accept":{"address":"a","id":5}}', "'id' must be a string"),
    ('{"request":{"id":"r"}}', 'request needs a "method"'),
    ('{"request":{"address":"a","method":"GET","requestHeaders":"x"}}', "'requestHeaders' must be an object"),
    ('{"request":{"method":"GET","requestTarget":["/"]}}', "'requestTarget' must be a string"),
    ('{"renewToken":{"token":"t"}}', "unknown control message 'renewToken'; expected accept or request"),
    ("[" * 20000 + "]" * 20000, "nests too deeply"),
])
def test_listener_decode_errors_say_what_is_wrong(payload, message):
    with pytest.raises(hc.MessageError) as e:
        hc.decode_from_relay(payload)
    assert message in str(e.value)


def test_listener_decode_limit_applies_to_bytes():
    big = ('{"accept":{"address":"%s"}}' % ("x" * hc.MAX_CONTROL_JSON)).encode()
    assert hc.decode_from_relay(big).address == "x" * hc.MAX_CONTROL_JSON
    with pytest.raises(hc.MessageError, match="larger than 65536 bytes"):
        hc.decode_from_relay(big, hc.MAX_CONTROL_JSON)


@pytest.mark.parametrize("message", [AZURE_ACCEPT.encode(), AZURE_REQUEST.encode()])
def test_a_relay_message_cut_short_is_never_decoded(message):
    for cut in range(len(message)):
        with pytest.raises(hc.MessageError):
            hc.decode_from_relay(message[:cut])
