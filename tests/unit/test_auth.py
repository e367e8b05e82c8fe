"""Unit tests for relayd.wire.sas: SAS tokens byte-for-byte as Azure Relay's SDKs make them.

Expiry boundary: a token is valid up to and including second ``se``; it is rejected once
``now > se`` (so ``now == se`` and ``now == se + 0.0`` pass, ``now == se + 0.001`` fails).
"""

import base64
import hashlib
import hmac
import json
import os
import re
from urllib.parse import quote

import pytest

from relayd.wire import sas
from relayd.wire.sas import LISTEN, MANAGE, SEND

# SAS tokens made by Azure Relay's own Node SDKs (see tests/vectors/README.md)
VECTORS_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vectors",
                            "sas-tokens.json")
with open(VECTORS_PATH) as f:
    VECTORS = json.load(f)

VECTOR_IDS = ["%d-%s" % (i, v["uri"]) for i, v in enumerate(VECTORS)]
OTHER_KEY = "b3RoZXIta2V5LW5vdC10aGUtcmlnaHQtb25l"
NOW = 1767225600


def expiry(v):
    return v["now"] + v["expirySeconds"]


def rule_for(v, rights=(LISTEN, SEND), key=None, secondary=None):
    return sas.Rule(v["keyName"], key or v["key"], frozenset(rights), secondary)


def raises(exc, fragment):
    return pytest.raises(exc, match=re.escape(fragment))


def sign(key_bytes, text):
    return base64.b64encode(hmac.new(key_bytes, text.encode("utf-8"), hashlib.sha256).digest()).decode()


def with_field(token, name, value):
    """``token`` with field ``name`` set to ``value`` (raw), or removed when value is None."""
    fields = token[len("SharedAccessSignature "):].split("&")
    out = []
    for part in fields:
        if part.startswith(name + "="):
            if value is not None:
                out.append("%s=%s" % (name, value))
        else:
            out.append(part)
    return "SharedAccessSignature " + "&".join(out)


# --- the vectors --------------------------------------------------------------------------


def test_vectors_are_present():
    assert len(VECTORS) >= 4
    for v in VECTORS:
        assert v["token"].startswith("SharedAccessSignature sr=")


@pytest.mark.parametrize("v", VECTORS, ids=VECTOR_IDS)
def test_make_token_reproduces_vector_byte_for_byte(v):
    assert sas.make_token(v["uri"], v["keyName"], v["key"], expiry(v)) == v["token"]


@pytest.mark.parametrize("v", VECTORS, ids=VECTOR_IDS)
def test_parse_vector(v):
    t = sas.parse_token(v["token"])
    assert t.se == expiry(v)
    assert t.skn == v["keyName"]
    assert t.sr == sas.resource_uri(v["uri"])
    assert quote(t.sr, safe="") == t.sr_raw
    assert v["token"].startswith("SharedAccessSignature sr=%s&sig=" % t.sr_raw)
    assert len(base64.b64decode(t.sig)) == 32
    # the signature is over the URL-encoded sr, a newline and se, keyed by the key text's bytes
    assert t.sig == sign(v["key"].encode("utf-8"), "%s\n%d" % (t.sr_raw, t.se))
    assert t.sig != sign(base64.b64decode(v["key"]), "%s\n%d" % (t.sr_raw, t.se))
    assert t.sig != sign(v["key"].encode("utf-8"), "%s\n%d" % (t.sr, t.se))


@pytest.mark.parametrize("right", [LISTEN, SEND])
@pytest.mark.parametrize("v", VECTORS, ids=VECTOR_IDS)
def test_vector_verifies_for_its_entity_until_expiry(v, right):
    rules = [rule_for(v)]
    se = expiry(v)
    for entity in (v["uri"], sas.resource_uri(v["uri"])):
        for now in (v["now"], v["now"] + 0.5, se - 1, se):
            got = sas.verify_token(v["token"], entity, rules, right, now)
            assert got.rule is rules[0]
            assert got.expires == se
            assert got.sr == sas.resource_uri(v["uri"])


@pytest.mark.parametrize("v", VECTORS, ids=VECTOR_IDS)
def test_vector_rejected_after_expiry(v):
    se = expiry(v)
    for now in (se + 0.001, se + 1, se + 86400 * 365):
        with pytest.raises(sas.Unauthorized) as e:
            sas.verify_token(v["token"], v["uri"], [rule_for(v)], LISTEN, now)
        assert e.value.status == 401
        assert "expired" in str(e.value)
        assert "se=%d" % se in str(e.value)


