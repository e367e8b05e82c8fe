"""Entity names are restricted to a documented safe set (issue 8, item 19): ASCII letters,
digits, ``-``, ``.``, ``_``, ``~`` and ``/`` between segments; no empty, ``.`` or ``..``
segment; at most MAX_ENTITY_PATH characters.  Errors are clear in the config file, the
namespace (management API, create-on-listen); through the management API and the CLI of a
real relay in tests/integration/test_entity_names_api.py."""

import pytest

from relayd import config
from relayd.config import ConfigError
from relayd.wire.names import MAX_ENTITY_PATH, validate_entity_path
from relayd.namespace import Entity, Namespace, NamespaceError, SqliteStore

GOOD = ["echo", "a", "Echo-1", "orders/eu", "a.b", "a..b", "...", ".well-known/x", "v1.2/x_y~z",
        "x" * MAX_ENTITY_PATH, "/".join(["s"] * 10)]

BAD = [
    ("", "non-empty"),
    (".", "'.' or '..' segment"),
    ("..", "'.' or '..' segment"),
    ("x/../echo", "'.' or '..' segment"),
    ("x/./echo", "'.' or '..' segment"),
    ("echo/..", "'.' or '..' segment"),
    ("../echo", "'.' or '..' segment"),
    ("/echo", "leading, trailing or empty"),
    ("echo/", "leading, trailing or empty"),
    ("a//b", "leading, trailing or empty"),
    ("x" * (MAX_ENTITY_PATH + 1), "at most %d characters" % MAX_ENTITY_PATH),
    ("$hc", "ASCII letters, digits"),
    ("\u212aelvin", "ASCII letters, digits"),       # KELVIN SIGN: lower() is 'k'
    ("stra\u00dfe", "ASCII letters, digits"),
    ("\u0435cho", "ASCII letters, digits"),         # Cyrillic ie looks like 'e'
    ("echo\u0661", "ASCII letters, digits"),        # Arabic-Indic digit one
    ("my hc", "ASCII letters, digits"),
    ("a%2e", "ASCII letters, digits"),
    ("a\\b", "ASCII letters, digits"),
    ("a?b", "ASCII letters, digits"),
    ("a\x00b", "ASCII letters, digits"),
]


@pytest.mark.parametrize("path", GOOD)
def test_safe_names_are_accepted(path):
    assert validate_entity_path(path) is None


@pytest.mark.parametrize("path, fragment", BAD, ids=[repr(p[:20]) for p, _ in BAD])
def test_unsafe_names_are_refused_with_a_clear_reason(path, fragment):
    problem = validate_entity_path(path)
    assert problem is not None and fragment in problem, problem


def test_non_ascii_message_names_the_character():
    assert "U+212A" in validate_entity_path("\u212aelvin")


def config_with(path):
    return {"hybrid_connections": [{"path": path}]}


@pytest.mark.parametrize("path, fragment", BAD[1:], ids=[repr(p[:20]) for p, _ in BAD[1:]])
def test_config_file_names_the_key(path, fragment):
    with pytest.raises(ConfigError) as e:
        config.parse(config_with(path), "relayd.toml")
    assert str(e.value).startswith("relayd.toml: hybrid_connections[0].path: ")
    assert fragment in str(e.value)


def test_unicode_name_cannot_replace_another(tmp_path):
    settings = config.parse({"hybrid_connections": [{"path": "kelvin"}]}, "t")
    settings.data_dir = str(tmp_path)
    store = SqliteStore(str(tmp_path))
    ns = Namespace(store, settings)
    try:
        with pytest.raises(NamespaceError) as e:
            ns.add(Entity("\u212aelvin"))
        assert "ASCII letters, digits" in str(e.value)
        assert ns.get("kelvin").static and ns.get("kelvin").path == "kelvin"
        for path in (".", "..", "x/../echo"):
            with pytest.raises(NamespaceError):
                ns.add(Entity(path))
        assert [e.path for e in ns.entities()] == ["kelvin"]
    finally:
        store.close()


def test_stored_entities_with_unsafe_names_are_not_loaded(tmp_path):
    """An entity stored by an older relayd under a name that is no longer allowed is skipped."""
    settings = config.parse({}, "t")
    store = SqliteStore(str(tmp_path))
    store.put_entity(Entity(".."))
    store.put_entity(Entity("fine"))
    try:
        ns = Namespace(store, settings)
        assert [e.path for e in ns.entities()] == ["fine"]
        assert ns.resolve("../x") == (None, None)
    finally:
        store.close()
