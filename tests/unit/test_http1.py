"""relayd.wire.http1 byte for byte: request heads, body framing, and both body decoders fed
whole, byte by byte and split at every point."""

import pytest

from relayd.wire import http1


def splits(data):
    """``data`` whole, one byte at a time, and cut in two at every point."""
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


def decode(decoder, fragments):
    out = []
    for fragment in fragments:
        out.extend(decoder.feed(fragment))
    return b"".join(out), decoder


# -- heads ------------------------------------------------------------------------------------

def test_a_request_head_is_parsed_with_values_stripped_and_order_kept():
    head = http1.parse_request_head(
        b"POST /a/b%20c?x=1 HTTP/1.1\r\nHost: relay\r\nX-A:  one \t\r\nx-a: two\r\nEmpty:\r\n")
    assert (head.method, head.target, head.version) == ("POST", "/a/b%20c?x=1", "HTTP/1.1")
    assert head.headers == [("Host", "relay"), ("X-A", "one"), ("x-a", "two"), ("Empty", "")]
    assert head.lowered == {"host": ["relay"], "x-a": ["one", "two"], "empty": [""]}
    assert head.joined("x-a") == "one,two"
    assert head.first("host") == "relay" and head.first("missing") is None


def test_latin1_header_values_pass_through():
    head = http1.parse_request_head(b"GET / HTTP/1.0\r\nX-Name: caf\xe9\r\n")
    assert head.headers == [("X-Name", "caf\xe9")] and head.version == "HTTP/1.0"


@pytest.mark.parametrize("raw", [
    b"GET /  HTTP/1.1",                      # two spaces
    b"GET / HTTP/1.1 extra",
    b"GET /\x00 HTTP/1.1",                   # NUL in the target
    b"GET /a\rb HTTP/1.1",                   # bare CR in the target
    b"G(T / HTTP/1.1",                       # method not a token
    b"GET / HTTP/2.0",
    b"GET / HTTP/1.1\x0b",
    b"GET\t/ HTTP/1.1",
])
def test_malformed_request_lines_are_400(raw):
    with pytest.raises(http1.HeadError) as e:
        http1.parse_request_head(raw + b"\r\nHost: x\r\n")
    assert e.value.status == 400 and e.value.message == "malformed HTTP request line"


@pytest.mark.parametrize("line, message", [
    (b" folded", "obsolete header line folding is not accepted"),
    (b"\tfolded", "obsolete header line folding is not accepted"),
    (b"No-Colon", "malformed header line 'No-Colon'"),
    (b"Space : x", "malformed header line 'Space : x'"),
    (b": empty-name", "malformed header line ': empty-name'"),
    (b"X-A: a\x00b", "the value of header 'X-A' contains a control character"),
    (b"X-A: a\rb", "the value of header 'X-A' contains a control character"),
    (b"X-A: a\nb", "the value of header 'X-A' contains a control character"),
    (b"X-A: a\x7fb", "the value of header 'X-A' contains a control character"),
])
def test_malformed_header_lines_are_400(line, message):
    with pytest.raises(http1.HeadError) as e:
        http1.parse_request_head(b"GET / HTTP/1.1\r\nHost: x\r\n" + line)
    assert e.value.status == 400 and e.value.message.startswith(message)


def test_tab_is_allowed_inside_a_value():
    assert http1.parse_request_head(b"GET / HTTP/1.1\r\nX: a\tb\r\n").headers == [("X", "a\tb")]


# -- framing ----------------------------------------------------------------------------------

def framing(*headers, limit=1000):
    raw = b"POST / HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers)
    return http1.body_framing(http1.parse_request_head(raw), limit)


def test_framing_of_lengths_and_chunked():
    assert framing() == (None, None)
    assert framing(b"Content-Length: 0") == (None, None)
    assert framing(b"Content-Length: 12") == ("length", 12)
    assert framing(b"Content-Length: 12", b"Content-Length: 12") == ("length", 12)
    assert framing(b"Content-Length: 12, 12") == ("length", 12)
    assert framing(b"Content-Length: 1000") == ("length", 1000)
    assert framing(b"Transfer-Encoding: chunked") == ("chunked", None)
    assert framing(b"Transfer-Encoding: Chunked", b"Content-Length: 5") == ("chunked", None)


@pytest.mark.parametrize("headers, status", [
    ((b"Content-Length: +5",), 400),
    ((b"Content-Length: -5",), 400),
    ((b"Content-Length: 0x5",), 400),
    ((b"Content-Length: 5 5",), 400),
    ((b"Content-Length: ",), 400),
    ((b"Content-Length: 5", b"Content-Length: 6"), 400),
    ((b"Content-Length: 5, 6",), 400),
    ((b"Content-Length: 1001",), 413),
    ((b"Transfer-Encoding: gzip, chunked",), 501),
    ((b"Transfer-Encoding: chunked, chunked",), 501),
    ((b"Transfer-Encoding: identity",), 501),
])
def test_framing_refusals(headers, status):
    with pytest.raises(http1.HeadError) as e:
        framing(*headers)
    assert e.value.status == status


