"""``[metrics] listen`` in the configuration file (issue 12 item 4): parsed and checked like
``relay.listen``; no other key."""

import pytest

from relayd import config


def test_metrics_listen_is_parsed():
    settings = config.parse({"metrics": {"listen": "tcp:9464:interface=127.0.0.1"}})
    assert settings.metrics_listen == "tcp:9464:interface=127.0.0.1"
    assert config.parse({}).metrics_listen is None


@pytest.mark.parametrize("table, where", [
    ({"listen": "nonsense:1"}, "metrics.listen"),
    ({"listen": ""}, "metrics.listen"),
    ({"port": 9464}, "metrics.port"),
    ("tcp:9464", "metrics"),
])
def test_bad_metrics_settings_name_the_key(table, where):
    with pytest.raises(config.ConfigError) as e:
        config.parse({"metrics": table})
    assert where in str(e.value)
