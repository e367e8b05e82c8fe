"""The [MC-NMF] preamble codec, byte for byte, against bytes captured from Mono's WCF client."""

import pytest
from hypothesis import given, settings, strategies as st

from relayd.wire import nmf
from relayd.wire.nmf import NeedMore, NmfError, NmfFault
from relayd.wire.nmf_preamble import Preamble, PreambleParser

VIA = b"net.tcp://127.0.0.1:18808/echo"
assert len(VIA) == 0x1E

# /work/shared/NMF-CAPTURES.md, Duplex: Version 1.0, Mode Duplex, Via, KnownEncoding 08
DUPLEX_PREAMBLE = bytes.fromhex("000100" "0102" "021e") + VIA + bytes.fromhex("0308")
DUPLEX_AFTER = bytes.fromhex("0c" "06c701") + bytes(range(199)) + bytes.fromhex("07")
# Streamed transfer: Mode Singleton-Unsized, KnownEncoding 07
SINGLETON_PREAMBLE = bytes.fromhex("000100" "0101" "021e") + VIA + bytes.fromhex("0307")
SINGLETON_AFTER = (bytes.fromhex("0c" "05c501") + bytes(197 * [0x41]) + bytes.fromhex("00" "07"))

CAPTURES = [
    (DUPLEX_PREAMBLE, DUPLEX_AFTER, nmf.MODE_DUPLEX, 8),
    (SINGLETON_PREAMBLE, SINGLETON_AFTER, nmf.MODE_SINGLETON_UNSIZED, 7),
]

NS = b"http://schemas.microsoft.com/ws/2006/05/framing/faults/"
assert len(NS) == 55


def fault_name(data, **limits):
    """Feed ``data`` whole; return the fault name raised (fails if none)."""
    with pytest.raises(NmfFault) as e:
        PreambleParser(**limits).feed(data)
    assert e.value.record == nmf.fault(e.value.name)
    return e.value.name


def feed_bytewise(parser, data):
    """Feed one byte at a time; return (result, index of the byte that completed it)."""
    for i in range(len(data)):
        r = parser.feed(data[i:i + 1])
        if r is not None:
            return r, i
    return None, None


def with_via(via_bytes, enc=b"\x03\x08"):
    return bytes.fromhex("0001000102") + b"\x02" + nmf.encode_varint(len(via_bytes)) + via_bytes + enc


# --- varints -------------------------------------------------------------------------------

