"""RFC 6455 frame codec (relayd.wire.wsframe) byte for byte, fed in fragments, and the in-place
masker (relayd.accel) pinned against the pure fallback, including Autobahn's private
``_nvx_xormasker`` cffi module it uses."""

import os

import pytest

from relayd import accel
from relayd.wire import wsframe
from relayd.wire.wsframe import FrameError, Header, encode_header, parse_header

MASK = b"\x37\xfa\x21\x3d"

# (opcode, fin, length, mask, exact header bytes), RFC 6455 5.2 minimal length encoding.
VECTORS = [
    (wsframe.BINARY, True, 0, None, b"\x82\x00"),
    (wsframe.TEXT, True, 5, None, b"\x81\x05"),
    (wsframe.TEXT, True, 5, MASK, b"\x81\x85" + MASK),           # RFC 6455 5.7 "Hello", masked
    (wsframe.BINARY, True, 125, None, b"\x82\x7d"),
    (wsframe.BINARY, False, 126, None, b"\x02\x7e\x00\x7e"),
    (wsframe.CONTINUATION, True, 126, MASK, b"\x80\xfe\x00\x7e" + MASK),
    (wsframe.BINARY, True, 65535, None, b"\x82\x7e\xff\xff"),
    (wsframe.BINARY, True, 65536, None, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    (wsframe.BINARY, True, 65536, MASK, b"\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00" + MASK),
    (wsframe.BINARY, True, 2**20 + 3, None, b"\x82\x7f\x00\x00\x00\x00\x00\x10\x00\x03"),
    (wsframe.BINARY, True, 2**63 - 1, None, b"\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff"),
    (wsframe.PING, True, 0, None, b"\x89\x00"),
    (wsframe.PONG, True, 125, MASK, b"\x8a\xfd" + MASK),
    (wsframe.CLOSE, True, 2, None, b"\x88\x02"),
]


@pytest.mark.parametrize("opcode,fin,length,mask,wire", VECTORS)
def test_encode_header_exact_bytes(opcode, fin, length, mask, wire):
    assert encode_header(opcode, fin, length, mask) == wire


@pytest.mark.parametrize("opcode,fin,length,mask,wire", VECTORS)
def test_parse_header_every_split_point(opcode, fin, length, mask, wire):
    expected = (Header(fin, 0, opcode, mask is not None, length, mask), len(wire))
    trailing = b"payload"
    for cut in range(len(wire)):
        assert parse_header(wire[:cut]) is None, cut
        # at an offset, in a memoryview, as the relay's parser sees it
        assert parse_header(memoryview(b"xx" + wire[:cut]), 2) is None, cut
    assert parse_header(wire) == expected
    assert parse_header(wire + trailing) == expected
    assert parse_header(memoryview(bytearray(b"abc" + wire + trailing)), 3) == expected


def test_header_roundtrip_at_length_boundaries():
    for length in (0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537, 2**20, 2**20 + 1, 2**32, 2**40):
        for mask in (None, MASK):
            wire = encode_header(wsframe.BINARY, True, length, mask)
            header, size = parse_header(wire)
            assert (header.length, header.mask, size) == (length, mask, len(wire))
            expected_size = 2 + (0 if length < 126 else 2 if length < 65536 else 8) + (4 if mask else 0)
            assert size == expected_size


def test_encode_header_rejects_a_bad_mask():
    with pytest.raises(ValueError):
        encode_header(wsframe.BINARY, True, 1, b"\x00\x01\x02")


BAD_HEADERS = [
    (b"\xc2\x00", 1002, "RSV"),                   # RSV1
    (b"\xa2\x00", 1002, "RSV"),                   # RSV2
    (b"\x92\x00", 1002, "RSV"),                   # RSV3
    (b"\x83\x00", 1002, "reserved opcode"),
    (b"\x87\x00", 1002, "reserved opcode"),
    (b"\x8b\x00", 1002, "reserved opcode"),
    (b"\x8f\x00", 1002, "reserved opcode"),
    (b"\x09\x00", 1002, "fragmented control"),    # ping without FIN
    (b"\x08\x00", 1002, "fragmented control"),
    (b"\x89\x7e\x00\x7e", 1002, "125"),           # ping of 126
    (b"\x88\x7f\x00\x00\x00\x00\x00\x00\x00\x7e", 1002, "125"),
    (b"\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00", 1002, "most significant bit"),
]


@pytest.mark.parametrize("wire,code,words", BAD_HEADERS)
def test_parse_header_errors(wire, code, words):
    with pytest.raises(FrameError) as info:
        parse_header(wire + MASK)
    assert info.value.code == code
    assert words in info.value.reason
    # Fed in fragments: either not enough yet (None) or the same error, never a header.
    for cut in range(len(wire)):
        try:
            assert parse_header(wire[:cut]) is None
        except FrameError as err:
            assert err.code == code


def test_errors_are_raised_as_soon_as_the_first_two_bytes_break_a_rule():
    with pytest.raises(FrameError):
        parse_header(b"\xc2\x7f")           # RSV set, 64-bit length not yet here
    with pytest.raises(FrameError):
        parse_header(b"\x89\xfe")           # long ping, rest not yet here


def test_control_helpers():
    assert [wsframe.is_control(op) for op in (0, 1, 2, 8, 9, 10)] == [False] * 3 + [True] * 3


def _reference_xor(data, mask, phase):
    return bytes(b ^ mask[(i + phase) % 4] for i, b in enumerate(data))


LENGTHS = [0, 1, 2, 3, 4, 5, 15, 16, 17, 31, 33, 63, 64, 65, 127, 128, 129, 200, 255, 256, 257,
           1000, 4095, 4097, 65535, 65536 + 7]


@pytest.mark.parametrize("length", LENGTHS)
def test_xor_mask_pure_matches_reference(length):
    data = os.urandom(length)
    for phase in range(6):
        buf = bytearray(data)
        wsframe.xor_mask(buf, MASK, phase)
        assert bytes(buf) == _reference_xor(data, MASK, phase)


@pytest.mark.parametrize("length", LENGTHS)
def test_accel_in_place_matches_pure(length):
    data = os.urandom(length + 16)
    for phase in range(8):
        for start in (0, 1, 3, 8):             # unaligned views into a larger buffer
            pure = bytearray(data)
            wsframe.xor_mask(memoryview(pure)[start:start + length], MASK, phase)
            fast = bytearray(data)
            accel.xor_in_place(memoryview(fast)[start:start + length], MASK, phase)
            assert fast == pure, (length, phase, start)


def test_nvx_private_module_pinned():
    """relayd.accel builds on Autobahn's private ``_nvx_xormasker`` cffi module: it must import,
    and its in-place process over a caller's buffer, mask rotated for the phase, must equal the
    pure fallback at every length and phase (not only above accel.PURE_MAX)."""
    import _nvx_xormasker  # noqa: F401 - the private name accel uses; fails loudly if renamed
    assert accel.HAVE_NVX
    for length in LENGTHS:
        data = os.urandom(length)
        for phase in range(5):
            pure = bytearray(data)
            wsframe.xor_mask(pure, MASK, phase)
            fast = bytearray(data)
            accel._nvx_xor(memoryview(fast), MASK, phase)
            assert fast == pure, (length, phase)


def test_xor_in_place_split_across_calls_equals_one_call():
    data = os.urandom(70001)
    whole = bytearray(data)
    accel.xor_in_place(whole, MASK, 0)
    pieces = bytearray(data)
    view = memoryview(pieces)
    done = 0
    for size in (1, 2, 130, 7, 65536, 3):
        accel.xor_in_place(view[done:done + size], MASK, done)
        done += size
    accel.xor_in_place(view[done:], MASK, done)
    assert pieces == whole


def test_close_payload_roundtrip_and_rules():
    assert wsframe.encode_close() == b""
    assert wsframe.parse_close(b"") == (None, "")
    assert wsframe.encode_close(1000, "bye") == b"\x03\xe8bye"
    assert wsframe.parse_close(b"\x03\xe8bye") == (1000, "bye")
    assert wsframe.parse_close(b"\x0f\xa0") == (4000, "")
    for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 4999):
        assert wsframe.parse_close(wsframe.encode_close(code, "é")) == (code, "é")
    for code in (0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535):
        with pytest.raises(FrameError) as info:
            wsframe.parse_close(code.to_bytes(2, "big"))
        assert info.value.code == 1002 and str(code) in info.value.reason
        with pytest.raises(ValueError):
            wsframe.encode_close(code)
    with pytest.raises(FrameError) as info:
        wsframe.parse_close(b"\x03")
    assert info.value.code == 1002
    with pytest.raises(FrameError) as info:
        wsframe.parse_close(b"\x03\xe8\xce\xba\xe1\xbd")     # cut inside a character
    assert info.value.code == 1007
    with pytest.raises(ValueError):
        wsframe.encode_close(None, "reason without code")


def test_encode_close_cuts_a_long_reason_at_a_character_boundary():
    payload = wsframe.encode_close(1001, "é" * 100)       # 200 bytes of UTF-8
    assert len(payload) <= 125
    assert wsframe.parse_close(payload) == (1001, "é" * 61)
