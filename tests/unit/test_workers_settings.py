"""``relayd serve --workers N`` (relayd/workers.py): what ``--worker I`` changes in a worker's
settings -- the shared ports with reuseport=1, its own node port and node_url, its node_id --
and the errors that name what to fix; ``reuseport=1`` in listen endpoint strings."""

import pytest

from relayd import config, endpoint_strings, workers

RULES = [{"name": "root", "key": "a" * 32, "rights": ["Manage", "Listen", "Send"]}]


def settings(listen=("tcp:9090:interface=10.0.0.5",), node_url="ws://10.0.0.5:9100", **more):
    data = {"rules": RULES, "relay": {"listen": list(listen)},
            "cluster": {"redis": "redis://127.0.0.1:6379/0", "node_url": node_url}}
    for key, value in more.items():
        data[key] = value
    return config.parse(data, "t.toml")


def test_each_worker_shares_the_public_ports_and_has_its_own_node_port_and_id():
    base = settings(tcp_ports=[{"listen": "tcp:6379", "entity": "redis", "mode": "port"}],
                    hybrid_connections=[{"path": "redis"}],
                    metrics={"listen": "tcp:9300:interface=127.0.0.1"})
    one = workers.worker_settings(base, 1)
    assert one.listen == ["tcp:9090:interface=10.0.0.5:reuseport=1", "tcp:9101:interface=10.0.0.5"]
    assert [t.listen for t in one.tcp_ports] == ["tcp:6379:reuseport=1"]
    assert one.metrics_listen == "tcp:9301:interface=127.0.0.1"
    assert (one.cluster.node_url, one.cluster.node_id) == ("ws://10.0.0.5:9101", "10.0.0.5-9101")
    zero = workers.worker_settings(base, "0")
    assert (zero.cluster.node_url, zero.listen[-1]) == ("ws://10.0.0.5:9100", "tcp:9100:interface=10.0.0.5")
    assert base.cluster.node_url == "ws://10.0.0.5:9100"  # the config's own settings unchanged
    for description in one.listen + [one.tcp_ports[0].listen, one.metrics_listen]:
        endpoint_strings.parse_listen(description)  # every derived string is valid


def test_tls_files_and_a_configured_node_id_carry_over(tmp_path):
    from tests.support.tls import make_ca_and_server

    certs = make_ca_and_server(str(tmp_path))
    listen = "ssl:9443:privateKey=%s:certKey=%s" % (certs["server-key.pem"], certs["server-cert.pem"])
    base = settings([listen], node_url="wss://relay-a.example:9500")
    base.cluster.node_id = "a"
    two = workers.worker_settings(base, 2)
    assert two.listen == [listen + ":reuseport=1", listen.replace("9443", "9502")]
    assert (two.cluster.node_url, two.cluster.node_id) == ("wss://relay-a.example:9502", "a-2")


@pytest.mark.parametrize("listen, node_url, words", [
    (["unix:relayd.sock"], "ws://a:9100", "Unix socket cannot be shared"),
    (["tcp:0"], "ws://a:9100", "not port 0"),
    (["tcp:9101"], "ws://a:9100", "node port 9101 is also a shared listen port"),
    (["tcp:9090"], "ws://a:65535", "past 65535"),
])
def test_errors_say_what_to_fix(listen, node_url, words):
    with pytest.raises(config.ConfigError) as e:
        workers.worker_settings(settings(listen, node_url), 1)
    assert words in str(e.value)


def test_workers_need_a_cluster_and_a_sane_count():
    plain = config.parse({"rules": RULES}, "t.toml")
    with pytest.raises(config.ConfigError, match=r"needs \[cluster\]"):
        workers.worker_settings(plain, 0)
    assert workers.take_count(["--workers", "3", "-c", "x"]) == (3, ["-c", "x"])
    assert workers.take_count(["--workers=2"]) == (2, [])
    assert workers.take_count(["-c", "x"]) == (None, ["-c", "x"])
    assert workers.take_count(["--workers", "auto"])[0] >= 1
    for bad in ("0", "x", "257"):
        with pytest.raises(ValueError, match="--workers must be"):
            workers.take_count(["--workers", bad])


def test_reuseport_in_listen_strings():
    assert endpoint_strings.parse_listen("tcp:9090:reuseport=1").reuseport
    assert not endpoint_strings.parse_listen("tcp:9090").reuseport
    with pytest.raises(ValueError, match="reuseport= must be 1"):
        endpoint_strings.parse_listen("tcp:9090:reuseport=0")
    with pytest.raises(ValueError, match="unknown option reuseport="):
        endpoint_strings.parse_listen("unix:x.sock:reuseport=1")