def test_expiry_message_says_when():
    v = VECTORS[0]  # se = 1767229200 = 2026-01-01T01:00:00Z
    with raises(sas.Unauthorized, "expired at 2026-01-01T01:00:00Z (se=1767229200), 10 seconds ago"):
        sas.verify_token(v["token"], v["uri"], [rule_for(v)], LISTEN, 1767229210)


@pytest.mark.parametrize("v", VECTORS, ids=VECTOR_IDS)
def test_vector_rejected_with_another_key(v):
    with pytest.raises(sas.Unauthorized) as e:
        sas.verify_token(v["token"], v["uri"], [rule_for(v, key=OTHER_KEY)], LISTEN, v["now"])
    assert e.value.status == 401
    assert "signature does not match rule %r" % v["keyName"] in str(e.value)
    assert OTHER_KEY not in str(e.value) and v["key"] not in str(e.value)


@pytest.mark.parametrize("v", VECTORS, ids=VECTOR_IDS)
def test_vector_rejected_with_base64_decoded_key(v):
    decoded = base64.b64decode(v["key"]).decode("latin-1")
    with raises(sas.Unauthorized, "signature does not match"):
        sas.verify_token(v["token"], v["uri"], [rule_for(v, key=decoded)], LISTEN, v["now"])


@pytest.mark.parametrize("v", VECTORS, ids=VECTOR_IDS)
def test_vector_rejected_outside_sr(v):
    sr = sas.resource_uri(v["uri"])
    outside = [
        sr + "2",                                   # sibling sharing a string prefix
        sr.rsplit("/", 1)[0] + "/other",            # sibling
        sr.rsplit("/", 1)[0] if sr.count("/") > 3 else "http://elsewhere.example/x",  # parent
        sr.replace("http://", "http://x"),          # another host
    ]
    for entity in outside:
        with pytest.raises(sas.Forbidden) as e:
            sas.verify_token(v["token"], entity, [rule_for(v)], LISTEN, v["now"])
        assert e.value.status == 403
        assert "does not cover" in str(e.value)


@pytest.mark.parametrize("v", VECTORS, ids=VECTOR_IDS)
def test_vector_rejected_for_rule_without_right(v):
    with raises(sas.Forbidden, "grants Send but not Listen"):
        sas.verify_token(v["token"], v["uri"], [rule_for(v, rights=[SEND])], LISTEN, v["now"])
    with raises(sas.Forbidden, "grants Listen but not Send"):
        sas.verify_token(v["token"], v["uri"], [rule_for(v, rights=[LISTEN])], SEND, v["now"])
    with raises(sas.Forbidden, "grants Listen, Send but not Manage"):
        sas.verify_token(v["token"], v["uri"], [rule_for(v)], MANAGE, v["now"])


@pytest.mark.parametrize("v", VECTORS, ids=VECTOR_IDS)
def test_vector_sub_entity_is_covered(v):
    sr = sas.resource_uri(v["uri"])
    got = sas.verify_token(v["token"], sr + "/sub/deeper", [rule_for(v)], SEND, v["now"])
    assert got.expires == expiry(v)


@pytest.mark.parametrize("v", VECTORS, ids=VECTOR_IDS)
def test_tampered_vector_rejected(v):
    rules = [rule_for(v)]
    t = sas.parse_token(v["token"])
    later = with_field(v["token"], "se", str(t.se + 3600))
    with raises(sas.Unauthorized, "signature does not match"):
        sas.verify_token(later, v["uri"], rules, LISTEN, v["now"])
    broader = with_field(v["token"], "sr", quote("http://" + t.sr.split("/")[2] + "/", safe=""))
    with raises(sas.Unauthorized, "signature does not match"):
        sas.verify_token(broader, v["uri"], rules, LISTEN, v["now"])
    # sr re-encoded differently decodes to the same URI, but the signature is over the raw text
    lower_hex = with_field(v["token"], "sr", t.sr_raw.replace("%3A", "%3a"))
    assert sas.parse_token(lower_hex).sr == t.sr
    with raises(sas.Unauthorized, "signature does not match"):
        sas.verify_token(lower_hex, v["uri"], rules, LISTEN, v["now"])


