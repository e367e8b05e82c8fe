"""The bridge agents over wss:// (issue 10 item 3): TLS to the relay keeps Twisted's ordinary
read and write path (fastio declines a TLS transport) and carries the same frames: 8 MiB each
way at once through ``bridge -L`` -> relayd (TLS) -> ``bridge -R``, with a half-close, byte for
byte."""

from tests.integration.test_bridge_datapath import both_ways, bridges


def test_8_mib_each_way_through_bridges_over_wss(tls_relay, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", tls_relay.certs["ca.pem"])  # the agents trust the test CA
    tls_relay.url = "wss://127.0.0.1:%d" % tls_relay.port
    with bridges(tmp_path, tls_relay, "echo") as (remote, local, port, service):
        both_ways(remote, local, port, service, 8 << 20)