@pytest.mark.parametrize("value,hexed", [
    (0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (199, "c701"), (16383, "ff7f"),
    (16384, "808001"), (2 ** 21 - 1, "ffff7f"), (2 ** 21, "80808001"), (2 ** 28 - 1, "ffffff7f"),
    (2 ** 28, "8080808001"), (2 ** 31 - 1, "ffffffff07"),
])
def test_varint_encode_decode(value, hexed):
    assert nmf.encode_varint(value).hex() == hexed
    assert nmf.decode_varint(bytes.fromhex(hexed)) == (value, len(hexed) // 2)
    # at an offset, followed by other bytes
    buf = b"\xaa\xbb" + bytes.fromhex(hexed) + b"\xcc"
    assert nmf.decode_varint(buf, 2) == (value, 2 + len(hexed) // 2)


@pytest.mark.parametrize("bad", [-1, 2 ** 31, 2 ** 40, 1.0, True, "1", None])
def test_varint_encode_rejects(bad):
    with pytest.raises(ValueError):
        nmf.encode_varint(bad)


@pytest.mark.parametrize("hexed", ["", "80", "ff", "8080", "ffffff", "ffffffff", "c7"])
def test_varint_truncated_needs_more(hexed):
    with pytest.raises(NeedMore):
        nmf.decode_varint(bytes.fromhex(hexed))
    assert not issubclass(NeedMore, NmfError)


def test_varint_truncated_at_offset():
    with pytest.raises(NeedMore):
        nmf.decode_varint(b"\x01\x02", 2)


@pytest.mark.parametrize("hexed", [
    "8080808080",      # fifth byte still says "more": over the 5-byte limit, no 6th byte needed
    "ffffffffff01",
    "ffffffff08",      # 2**31: one past the limit
    "ffffffff0f",      # 2**32 - 1
    "808080807f",
])
def test_varint_too_long_or_overflow(hexed):
    with pytest.raises(NmfError):
        nmf.decode_varint(bytes.fromhex(hexed))


def test_varint_five_byte_edge_and_non_minimal():
    assert nmf.decode_varint(bytes.fromhex("8080808007")) == (7 << 28, 5)
    assert nmf.decode_varint(bytes.fromhex("8000")) == (0, 2)     # non-minimal is accepted
    assert nmf.decode_varint(bytes.fromhex("ff80808000")) == (127, 5)


@given(st.integers(0, 2 ** 31 - 1))
def test_varint_roundtrip(n):
    enc = nmf.encode_varint(n)
    assert 1 <= len(enc) <= 5
    assert nmf.decode_varint(enc + b"\x99") == (n, len(enc))
    for cut in range(len(enc)):
        with pytest.raises(NeedMore):
            nmf.decode_varint(enc[:cut])


# --- faults ---------------------------------------------------------------------------------

def test_endpoint_not_found_is_the_captured_record():
    rec = nmf.fault("EndpointNotFound")
    assert rec == b"\x08\x47" + b"http://schemas.microsoft.com/ws/2006/05/framing/faults/EndpointNotFound"
    assert len(rec) - 2 == 71
    assert rec.hex() == (
        "0847"
        "687474703a2f2f736368656d61732e6d6963726f736f66742e636f6d2f77732f323030362f30352f"
        "6672616d696e672f6661756c74732f456e64706f696e744e6f74466f756e64")


@pytest.mark.parametrize("const,name,size", [
    (nmf.ENDPOINT_NOT_FOUND, "EndpointNotFound", 0x47),
    (nmf.ENDPOINT_ACCESS_DENIED, "EndpointAccessDenied", 0x4B),
    (nmf.ENDPOINT_UNAVAILABLE, "EndpointUnavailable", 0x4A),
    (nmf.ENDPOINT_PAUSED, "EndpointPaused", 0x45),
    (nmf.SERVER_TOO_BUSY, "ServerTooBusy", 0x44),
    (nmf.CONTENT_TYPE_INVALID, "ContentTypeInvalid", 0x49),
    (nmf.CONTENT_TYPE_TOO_LONG, "ContentTypeTooLong", 0x49),
    (nmf.VIA_TOO_LONG, "ViaTooLong", 0x41),
    (nmf.UNSUPPORTED_MODE, "UnsupportedMode", 0x46),
    (nmf.UNSUPPORTED_VERSION, "UnsupportedVersion", 0x49),
    (nmf.UPGRADE_INVALID, "UpgradeInvalid", 0x45),
    (nmf.MAX_MESSAGE_SIZE_EXCEEDED, "MaxMessageSizeExceededFault", 0x52),
    (nmf.SERVICE_ACTIVATION_FAILED, "ServiceActivationFailed", 0x4E),
    (nmf.CONNECTION_DISPATCH_FAILED, "ConnectionDispatchFailed", 0x4F),
])
def test_every_fault_exact_bytes(const, name, size):
    assert const == name and name in nmf.FAULT_NAMES
    # size hand-computed: 55-byte namespace + the name
    assert size == 55 + len(name)
    assert nmf.fault(name) == bytes([0x08, size]) + NS + name.encode()
    assert nmf.fault_uri(name) == NS.decode() + name
    exc = NmfFault(name, "why")
    assert (exc.name, exc.detail, exc.record) == (name, "why", nmf.fault(name))
    assert isinstance(exc, NmfError) and isinstance(exc, ValueError)


def test_fault_hand_computed_hex():
    assert nmf.fault("ViaTooLong").hex() == "0841" + NS.hex() + "566961546f6f4c6f6e67"
    assert nmf.fault("UnsupportedMode")[:2] == bytes.fromhex("0846")
    assert nmf.fault("UnsupportedMode")[-15:] == b"UnsupportedMode"


def test_fault_names_complete_and_unknown_rejected():
    assert len(nmf.FAULT_NAMES) == 14 == len(set(nmf.FAULT_NAMES))
    with pytest.raises(ValueError):
        nmf.fault("NoSuchFault")
    with pytest.raises(ValueError):
        NmfFault("endpointnotfound")


# --- encoders -------------------------------------------------------------------------------

def test_encode_via_and_preamble_match_capture():
    assert nmf.encode_via(VIA.decode()) == b"\x02\x1e" + VIA
    assert nmf.encode_preamble(VIA.decode()) == DUPLEX_PREAMBLE
    assert nmf.encode_preamble(VIA.decode(), nmf.MODE_SINGLETON_UNSIZED, 7) == SINGLETON_PREAMBLE
    long_via = "net.tcp://h/" + "é" * 100   # 212 UTF-8 bytes: two-byte size
    assert nmf.encode_via(long_via)[:3] == b"\x02\xd4\x01"
    with pytest.raises(ValueError):
        nmf.encode_via("")


# --- the parser on the captures ---------------------------------------------------------------

@pytest.mark.parametrize("pre,after,mode,enc", CAPTURES)
def test_capture_whole(pre, after, mode, enc):
    p = PreambleParser().feed(pre + after)
    assert p == Preamble((1, 0), mode, VIA.decode(), enc, pre, after)
    assert p.raw + p.rest == pre + after


@pytest.mark.parametrize("pre,after,mode,enc", CAPTURES)
def test_capture_preamble_only(pre, after, mode, enc):
    p = PreambleParser().feed(pre)
    assert (p.raw, p.rest, p.via, p.mode, p.encoding) == (pre, b"", VIA.decode(), mode, enc)


@pytest.mark.parametrize("pre,after,mode,enc", CAPTURES)
def test_capture_byte_by_byte(pre, after, mode, enc):
    parser = PreambleParser()
    full = pre + after
    p, at = feed_bytewise(parser, full)
    assert at == len(pre) - 1             # done exactly with the last encoding byte
    assert (p.raw, p.rest) == (pre, b"")
    assert (p.version, p.mode, p.via, p.encoding) == ((1, 0), mode, VIA.decode(), enc)
    assert parser.consumed == len(pre)
    with pytest.raises(RuntimeError):
        parser.feed(b"\x0c")


@pytest.mark.parametrize("pre,after,mode,enc", CAPTURES)
def test_capture_every_split_point(pre, after, mode, enc):
    full = pre + after
    for i in range(len(full) + 1):
        parser = PreambleParser()
        first, second = full[:i], full[i:]
        p = parser.feed(first)
        if p is None:
            assert i < len(pre)
            p = parser.feed(second)
            unfed = b""
        else:
            assert i >= len(pre)
            unfed = second
        assert p.raw == pre
        assert p.raw + p.rest + unfed == full
        assert (p.mode, p.via, p.encoding) == (mode, VIA.decode(), enc)


def test_three_way_splits_on_duplex():
    full = DUPLEX_PREAMBLE + b"\x0c"
    for i in range(len(full)):
        for j in range(i, len(full) + 1):
            parser = PreambleParser()
            parts = [full[:i], full[i:j], full[j:]]
            for k, part in enumerate(parts):
                p = parser.feed(part)
                if p is not None:
                    break
            assert p is not None and p.raw == DUPLEX_PREAMBLE
            assert p.raw + p.rest + b"".join(parts[k + 1:]) == full


def test_empty_feeds_are_harmless():
    parser = PreambleParser()
    assert parser.feed(b"") is None
    assert parser.feed(DUPLEX_PREAMBLE[:7]) is None
    assert parser.feed(b"") is None
    assert parser.feed(DUPLEX_PREAMBLE[7:]).raw == DUPLEX_PREAMBLE


def test_upgrade_request_stays_in_rest():
    upgrade = b"\x09\x13application/ssl-tls"
    p = PreambleParser().feed(DUPLEX_PREAMBLE + upgrade)
    assert (p.raw, p.rest) == (DUPLEX_PREAMBLE, upgrade)


# --- error paths ------------------------------------------------------------------------------

@pytest.mark.parametrize("hexed,name", [
    ("01", "UnsupportedVersion"),          # Mode first
    ("02", "UnsupportedVersion"),
    ("0c", "UnsupportedVersion"),
    ("ff", "UnsupportedVersion"),
    ("16", "UnsupportedVersion"),          # a TLS ClientHello
    ("47", "UnsupportedVersion"),          # "GET"
    ("0002", "UnsupportedVersion"),        # major 2 -- no need to wait for the minor
    ("0000", "UnsupportedVersion"),
    ("000101", "UnsupportedVersion"),      # 1.1
    ("000100" "02", "UnsupportedMode"),    # Via where Mode is expected
    ("000100" "00", "UnsupportedMode"),
    ("000100" "0100", "UnsupportedMode"),
    ("000100" "0105", "UnsupportedMode"),
    ("000100" "01ff", "UnsupportedMode"),
    ("000100" "0102" "03", "EndpointNotFound"),    # no Via
    ("000100" "0102" "0c", "EndpointNotFound"),
    ("000100" "0102" "0200", "EndpointNotFound"),  # empty Via
    ("000100" "0102" "02ffffffffff", "ViaTooLong"),    # size varint over 5 bytes
    ("000100" "0102" "02ffffffff0f", "ViaTooLong"),    # size over 2**31-1
    ("000100" "0102" "02ffffffff07", "ViaTooLong"),    # size 2**31-1, no bytes needed
])
def test_prefix_faults(hexed, name):
    data = bytes.fromhex(hexed)
    assert fault_name(data) == name
    # and byte by byte: raised at the last byte at the latest, never earlier than needed
    parser = PreambleParser()
    with pytest.raises(NmfFault) as e:
        for i in range(len(data)):
            parser.feed(data[i:i + 1])
    assert e.value.name == name
    assert i == len(data) - 1


@pytest.mark.parametrize("via,ok", [
    (b"net.tcp://127.0.0.1:18808/echo", True),
    (b"NET.TCP://Host/echo", True),
    (b"sb://ns.example.com/hc/x?sb-hc-token=abc", True),
    (b"net.tcp://[::1]:808/a", True),
    ("net.tcp://h/\u00e9t\u00e9".encode(), True),
    (b"net.tcp://h", True),
    (b"http://h/echo", False),
    (b"https://h/echo", False),
    (b"/echo", False),
    (b"echo", False),
    (b"net.tcp:///echo", False),           # no host
    (b"net.tcp:echo", False),
    (b"net.tcp://h:99999/echo", False),    # port out of range
    (b"net.tcp://h:port/echo", False),
    (b"net.tcp://[::1/echo", False),       # broken IPv6 literal
    (b"net.tcp://h/ec\nho", False),        # control character
    (b"net.tcp://h/ec\x00ho", False),
    (b"net.tcp://h/ec\x7fho", False),
    (b"net.tcp://h/\xff\xfe", False),      # not UTF-8
    (b"net.tcp://h/\xc3", False),          # truncated UTF-8
])
def test_via_validation(via, ok):
    data = with_via(via)
    if ok:
        p = PreambleParser().feed(data)
        assert p.via == via.decode("utf-8") and p.raw == data
    else:
        assert fault_name(data) == "EndpointNotFound"


def test_via_at_max_and_one_over():
    via = b"net.tcp://h/" + b"a" * (100 - 12)
    assert len(via) == 100
    assert PreambleParser(max_via=100).feed(with_via(via)).via == via.decode()
    assert fault_name(with_via(via + b"b"), max_via=100) == "ViaTooLong"
    # the limit is checked when the size arrives, before any Via byte
    head = with_via(via + b"b")[:7]
    assert head[-2:] == b"\x02\x65"
    assert fault_name(head, max_via=100) == "ViaTooLong"


def test_via_default_limit_2048_with_two_byte_size():
    via = b"net.tcp://h/" + b"a" * (2048 - 12)
    assert PreambleParser().feed(with_via(via)).via == via.decode()
    assert fault_name(with_via(via + b"a")[:9]) == "ViaTooLong"


def test_max_preamble():
    # 5 (Version+Mode) + 2 (02 size) + via + 2 (encoding) bytes
    via = b"net.tcp://h/" + b"a" * (40 - 9 - 12)
    data = with_via(via)
    assert len(data) == 40
    assert PreambleParser(max_preamble=40).feed(data).raw == data
    assert fault_name(with_via(via + b"a"), max_preamble=40) == "ViaTooLong"
    # an extensible encoding that does not fit blames the content type
    ext = with_via(via, enc=b"\x04\x03a/b")
    assert PreambleParser(max_preamble=len(ext)).feed(ext).encoding == "a/b"
    assert fault_name(ext, max_preamble=len(ext) - 1) == "ContentTypeTooLong"


@pytest.mark.parametrize("enc,name", [
    ("0309", "ContentTypeInvalid"),
    ("03ff", "ContentTypeInvalid"),
    ("0c", "ContentTypeInvalid"),         # PreambleEnd with no encoding record
    ("09", "ContentTypeInvalid"),         # upgrade request before the encoding
    ("02", "ContentTypeInvalid"),         # a second Via
    ("0400", "ContentTypeInvalid"),       # empty content type
    ("0402fffe", "ContentTypeInvalid"),   # not UTF-8
    ("04ffffffffff", "ContentTypeTooLong"),
    ("04ffffffff0f", "ContentTypeTooLong"),
    ("048102", "ContentTypeTooLong"),     # 257 > 256, before the bytes arrive
])
def test_encoding_faults(enc, name):
    assert fault_name(with_via(VIA, enc=bytes.fromhex(enc))) == name


@pytest.mark.parametrize("value", range(9))
def test_every_known_encoding(value):
    p = PreambleParser().feed(with_via(VIA, enc=bytes([3, value])))
    assert p.encoding == value


def test_extensible_encoding():
    ct = "application/soap+xml; charset=utf-8"
    enc = b"\x04" + bytes([len(ct)]) + ct.encode()
    data = with_via(VIA, enc=enc)
    assert data == nmf.encode_preamble(VIA.decode(), encoding=ct)
    parser = PreambleParser()
    p, at = feed_bytewise(parser, data + b"\x0c")
    assert at == len(data) - 1
    assert (p.encoding, p.raw, p.rest) == (ct, data, b"")
    # exactly at max_content_type, and one over
    ct256 = "x/" + "y" * 254
    ok = with_via(VIA, enc=b"\x04\x80\x02" + ct256.encode())
    assert PreambleParser().feed(ok).encoding == ct256
    assert fault_name(with_via(VIA, enc=b"\x04\x81\x02" + ct256.encode() + b"z")) == "ContentTypeTooLong"
    assert PreambleParser(max_content_type=3).feed(with_via(VIA, enc=b"\x04\x03a/b")).encoding == "a/b"
    assert fault_name(with_via(VIA, enc=b"\x04\x04a/bc"), max_content_type=3) == "ContentTypeTooLong"
    u = "a/\u00e9"
    assert PreambleParser().feed(with_via(VIA, enc=b"\x04\x04" + u.encode())).encoding == u


def test_failed_parser_stays_failed():
    parser = PreambleParser()
    with pytest.raises(NmfFault) as first:
        parser.feed(b"\x00\x01\x00\x01\x09")
    with pytest.raises(NmfFault) as again:
        parser.feed(b"\x02")
    assert again.value is first.value and first.value.name == "UnsupportedMode"
    assert "mode 9" in first.value.detail


def test_constructor_limits():
    for kw in ({"max_via": 0}, {"max_content_type": 0}, {"max_preamble": 15}):
        with pytest.raises(ValueError):
            PreambleParser(**kw)


# --- rewrite_via --------------------------------------------------------------------------------

def test_rewrite_via_across_the_varint_boundary():
    via127 = "net.tcp://localhost:9000/" + "s" * (127 - 25)
    via128 = via127 + "t"
    assert (len(via127.encode()), len(via128.encode())) == (127, 128)
    full = DUPLEX_PREAMBLE + DUPLEX_AFTER

    out127 = nmf.rewrite_via(full, via127)
    assert out127 == (bytes.fromhex("0001000102") + b"\x02\x7f" + via127.encode()
                      + b"\x03\x08" + DUPLEX_AFTER)
    out128 = nmf.rewrite_via(full, via128)
    assert out128 == (bytes.fromhex("0001000102") + b"\x02\x80\x01" + via128.encode()
                      + b"\x03\x08" + DUPLEX_AFTER)
    assert len(out128) == len(out127) + 2
    # and back down across the boundary, to the exact original bytes
    assert nmf.rewrite_via(out128, VIA.decode()) == full
    assert nmf.rewrite_via(out127, VIA.decode()) == full
    p = PreambleParser().feed(out128)
    assert (p.via, p.rest, p.encoding) == (via128, DUPLEX_AFTER, 8)


def test_rewrite_via_preamble_only_and_singleton():
    new = "net.tcp://10.0.0.5:808/svc/echo"
    out = nmf.rewrite_via(SINGLETON_PREAMBLE, new)
    assert out == bytes.fromhex("0001000101") + b"\x02\x1f" + new.encode() + b"\x03\x07"
    assert nmf.rewrite_via(out, VIA.decode()) == SINGLETON_PREAMBLE
    assert nmf.rewrite_via(DUPLEX_PREAMBLE, VIA.decode()) == DUPLEX_PREAMBLE


@pytest.mark.parametrize("raw", [
    b"", b"\x00\x01\x00", b"\x01\x02\x00\x01\x02\x02", DUPLEX_PREAMBLE[5:],
    bytes.fromhex("0001000102" "03"),        # no Via
    DUPLEX_PREAMBLE[:6],                       # Via size missing
    DUPLEX_PREAMBLE[:20],                      # Via cut short
    bytes.fromhex("0001000102" "02ffffffffff"),
])
def test_rewrite_via_rejects(raw):
    with pytest.raises(NmfError):
        nmf.rewrite_via(raw, "net.tcp://h/x")


def test_rewrite_via_rejects_empty_via():
    with pytest.raises(ValueError):
        nmf.rewrite_via(DUPLEX_PREAMBLE, "")


# --- Via helpers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("via,path", [
    ("net.tcp://127.0.0.1:18808/echo", "echo"),
    ("net.tcp://h/echo/", "echo"),
    ("net.tcp://h//a/b//", "a/b"),
    ("net.tcp://h", ""),
    ("net.tcp://h/", ""),
    ("sb://ns.example.com/hc/x%20y/?sb-hc-token=t", "hc/x y"),
    ("net.tcp://h/a%2Fb%2F", "a/b"),
    ("net.tcp://h/caf%C3%A9#frag", "caf\u00e9"),
    ("net.tcp://h/\u00e9t\u00e9?x=1", "\u00e9t\u00e9"),
])
def test_via_path(via, path):
    assert nmf.via_path(via) == path


@pytest.mark.parametrize("via,token", [
    ("net.tcp://h/echo", None),
    ("net.tcp://h/echo?sb-hc-token=", None),
    ("net.tcp://h/echo?x=1", None),
    ("net.tcp://h/echo?sb-hc-token=abc", "abc"),
    ("net.tcp://h/echo?SB-HC-Token=abc", "abc"),
    ("net.tcp://h/echo?a=b&sb-hc-token=SharedAccessSignature%20sr%3Dhttp%253a%252f%252fh%26sig%3Dx%252By",
     "SharedAccessSignature sr=http%3a%2f%2fh&sig=x%2By"),   # decoded exactly once
    ("net.tcp://h/echo?sb-hc-token=SharedAccessSignature+sr%3Dx", "SharedAccessSignature sr=x"),
    ("net.tcp://h/echo?sb-hc-token=a&sb-hc-token=b", "a"),
    ("net.tcp://h/echo?sb-hc-token=abc#frag", "abc"),
])
def test_via_query_token(via, token):
    assert nmf.via_query_token(via) == token


# --- properties ----------------------------------------------------------------------------------

_segment = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=20)
_vias = st.builds(
    lambda scheme, host, port, segs: "%s://%s%s/%s" % (scheme, host, port, "/".join(segs)),
    st.sampled_from(["net.tcp", "sb", "NET.TCP"]),
    st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["", ":808", ":1", ":65535"]),
    st.lists(_segment, max_size=5),
).filter(lambda v: 0 < len(v.encode()) <= 2048)
_encodings = st.one_of(
    st.integers(0, 8),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(
        lambda s: len(s.encode()) <= 256),
)