def test_decoder_for():
    assert isinstance(http1.decoder_for("chunked", None), http1.ChunkedDecoder)
    assert http1.decoder_for("length", 3).remaining == 3
    assert http1.decoder_for(None, None) is None


# -- identity ---------------------------------------------------------------------------------

def test_identity_body_and_what_follows_at_every_split():
    wire = b"hello, body" + b"GET /next HTTP/1.1\r\n"
    for fragments in splits(wire):
        body, decoder = decode(http1.IdentityDecoder(11), fragments)
        assert body == b"hello, body"
        assert decoder.done and decoder.rest == b"GET /next HTTP/1.1\r\n"


def test_identity_body_not_done_until_the_last_byte():
    decoder = http1.IdentityDecoder(3)
    assert decoder.feed(b"ab") == [b"ab"] and not decoder.done
    assert decoder.feed(b"") == [] and not decoder.done
    assert decoder.feed(b"c") == [b"c"] and decoder.done and decoder.rest == b""


# -- chunked ----------------------------------------------------------------------------------

CHUNKED = (b"5\r\nhello\r\n"
           b"1;name=value;q=\"x y\"\r\n,\r\n"
           b"A\r\n world! 12\r\n"
           b"0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n")


def test_chunked_body_at_every_split_point():
    for fragments in splits(CHUNKED + b"NEXT"):
        body, decoder = decode(http1.ChunkedDecoder(), fragments)
        assert body == b"hello, world! 12"
        assert decoder.done and decoder.rest == b"NEXT"


def test_empty_chunked_body_at_every_split_point():
    for fragments in splits(b"0\r\n\r\n"):
        body, decoder = decode(http1.ChunkedDecoder(), fragments)
        assert body == b"" and decoder.done and decoder.rest == b""


def test_uppercase_and_leading_zero_sizes():
    body, decoder = decode(http1.ChunkedDecoder(), [b"0B\r\nhello world\r\n000\r\n\r\n"])
    assert body == b"hello world" and decoder.done


def test_bytes_fed_after_the_end_are_kept_as_rest():
    decoder = http1.ChunkedDecoder()
    assert decoder.feed(b"1\r\na\r\n0\r\n\r\nG") == [b"a"]
    assert decoder.feed(b"ET") == [] and decoder.rest == b"GET"


@pytest.mark.parametrize("wire", [
    b"x\r\n",                       # not hex
    b"0x5\r\nhello\r\n0\r\n\r\n",   # 0x prefix
    b"+5\r\nhello\r\n0\r\n\r\n",    # sign
    b"-1\r\n",
    b" 5\r\nhello\r\n",             # space before the size
    b"5 \r\nhello\r\n",             # space after the size (no extension)
    b"\r\n",                        # empty size
    b"5\r\nhelloXY",                # data not followed by CRLF
    b"5\r\nhello\n0\r\n\r\n",       # bare LF after the data
    b"5;a\x00b\r\nhello\r\n",       # NUL in an extension
    b"5;a\\b\r\nhello\r\n",         # backslash in an extension
    b"5;a\nb\r\nhello\r\n",         # bare LF in an extension
    b"5" + b";" * http1.MAX_CHUNK_SIZE_LINE + b"\r\n",
    b"5" + b";" * http1.MAX_CHUNK_SIZE_LINE,  # no CRLF yet, already too long
    b"0\r\n" + b"X: y\r\n" * (http1.MAX_TRAILER_BYTES // 6 + 1) + b"\r\n",
    b"0\r\n" + b"X" * (http1.MAX_TRAILER_BYTES + 1),
])
def test_malformed_chunked_framing_is_refused_at_every_split(wire):
    for fragments in splits(wire) if len(wire) < 64 else [[wire]]:
        decoder = http1.ChunkedDecoder()
        with pytest.raises(http1.BodyError):
            decode(decoder, fragments)


def test_a_chunk_size_line_at_the_limit_is_accepted():
    line = b"5;" + b"e" * (http1.MAX_CHUNK_SIZE_LINE - 3)  # with CRLF: one byte under the limit
    body, decoder = decode(http1.ChunkedDecoder(), [line + b"\r\nhello\r\n0\r\n\r\n"])
    assert body == b"hello" and decoder.done


def test_a_large_chunk_is_streamed_not_buffered():
    decoder = http1.ChunkedDecoder()
    assert decoder.feed(b"100000\r\n") == []
    assert decoder.feed(b"a" * 1000) == [b"a" * 1000]
    assert len(decoder.buf) == 0 and decoder.left == 0x100000 - 1000