@pytest.mark.parametrize("v", VECTORS, ids=VECTOR_IDS)
def test_field_order_does_not_matter(v):
    fields = v["token"][len("SharedAccessSignature "):].split("&")
    for order in (fields[::-1], fields[1:] + fields[:1], [fields[3], fields[1], fields[0], fields[2]]):
        token = "SharedAccessSignature " + "&".join(order)
        got = sas.verify_token(token, v["uri"], [rule_for(v)], LISTEN, v["now"])
        assert got.expires == expiry(v)


# --- signing details ----------------------------------------------------------------------


def test_signature_is_over_sr_as_it_appears_in_the_token():
    key = "a-key-for-tests-only-1234567890"
    sr_raw = "http%3a%2f%2fhost%2fecho"  # lower-case hex, as some clients write it
    token = "SharedAccessSignature sr=%s&sig=%s&se=%d&skn=r" % (
        sr_raw, quote(sign(key.encode(), sr_raw + "\n%d" % (NOW + 60)), safe=""), NOW + 60)
    got = sas.verify_token(token, "wss://host/$hc/echo", [sas.Rule("r", key, {LISTEN})], LISTEN, NOW)
    assert got.sr == "http://host/echo"


def test_token_signed_by_another_sdk_with_trailing_slash_and_sb_scheme():
    # The .NET SDK signs e.g. "sb://ns.example/echo/" (WebUtility.UrlEncode, upper-case hex).
    key = "a-key-for-tests-only-1234567890"
    sr_raw = "sb%3A%2F%2Fns.example%2Fecho%2F"
    sig = sign(key.encode(), "%s\n%d" % (sr_raw, NOW + 60))
    token = "SharedAccessSignature sr=%s&sig=%s&se=%d&skn=r" % (sr_raw, quote(sig, safe=""), NOW + 60)
    rules = [sas.Rule("r", key, {SEND})]
    assert sas.verify_token(token, "http://NS.example:443/echo", rules, SEND, NOW).sr == "sb://ns.example/echo/"
    with raises(sas.Forbidden, "does not cover"):
        sas.verify_token(token, "http://ns.example/echoes", rules, SEND, NOW)


def test_make_token_round_trip_with_unicode_key_and_odd_path():
    key = "kéy with spaces & symbols +/="
    token = sas.make_token("wss://H.example:9443/$hc/a b/(c)!*~'?x=1#f", "rule.name-1_x", key, NOW + 10)
    parsed = sas.parse_token(token)
    assert parsed.sr == "http://h.example:9443/a%20b/(c)!*~%27"  # as Node's url.parse escapes it
    assert parsed.sr_raw == "http%3A%2F%2Fh.example%3A9443%2Fa%2520b%2F(c)!*~%2527"
    assert parsed.skn == "rule.name-1_x"
    rules = [sas.Rule("rule.name-1_x", key, {LISTEN})]
    assert sas.verify_token(token, "http://h.example/a b/(c)!*~'", rules, LISTEN, NOW).rule is rules[0]


def test_make_token_rounds_fractional_expiry_up():
    assert sas.parse_token(sas.make_token("http://h/x", "r", "k" * 20, NOW + 0.2)).se == NOW + 1


@pytest.mark.parametrize("uri, expected", [
    ("ws://127.0.0.1:9090/$hc/echo?sb-hc-action=listen", "http://127.0.0.1:9090/echo"),
    ("wss://relay.example.com:443/$hc/orders/eu?sb-hc-action=connect", "http://relay.example.com:443/orders/eu"),
    ("wss://Relay.Example.COM/$hc/Mixed/Case", "http://relay.example.com/Mixed/Case"),
    ("https://relay.example.com/web/api?x=1", "http://relay.example.com/web/api"),
    ("sb://ns.example/echo/", "http://ns.example/echo/"),
    ("https://Relay.Example.COM", "http://relay.example.com/"),
    ("wss://h/$hc/", "http://h/"),
    ("wss://h/$hc", "http://h/$hc"),             # the SDK only drops "$hc/"
    ("https://h/$HC/x", "http://h/$HC/x"),       # ... case-sensitively
    ("wss://h:0443/x", "http://h:0443/x"),       # explicit port kept as written
    ("wss://h:/x", "http://h/x"),
    ("wss://[::1]:9090/$hc/x", "http://[::1]:9090/x"),
    ("wss://[FE80::1]/x", "http://[fe80::1]/x"),
    ("wss://h/x#frag", "http://h/x"),
    ("wss://u:p@h/x", "http://h/x"),             # the SDK keeps user:password@; we drop it
    ("wss://h\\x\\y?z", "http://h/x/y"),
    ("  wss://h/x  ", "http://h/x"),
    ("wss://h/ü/x", "http://h/ü/x"),
])
def test_resource_uri(uri, expected):
    assert sas.resource_uri(uri) == expected


