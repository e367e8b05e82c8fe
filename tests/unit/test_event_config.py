"""Event entities in the config file (issue 11): ``kind = "oneway"`` / ``"multicast"`` and
their options, validated with errors that name the key and say what to fix."""

import pytest

from relayd import config
from relayd.namespace import Namespace, SqliteStore


def parse(**entity):
    return config.parse({"hybrid_connections": [dict({"path": "news"}, **entity)]}, "relayd.toml")


@pytest.mark.parametrize("kind", ["oneway", "multicast"])
def test_event_kinds_and_defaults(kind):
    spec = parse(kind=kind).entities[0]
    assert (spec.kind, spec.max_message, spec.max_listeners, spec.requires_client_authorization) == \
        (kind, 65536, 25, True)


def test_event_options_are_read():
    spec = parse(kind="multicast", max_message=1024, max_listeners=3,
                 requires_client_authorization=False).entities[0]
    assert (spec.max_message, spec.max_listeners, spec.requires_client_authorization) == (1024, 3, False)


def test_event_entity_reaches_the_namespace(tmp_path):
    settings = parse(kind="oneway", max_message=4096)
    store = SqliteStore(str(tmp_path))
    try:
        entity = Namespace(store, settings).get("news")
    finally:
        store.close()
    assert (entity.kind, entity.max_message) == ("oneway", 4096)
    assert entity.describe()["max_message"] == 4096


def test_unknown_kind_lists_the_event_kinds():
    with pytest.raises(config.ConfigError) as e:
        parse(kind="broadcast")
    assert "hybrid_connections[0].kind" in str(e.value)
    assert '"oneway"' in str(e.value) and '"multicast"' in str(e.value)


@pytest.mark.parametrize("value", [0, -1, 16 * 1024 * 1024 + 1, "64k", 1.5, True])
def test_max_message_out_of_range(value):
    with pytest.raises(config.ConfigError) as e:
        parse(kind="multicast", max_message=value)
    assert "hybrid_connections[0].max_message" in str(e.value)
    assert "must be an integer from 1 to" in str(e.value)


def test_max_message_only_on_event_kinds():
    with pytest.raises(config.ConfigError) as e:
        parse(max_message=1024)
    assert "hybrid_connections[0].max_message" in str(e.value)
    assert 'kind = "oneway" or "multicast"' in str(e.value)


def test_max_listeners_validated_on_event_kinds():
    with pytest.raises(config.ConfigError) as e:
        parse(kind="multicast", max_listeners=0)
    assert "hybrid_connections[0].max_listeners" in str(e.value)
