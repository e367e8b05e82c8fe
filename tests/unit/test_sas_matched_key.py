"""verify_token says which of a rule's keys signed the token (VerifiedToken.key), also when the
signature memo answers: relayd closes what a regenerated key opened (issue 12 item 6)."""

import pytest

from relayd.wire import sas
from relayd.wire.token_memo import VerifiedSignatures

NOW = 1_800_000_000
URI = "http://relay.example/echo"
RULE = sas.Rule("ops", "primary-key-0123456789", frozenset({"Listen"}), "secondary-key-0123456789")


def test_the_key_that_signed_is_returned_with_and_without_the_memo():
    memo = VerifiedSignatures()
    for key in (RULE.key, RULE.secondary_key):
        token = sas.make_token(URI, "ops", key, NOW + 60)
        assert sas.verify_token(token, URI, [RULE], sas.LISTEN, NOW).key == key
        assert sas.verify_token(token, URI, [RULE], sas.LISTEN, NOW, signatures=memo).key == key
        assert sas.verify_token(token, URI, [RULE], sas.LISTEN, NOW, signatures=memo).key == key  # memo hit


def test_a_remembered_token_of_a_regenerated_key_is_refused():
    memo = VerifiedSignatures()
    token = sas.make_token(URI, "ops", RULE.key, NOW + 60)
    sas.verify_token(token, URI, [RULE], sas.LISTEN, NOW, signatures=memo)
    regenerated = sas.Rule("ops", "a-new-primary-key-0123", RULE.rights, RULE.secondary_key)
    with pytest.raises(sas.Unauthorized, match="does not match rule 'ops'"):
        sas.verify_token(token, URI, [regenerated], sas.LISTEN, NOW, signatures=memo)


def test_the_key_is_not_in_the_repr():
    token = sas.make_token(URI, "ops", RULE.key, NOW + 60)
    assert RULE.key not in repr(sas.verify_token(token, URI, [RULE], sas.LISTEN, NOW))