@pytest.mark.parametrize("uri", ["relay.example.com/echo", "/echo", "", "http:///echo", "wss://h:abc/x", "wss://[::1/x"])
def test_resource_uri_rejects_non_uris(uri):
    with pytest.raises(ValueError):
        sas.resource_uri(uri)


# --- scope (sr prefix) semantics ----------------------------------------------------------


@pytest.mark.parametrize("sr, entity, expected", [
    ("http://host/echo", "http://host/echo", True),
    ("http://host/echo", "http://host/echo/sub", True),
    ("http://host/echo", "http://host/echo/sub/deeper", True),
    ("http://host/echo", "http://host/echo2", False),
    ("http://host/echo", "http://host/ech", False),
    ("http://host/ech", "http://host/echo", False),
    ("http://host/echo/sub", "http://host/echo", False),
    ("http://host/echo/", "http://host/echo", True),
    ("http://host/echo/", "http://host/echo/sub", True),
    ("http://host/", "http://host/anything/deep", True),
    ("http://host", "http://host/anything", True),
    ("http://host/", "http://host/", True),
    ("http://HOST/Echo", "http://host/ECHO", True),
    ("http://host/echo", "http://Host/Echo/Sub", True),
    ("http://host:9090/echo", "wss://host:443/$hc/echo?sb-hc-action=listen", True),
    ("http://host/echo", "http://host:1234/echo", True),
    ("sb://host/echo", "https://host/echo", True),
    ("https://host/echo", "ws://host/echo", True),
    ("wss://host/echo", "sb://host/echo", True),
    ("http://host/echo", "http://host/$hc/echo", True),
    ("http://host/echo", "http://host/$hc/echo2", False),
    ("http://host/echo", "http://other/echo", False),
    ("http://host/echo", "http://host.evil/echo", False),
    ("http://host.evil/echo", "http://host/echo", False),
    ("http://127.0.0.1/echo", "http://localhost/echo", False),
    ("http://[::1]:9090/echo", "http://[::1]/echo/x", True),
    ("http://host/a/b", "http://host/a/x/../b/c", True),
    ("http://host/a", "http://host/a/../b", False),
    ("http://host/a", "http://host/a/%2e%2e/b", False),
    ("http://host/my%20hc", "http://host/my hc", True),
    ("http://host/echo", "http://host//echo", True),
    ("not a uri", "http://host/echo", False),
])
def test_covers(sr, entity, expected):
    assert sas.covers(sr, entity) is expected


@pytest.mark.parametrize("token_uri, entity, ok", [
    ("http://Relay.Example.com:9090/echo", "wss://relay.example.COM/$hc/echo/sub?sb-hc-action=listen", True),
    ("http://relay.example.com/echo/", "sb://relay.example.com:5671/echo", True),
    ("https://relay.example.com/", "http://relay.example.com/any/thing", True),
    ("http://relay.example.com/echo", "http://relay.example.com/echo2", False),
    ("http://relay.example.com/echo", "http://other.example.com/echo", False),
])
def test_scope_through_verify_token(token_uri, entity, ok):
    token = sas.make_token(token_uri, "r", "a-key-for-tests-only-1234567890", NOW + 60)
    rules = [sas.Rule("r", "a-key-for-tests-only-1234567890", {LISTEN})]
    if ok:
        assert sas.verify_token(token, entity, rules, LISTEN, NOW).rule is rules[0]
    else:
        with raises(sas.Forbidden, "does not cover"):
            sas.verify_token(token, entity, rules, LISTEN, NOW)


# --- rights -------------------------------------------------------------------------------


@pytest.mark.parametrize("right", [LISTEN, SEND, MANAGE])
def test_manage_implies_listen_and_send(right):
    v = VECTORS[0]
    rules = [rule_for(v, rights=[MANAGE])]
    assert sas.verify_token(v["token"], v["uri"], rules, right, v["now"]).rule is rules[0]


@pytest.mark.parametrize("rights, right, ok", [
    ({LISTEN}, LISTEN, True), ({LISTEN}, SEND, False), ({LISTEN}, MANAGE, False),
    ({SEND}, SEND, True), ({SEND}, LISTEN, False), ({SEND}, MANAGE, False),
    ({LISTEN, SEND}, MANAGE, False), ({MANAGE}, LISTEN, True), ({MANAGE}, SEND, True),
    ({MANAGE}, MANAGE, True), (set(), LISTEN, False),
])
def test_has_right(rights, right, ok):
    assert sas.has_right(frozenset(rights), right) is ok


