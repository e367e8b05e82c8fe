"""The memo of verified SAS signatures (relayd/wire/token_memo.py) used by verify_token: bounded,
skips only the HMAC of the identical token text, re-checks expiry, scope, rights and keys."""

import pytest
from twisted.internet.task import Clock

from relayd.wire import sas
from relayd.wire.token_memo import VerifiedSignatures

URI = "sb://relay.example/echo"
KEY = "k" * 44
SEND_RULE = sas.Rule("root", KEY, {"Send"})


def token(expiry, uri=URI, key=KEY):
    return sas.make_token(uri, "root", key, expiry)


@pytest.fixture
def hmacs(monkeypatch):
    """Counts HMAC computations (the real _mac still runs)."""
    calls = []
    real = sas._mac

    def counting(*a):
        calls.append(a)
        return real(*a)

    monkeypatch.setattr(sas, "_mac", counting)
    return calls


def test_second_use_of_identical_token_skips_the_hmac(hmacs):
    memo = VerifiedSignatures(4)
    t = token(1000)
    del hmacs[:]
    first = sas.verify_token(t, URI, [SEND_RULE], sas.SEND, 10, signatures=memo)
    assert len(hmacs) == 1 and len(memo) == 1
    second = sas.verify_token(t, URI, [SEND_RULE], sas.SEND, 11, signatures=memo)
    assert len(hmacs) == 1
    assert second == first


def test_bounded_oldest_goes(hmacs):
    memo = VerifiedSignatures(3)
    tokens = [token(1000 + i) for i in range(5)]
    del hmacs[:]
    for t in tokens:
        sas.verify_token(t, URI, [SEND_RULE], sas.SEND, 10, signatures=memo)
    assert len(memo) == 3
    assert memo.get(tokens[0], 10) is None and memo.get(tokens[1], 10) is None
    assert memo.get(tokens[4], 10) is not None
    del hmacs[:]
    sas.verify_token(tokens[0], URI, [SEND_RULE], sas.SEND, 10, signatures=memo)  # forgotten: HMAC again
    assert len(hmacs) == 1 and len(memo) == 3


def test_expiry_checked_on_every_use_with_a_fake_clock():
    clock = Clock()
    clock.advance(100)
    memo = VerifiedSignatures(4)
    t = token(105)
    sas.verify_token(t, URI, [SEND_RULE], sas.SEND, clock.seconds(), signatures=memo)
    clock.advance(5)  # up to and including se
    sas.verify_token(t, URI, [SEND_RULE], sas.SEND, clock.seconds(), signatures=memo)
    clock.advance(1)
    with pytest.raises(sas.Unauthorized, match="expired"):
        sas.verify_token(t, URI, [SEND_RULE], sas.SEND, clock.seconds(), signatures=memo)
    assert len(memo) == 0


def test_expired_token_never_remembered():
    memo = VerifiedSignatures(4)
    with pytest.raises(sas.Unauthorized, match="expired"):
        sas.verify_token(token(5), URI, [SEND_RULE], sas.SEND, 6, signatures=memo)
    assert len(memo) == 0


def test_rights_and_scope_rechecked_for_a_remembered_token():
    memo = VerifiedSignatures(4)
    t = token(1000)
    sas.verify_token(t, URI, [SEND_RULE], sas.SEND, 10, signatures=memo)
    with pytest.raises(sas.Forbidden, match="but not Listen"):
        sas.verify_token(t, URI, [SEND_RULE], sas.LISTEN, 10, signatures=memo)
    with pytest.raises(sas.Forbidden, match="does not cover"):
        sas.verify_token(t, "sb://relay.example/other", [SEND_RULE], sas.SEND, 10, signatures=memo)


def test_changed_key_of_the_rule_is_not_trusted_from_the_memo():
    memo = VerifiedSignatures(4)
    t = token(1000)
    sas.verify_token(t, URI, [SEND_RULE], sas.SEND, 10, signatures=memo)
    rotated = sas.Rule("root", "n" * 44, {"Send"})
    with pytest.raises(sas.Unauthorized, match="signature does not match"):
        sas.verify_token(t, URI, [rotated], sas.SEND, 10, signatures=memo)
    gone = sas.Rule("other", KEY, {"Send"})
    with pytest.raises(sas.Unauthorized, match="does not exist"):
        sas.verify_token(t, URI, [gone], sas.SEND, 10, signatures=memo)


def test_bad_signatures_are_not_remembered_and_a_tampered_token_is_refused():
    memo = VerifiedSignatures(4)
    with pytest.raises(sas.Unauthorized, match="signature does not match"):
        sas.verify_token(token(1000, key="x" * 44), URI, [SEND_RULE], sas.SEND, 10, signatures=memo)
    assert len(memo) == 0
    good = token(1000)
    sas.verify_token(good, URI, [SEND_RULE], sas.SEND, 10, signatures=memo)
    tampered = good.replace("se=1000", "se=9000")
    with pytest.raises(sas.Unauthorized, match="signature does not match"):
        sas.verify_token(tampered, URI, [SEND_RULE], sas.SEND, 10, signatures=memo)


def test_repr_and_size_validation():
    memo = VerifiedSignatures(2)
    sas.verify_token(token(1000), URI, [SEND_RULE], sas.SEND, 10, signatures=memo)
    assert "sig" not in repr(memo) and KEY not in repr(memo) and "1/2" in repr(memo)
    with pytest.raises(ValueError, match="at least 1"):
        VerifiedSignatures(0)


def test_whitespace_inside_a_token_still_refused():
    for ws in (" ", "\t", "\u00a0", "\u2003", "\x1c"):
        bad = token(1000).replace("&se=", ws + "&se=")
        with pytest.raises(sas.Unauthorized, match="whitespace"):
            sas.parse_token(bad)
