"""relayd.wire.nmf_session: the records a net.tcp publisher sends after its preamble, read
incrementally, byte for byte against the captures of [MC-NMF] traffic quoted in tests/unit/test_nmf.py (Duplex capture)."""

import pytest

from relayd.wire import nmf
from relayd.wire.nmf import NmfFault
from relayd.wire.nmf_session import END, ENVELOPE, PREAMBLE_END, SessionReader

NS = b"http://schemas.microsoft.com/ws/2006/05/framing/faults/"
ENVELOPE_199 = bytes.fromhex("06c701") + bytes(range(199))
# NMF-CAPTURES.md, Duplex: after the preamble the client sends PreambleEnd, one SizedEnvelope
# of 199 bytes (size C7 01), then End
DUPLEX_AFTER = bytes.fromhex("0c") + ENVELOPE_199 + bytes.fromhex("07")


def feed_all(reader, data, step):
    out = []
    for i in range(0, len(data), step):
        out += reader.feed(data[i:i + step])
    return out


@pytest.mark.parametrize("step", [1, 2, 3, 7, 200, 1000])
def test_duplex_capture_in_fragments(step):
    reader = SessionReader(max_message=65536)
    records = feed_all(reader, DUPLEX_AFTER, step)
    assert records == [(PREAMBLE_END, b"\x0c"), (ENVELOPE, ENVELOPE_199), (END, b"\x07")]
    assert reader.ended


def test_envelopes_are_whole_records_in_order():
    payloads = [b"a" * n for n in (0, 1, 127, 128, 300, 16384)]
    data = b"\x0c" + b"".join(b"\x06" + nmf.encode_varint(len(p)) + p for p in payloads) + b"\x07"
    records = feed_all(SessionReader(max_message=16384), data, 5)
    assert [r for kind, r in records if kind == ENVELOPE] == [
        b"\x06" + nmf.encode_varint(len(p)) + p for p in payloads]


def test_oversize_envelope_fault_from_its_size_alone():
    reader = SessionReader(max_message=199)
    assert reader.feed(b"\x0c" + ENVELOPE_199) == [(PREAMBLE_END, b"\x0c"), (ENVELOPE, ENVELOPE_199)]
    with pytest.raises(NmfFault) as e:
        reader.feed(bytes.fromhex("06c801"))  # 200 bytes announced, none sent
    assert e.value.name == "MaxMessageSizeExceededFault"
    assert e.value.record == b"\x08\x52" + NS + b"MaxMessageSizeExceededFault"
    assert len(e.value.record) == 2 + 0x52
    with pytest.raises(NmfFault):  # a failed reader stays failed
        reader.feed(b"\x07")


def test_huge_or_malformed_size_is_max_message_fault():
    for size in (bytes.fromhex("ffffffff07"), bytes.fromhex("ffffffffff"), bytes.fromhex("8080808010")):
        with pytest.raises(NmfFault) as e:
            SessionReader(max_message=65536).feed(b"\x0c\x06" + size)
        assert e.value.name == "MaxMessageSizeExceededFault"


def test_upgrade_request_is_upgrade_invalid():
    with pytest.raises(NmfFault) as e:
        SessionReader(max_message=100).feed(b"\x09\x13application/ssl-tls")
    assert e.value.name == "UpgradeInvalid"
    assert e.value.record == b"\x08\x45" + NS + b"UpgradeInvalid"


@pytest.mark.parametrize("data", [
    b"\x06\x01a",  # an envelope before PreambleEnd
    b"\x0c\x05\x01a\x00",  # UnsizedEnvelope (streamed transfer)
    b"\x0c\x0c",  # a second PreambleEnd
    b"\x0c\x00\x01\x00",  # a new preamble
    b"\x0c\xff",
])
def test_unexpected_record_is_unsupported_mode(data):
    with pytest.raises(NmfFault) as e:
        feed_all(SessionReader(max_message=100), data, 1)
    assert e.value.name == "UnsupportedMode"
    assert e.value.record == b"\x08\x46" + NS + b"UnsupportedMode"


def test_buffers_at_most_one_record():
    reader = SessionReader(max_message=1000)
    reader.feed(b"\x0c\x06\xe8\x07" + b"x" * 999)
    assert reader.buffered == 3 + 999
    assert reader.feed(b"x") == [(ENVELOPE, b"\x06\xe8\x07" + b"x" * 1000)]
    assert reader.buffered == 0


def test_nothing_after_end():
    reader = SessionReader(max_message=10)
    assert reader.feed(b"\x0c\x07") == [(PREAMBLE_END, b"\x0c"), (END, b"\x07")]
    with pytest.raises(RuntimeError):
        reader.feed(b"\x06\x00")