def test_normalize_rights():
    assert sas.normalize_rights(["listen", "SEND", "Manage", "Listen"]) == frozenset({LISTEN, SEND, MANAGE})
    assert sas.normalize_rights([]) == frozenset()
    assert sas.normalize_rights("send") == frozenset({SEND})
    assert sas.Rights.LISTEN == "Listen" and sas.Rights.SEND == "Send" and sas.Rights.MANAGE == "Manage"
    with raises(ValueError, "'Lisen'"):
        sas.normalize_rights(["Send", "Lisen"])
    with raises(ValueError, "Listen, Send and Manage"):
        sas.normalize_rights(["admin"])
    with pytest.raises(ValueError):
        sas.normalize_rights([""])


def test_rule_normalizes_rights():
    rule = sas.Rule("r", "a-key-for-tests-only-1234567890", ["listen", "send"])
    assert rule.rights == frozenset({LISTEN, SEND})
    with raises(ValueError, "'Root'"):
        sas.Rule("r", "a-key-for-tests-only-1234567890", ["Root"])


def test_verify_rejects_unknown_right_name():
    v = VECTORS[0]
    with raises(ValueError, "'Write'"):
        sas.verify_token(v["token"], v["uri"], [rule_for(v)], "Write", v["now"])


# --- rules, keys --------------------------------------------------------------------------


def test_unknown_rule_is_401():
    v = VECTORS[0]
    rules = [sas.Rule("other", v["key"], {LISTEN}), sas.Rule("ROOT", v["key"], {LISTEN})]
    with pytest.raises(sas.Unauthorized) as e:
        sas.verify_token(v["token"], v["uri"], rules, LISTEN, v["now"])
    assert e.value.status == 401
    assert "skn='root'" in str(e.value) and "does not exist" in str(e.value)


def test_no_rules_is_401():
    v = VECTORS[0]
    with raises(sas.Unauthorized, "does not exist"):
        sas.verify_token(v["token"], v["uri"], [], LISTEN, v["now"])


def test_secondary_key_is_accepted():
    v = VECTORS[0]
    rule = sas.Rule(v["keyName"], OTHER_KEY, {LISTEN}, secondary_key=v["key"])
    assert sas.verify_token(v["token"], v["uri"], [rule], LISTEN, v["now"]).rule is rule
    primary = sas.make_token(v["uri"], v["keyName"], OTHER_KEY, expiry(v))
    assert sas.verify_token(primary, v["uri"], [rule], LISTEN, v["now"]).rule is rule
    neither = sas.make_token(v["uri"], v["keyName"], "yet-another-key-123456789", expiry(v))
    with raises(sas.Unauthorized, "signature does not match"):
        sas.verify_token(neither, v["uri"], [rule], LISTEN, v["now"])


def test_empty_secondary_key_is_no_key():
    rule = sas.Rule("r", "a-key-for-tests-only-1234567890", {LISTEN}, "")
    assert rule.secondary_key is None
    with pytest.raises(ValueError):
        sas.make_token("http://h/x", "r", "", NOW + 10)


def test_same_named_rules_at_entity_and_namespace_level_are_both_tried():
    v = VECTORS[0]
    entity_rule = rule_for(v, rights=[SEND], key=OTHER_KEY)
    namespace_rule = rule_for(v, rights=[LISTEN])
    got = sas.verify_token(v["token"], v["uri"], [entity_rule, namespace_rule], LISTEN, v["now"])
    assert got.rule is namespace_rule
    # the first rule whose key matches wins, even if a later one has more rights
    first = rule_for(v, rights=[SEND])
    with raises(sas.Forbidden, "grants Send but not Listen"):
        sas.verify_token(v["token"], v["uri"], [first, namespace_rule], LISTEN, v["now"])


def test_rules_may_be_a_generator():
    v = VECTORS[0]
    got = sas.verify_token(v["token"], v["uri"], (r for r in [rule_for(v)]), LISTEN, v["now"])
    assert got.rule.name == "root"


def test_rule_repr_hides_keys():
    rule = sas.Rule("root", "PRIMARY-secret-key-value", {MANAGE}, "SECONDARY-secret-key-value")
    for text in (repr(rule), str(rule), repr([rule]), repr(sas.VerifiedToken(rule, NOW, "http://h/"))):
        assert "PRIMARY" not in text and "SECONDARY" not in text
        assert "root" in text
    assert "Manage" in repr(rule)


