"""Entity names are restricted to a documented safe set (issue 8, item 19): ASCII letters,
digits, ``-``, ``.``, ``_``, ``~`` and ``/`` between segments; no empty, ``.`` or ``..``
segment; at most MAX_ENTITY_PATH characters.  Errors are clear in the config file, the
namespace (management API, create-on-listen) and through the management API and the CLI
of a real relay."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from relayd import config

from relayd.wire import sas
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


# -- a real relay: the management API and the CLI ------------------------------------------------

BAD_OVER_HTTP = [".", "..", "x/../echo", "%2e%2e", "x/%2E%2E/echo", "%E2%84%AAelvin", "stra%C3%9Fe"]


@pytest.mark.parametrize("quoted", BAD_OVER_HTTP)
def test_management_api_refuses_unsafe_names(relay_proc, quoted):
    from tests.conftest import ROOT_KEY

    token = sas.make_token(relay_proc.http_url + "/", "root", ROOT_KEY, int(time.time()) + 60)
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", relay_proc.port, timeout=10)
    conn.request("PUT", "/$relayd/entities/" + quoted, body=b"{}", headers={"Authorization": token})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 400, body
    message = body["error"]["message"]
    assert "entity path" in message and ("segment" in message or "ASCII letters" in message), message
    req = urllib.request.Request(relay_proc.http_url + "/$relayd/entities", headers={"Authorization": token})
    with urllib.request.urlopen(req, timeout=10) as r:
        paths = [e["path"] for e in json.loads(r.read())]
    assert paths == ["echo", "few", "open", "scoped"]


@pytest.mark.parametrize("path", ["..", "x/../echo", "\u212aelvin"])
def test_cli_entity_add_refuses_unsafe_names(relay_proc, path):
    from tests.conftest import ROOT_KEY

    out = subprocess.run([sys.executable, "-m", "relayd.cli", "entity", "add", path, "--url", relay_proc.url,
                          "--rule", "root", "--key", ROOT_KEY], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert ("'.' or '..' segment" in out.stderr or "ASCII letters" in out.stderr), out.stderr