def _chunks(data, cuts):
    points = sorted({min(c, len(data)) for c in cuts})
    out, last = [], 0
    for c in points + [len(data)]:
        out.append(data[last:c])
        last = c
    return out


@settings(max_examples=300, deadline=None)
@given(_vias, st.integers(1, 4), _encodings, st.binary(max_size=64),
       st.lists(st.integers(0, 3000), max_size=12))
def test_random_fragmentation_same_result(via, mode, encoding, tail, cuts):
    pre = nmf.encode_preamble(via, mode, encoding)
    full = pre + tail
    expected = PreambleParser().feed(full)
    assert expected == Preamble((1, 0), mode, via, encoding, pre, tail)
    parser = PreambleParser()
    chunks = _chunks(full, cuts)
    for k, chunk in enumerate(chunks):
        p = parser.feed(chunk)
        if p is not None:
            break
    assert p is not None
    unfed = b"".join(chunks[k + 1:])
    assert (p.version, p.mode, p.via, p.encoding, p.raw) == ((1, 0), mode, via, encoding, pre)
    assert p.raw + p.rest + unfed == full
    assert nmf.rewrite_via(full, via) == full


_valid_prefixes = st.sampled_from([
    b"", b"\x00", b"\x00\x01\x00", b"\x00\x01\x00\x01", b"\x00\x01\x00\x01\x02",
    b"\x00\x01\x00\x01\x02\x02", DUPLEX_PREAMBLE[:-2], DUPLEX_PREAMBLE[:-1],
    bytes.fromhex("000100010202") + b"\x1e",
])


@settings(max_examples=500, deadline=None)
@given(_valid_prefixes, st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=10),
       st.sampled_from([(2048, 256, 8192), (16, 4, 32), (64, 8, 16)]))
def test_garbage_only_ever_faults(prefix, junk, cuts, limits):
    data = prefix + junk
    parser = PreambleParser(*limits)
    fed = b""
    result = None
    try:
        for chunk in _chunks(data, cuts):
            fed += chunk
            result = parser.feed(chunk)
            if result is not None:
                break
    except NmfFault as e:
        assert e.name in nmf.FAULT_NAMES and e.record == nmf.fault(e.name)
        return
    if result is not None:
        assert result.raw + result.rest == fed
        assert len(result.raw) <= limits[2]
        assert len(result.via.encode()) <= limits[0]