def test_sas_token_repr_hides_signature():
    v = VECTORS[0]
    t = sas.parse_token(v["token"])
    assert t.sig not in repr(t) and quote(t.sig, safe="") not in repr(t)
    assert "http://127.0.0.1:9090/echo" in repr(t)


def test_generate_key():
    keys = {sas.generate_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(key) == 44
        assert len(base64.b64decode(key, validate=True)) == 32
    key = keys.pop()
    token = sas.make_token("http://h/x", "r", key, NOW + 5)
    assert sas.verify_token(token, "http://h/x", [sas.Rule("r", key, {SEND})], SEND, NOW).expires == NOW + 5


def test_error_classes():
    assert issubclass(sas.Unauthorized, sas.AuthError) and issubclass(sas.Forbidden, sas.AuthError)
    assert sas.Unauthorized("x").status == 401 and sas.Forbidden("x").status == 403
    assert str(sas.Forbidden("do this")) == "do this" and sas.Forbidden("do this").message == "do this"


def test_check_order_expired_before_scope_and_signature_before_expiry():
    v = VECTORS[0]
    late = expiry(v) + 10
    with raises(sas.Unauthorized, "expired"):
        sas.verify_token(v["token"], "http://elsewhere/x", [rule_for(v, rights=[SEND])], LISTEN, late)
    with raises(sas.Unauthorized, "signature does not match"):
        sas.verify_token(v["token"], v["uri"], [rule_for(v, key=OTHER_KEY)], LISTEN, late)
    with raises(sas.Forbidden, "does not cover"):
        sas.verify_token(v["token"], "http://elsewhere/x", [rule_for(v, rights=[SEND])], LISTEN, v["now"])


# --- malformed tokens ---------------------------------------------------------------------

GOOD = VECTORS[0]["token"]
GOOD_FIELDS = GOOD[len("SharedAccessSignature "):]

MALFORMED = [
    ("", "token is empty"),
    ("   ", "token is empty"),
    (GOOD_FIELDS, "'SharedAccessSignature ' prefix is missing"),
    ("Bearer abc.def.ghi", "must start with 'SharedAccessSignature '"),
    ("sharedaccesssignature " + GOOD_FIELDS, "prefix is spelled 'sharedaccesssignature'"),
    (quote(GOOD, safe=""), "still URL-encoded"),
    (GOOD.replace(" ", "+", 1), "still URL-encoded"),
    ("SharedAccessSignature", "no fields after the prefix"),
    ("SharedAccessSignature   ", "no fields after the prefix"),
    (GOOD.replace("&se=", " &se="), "whitespace after the prefix"),
    (GOOD.replace("&", "&amp;"), "'&amp;'"),
    (GOOD + "&", "empty field"),
    (GOOD.replace("&", "&&", 1), "empty field"),
    (GOOD + "&junk", "field 5 has no '='"),
    (GOOD.replace("sr=", "sr%3D", 1), "field 1 has no '=' (was the token URL-encoded twice?)"),
    (GOOD + "&se=1767229200", "field 'se' appears twice"),
    (GOOD + "&skn=root", "field 'skn' appears twice"),
    (with_field(GOOD, "sr", None), "the 'sr' field is missing"),
    (with_field(GOOD, "sig", None), "the 'sig' field is missing"),
    (with_field(GOOD, "se", None), "the 'se' field is missing"),
    (with_field(GOOD, "skn", None), "the 'skn' field is missing"),
    (with_field(GOOD, "sr", ""), "the 'sr' field is empty"),
    (with_field(GOOD, "sig", ""), "the 'sig' field is empty"),
    (with_field(GOOD, "se", ""), "the 'se' field is empty"),
    (with_field(GOOD, "skn", ""), "the 'skn' field is empty"),
    (GOOD.replace("sr=", "SR=", 1), "the 'sr' field is missing (field names are lower-case: 'sr', not 'SR')"),
    (with_field(GOOD, "se", "soon"), "se='soon' is not a whole number"),
    (with_field(GOOD, "se", "-5"), "se='-5' is not a whole number"),
    (with_field(GOOD, "se", "+1767229200"), "is not a whole number"),
    (with_field(GOOD, "se", "1767229200.5"), "is not a whole number"),
    (with_field(GOOD, "se", "1_767_229_200"), "is not a whole number"),
    (with_field(GOOD, "se", "\u0661\u0662"), "is not a whole number"),
    (with_field(GOOD, "se", "9" * 40), "is not a whole number"),
    (with_field(GOOD, "sig", "not*base64"), "sig is not valid base64"),
    (with_field(GOOD, "sig", "su88gc3CPrT49FUUl0FWQeJLG0f3VtpURLTfXs4ZiHA"), "sig is not valid base64"),
    (with_field(GOOD, "sig", quote(base64.b64encode(b"x" * 16).decode(), safe="")), "sig is 16 bytes"),
    (with_field(GOOD, "sr", "echo"), "sr='echo' is not an absolute URI"),
    (with_field(GOOD, "sr", "http%3A%2F%2F%2Fecho"), "is not an absolute URI"),
    (GOOD + "&x=" + "a" * 4096, "is 4234 characters long; the limit is 4096"),
]


@pytest.mark.parametrize("token, message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_tokens_are_401_with_specific_message(token, message):
    v = VECTORS[0]
    with pytest.raises(sas.Unauthorized) as e:
        sas.verify_token(token, v["uri"], [rule_for(v)], LISTEN, v["now"])
    assert e.value.status == 401
    assert message in str(e.value)
    with raises(sas.Unauthorized, message):
        sas.parse_token(token)


@pytest.mark.parametrize("token", [None, b"SharedAccessSignature sr=x", 42])
def test_non_text_token_is_401(token):
    with raises(sas.Unauthorized, "must be text"):
        sas.parse_token(token)


def test_length_limit_is_inclusive():
    v = VECTORS[0]
    padded = v["token"] + "&x=" + "a" * (4096 - len(v["token"]) - 3)
    assert len(padded) == 4096
    assert sas.verify_token(padded, v["uri"], [rule_for(v)], LISTEN, v["now"]).expires == expiry(v)
    with raises(sas.Unauthorized, "the limit is 4096"):
        sas.parse_token(padded + "a")


def test_unknown_fields_are_ignored_and_whitespace_around_token_is_trimmed():
    v = VECTORS[0]
    token = "  %s&ver=2  " % v["token"]
    assert sas.verify_token(token, v["uri"], [rule_for(v)], LISTEN, v["now"]).expires == expiry(v)


def test_messages_never_contain_keys():
    v = VECTORS[0]
    secret = "SUPER-secret-key-material-xyz"
    rule = sas.Rule(v["keyName"], secret, {SEND}, "SECOND-secret-key-material")
    for token, entity, right, now in [
        (v["token"], v["uri"], LISTEN, v["now"]),
        (sas.make_token(v["uri"], v["keyName"], secret, expiry(v)), "http://x/y", SEND, v["now"]),
        (sas.make_token(v["uri"], v["keyName"], secret, expiry(v)), v["uri"], LISTEN, v["now"]),
        (sas.make_token(v["uri"], v["keyName"], secret, expiry(v)), v["uri"], SEND, expiry(v) + 1),
    ]:
        with pytest.raises(sas.AuthError) as e:
            sas.verify_token(token, entity, [rule], right, now)
        assert "secret" not in str(e.value)


# --- extract_token ------------------------------------------------------------------------


@pytest.mark.parametrize("query, headers, expected", [
    ("Q", {"ServiceBusAuthorization": "S", "Authorization": "A"}, "Q"),
    (None, {"ServiceBusAuthorization": "S", "Authorization": "A"}, "S"),
    ("", {"servicebusauthorization": "S", "authorization": "A"}, "S"),
    (None, {"SERVICEBUSAUTHORIZATION": "S"}, "S"),
    (None, {"Authorization": "A"}, "A"),
    (None, {"authorization": "A", "Host": "h"}, "A"),
    (None, {"ServiceBusAuthorization": "", "Authorization": "A"}, "A"),
    ("  ", {"ServiceBusAuthorization": "  S  "}, "S"),
    (None, {}, None),
    (None, {"Host": "h", "X-Token": "t"}, None),
    (None, {b"ServiceBusAuthorization": [b"S"]}, "S"),
])
def test_extract_token_precedence(query, headers, expected):
    assert sas.extract_token(query, headers) == expected


def test_extract_token_then_verify():
    v = VECTORS[0]
    token = sas.extract_token(None, {"servicebusauthorization": v["token"], "Authorization": "Bearer x"})
    assert sas.verify_token(token, v["uri"], [rule_for(v)], LISTEN, v["now"]).rule.name == "root"


def test_malformed_token_messages_never_echo_the_token():
    for token in ("SECRET-TOKEN-TEXT", "SharedAccessSignature SECRETSIGNATURE", "Bearer SECRET-TOKEN-TEXT"):
        with pytest.raises(sas.Unauthorized) as e:
            sas.parse_token(token)
        assert "SECRET" not in str(e.value)


# --- dot segments in sr (issue 8, item 18) -----------------------------------------------

DOT_KEY = "a-key-for-tests-only-1234567890"
DOT_RULES = [sas.Rule("r", DOT_KEY, {MANAGE})]


def raw_token(sr_raw, se=NOW + 60, key=DOT_KEY, skn="r"):
    """A token built byte for byte: sr exactly as given (already URL-encoded), signed over it."""
    sig = sign(key.encode("utf-8"), "%s\n%d" % (sr_raw, se))
    return "SharedAccessSignature sr=%s&sig=%s&se=%d&skn=%s" % (sr_raw, quote(sig, safe=""), se, skn)


DOT_SRS = [
    "http%3A%2F%2Fh%2Fecho%2F..",                 # /echo/..
    "http%3A%2F%2Fh%2Fecho%2F..%2F",              # /echo/../
    "http%3A%2F%2Fh%2Fecho%2F..%2F..",            # /echo/../..
    "http%3A%2F%2Fh%2Fecho%2F%252e%252e",         # /echo/%2e%2e
    "http%3A%2F%2Fh%2Fecho%2F%252E%252E%2Fx",     # /echo/%2E%2E/x
    "http%3A%2F%2Fh%2Fecho%2F..%252fx",           # /echo/..%2fx
    "http%3A%2F%2Fh%2Fecho%2F%25252e%25252e",     # /echo/%252e%252e
    "http%3A%2F%2Fh%2Fecho%2F.",                  # /echo/.
    "http%3A%2F%2Fh%2Fecho%5C..",                 # /echo\..
    "http%3A%2F%2Fh%2Fecho%2F%2e%2e",             # %2e%2e in the raw field: /echo/..
]


@pytest.mark.parametrize("sr_raw", DOT_SRS)
def test_sr_with_dot_segments_is_401_for_every_resource(sr_raw):
    token = raw_token(sr_raw)
    for entity in ("http://h/", "http://h/echo", "http://h/echo/x", "http://h/other"):
        with pytest.raises(sas.Unauthorized) as e:
            sas.verify_token(token, entity, DOT_RULES, LISTEN, NOW)
        assert e.value.status == 401
        assert "'.' or '..' path segment" in e.value.message
        assert "cannot climb above its entity path" in e.value.message
        assert "sig=" not in e.value.message
    with raises(sas.Unauthorized, "'.' or '..' path segment"):
        sas.parse_token(token)


def test_sr_dot_segments_made_by_make_token_are_rejected():
    for uri in ("http://h/echo/..", "http://h/echo/../..", "http://h/echo/%2e%2e", "sb://h/$hc/echo/.."):
        token = sas.make_token(uri, "r", DOT_KEY, NOW + 60)
        with raises(sas.Unauthorized, "cannot climb above its entity path"):
            sas.verify_token(token, "http://h/", DOT_RULES, MANAGE, NOW)


@pytest.mark.parametrize("sr, entity", [
    ("http://h/echo/..", "http://h/other"),
    ("http://h/echo/%2e%2e", "http://h/"),
    ("http://h/a/b/../..", "http://h/a"),
    ("http://h/echo/.", "http://h/echo"),
])
def test_covers_refuses_dot_segment_scopes(sr, entity):
    assert sas.covers(sr, entity) is False


def test_names_with_dots_inside_segments_still_work():
    for uri, entity in (("http://h/a..b", "http://h/a..b/x"), ("http://h/.well", "http://h/.well"),
                        ("http://h/v1.2/x", "http://h/v1.2/x")):
        token = sas.make_token(uri, "r", DOT_KEY, NOW + 60)
        assert sas.verify_token(token, entity, DOT_RULES, SEND, NOW).sr == uri


def test_has_dot_segment():
    assert sas.has_dot_segment("/echo/..")
    assert sas.has_dot_segment("/echo/%2E%2e/x")
    assert sas.has_dot_segment("/echo/..%2F")
    assert sas.has_dot_segment("/echo/.%2e")
    assert sas.has_dot_segment("\\..\\x")
    assert not sas.has_dot_segment("/echo/...")
    assert not sas.has_dot_segment("/echo/a..b/.x")
    assert not sas.has_dot_segment("/")
