"""Shared fixtures: a relay in this process (real loopback sockets) and a relay as a
``twistd -n relayd`` subprocess.  The helpers themselves live in :mod:`tests.support`."""

import pytest
import pytest_twisted

from tests.support.relay import (  # noqa: F401  (tests/unit still import the keys from here)
    LISTEN_KEY, ROOT_KEY, SEND_KEY, RelayProcess, write_config,
)


@pytest.fixture
def tls_relay(tmp_path):
    """A relay subprocess listening with TLS (``ssl:``) on a throwaway CA's certificate;
    ``certs`` has the paths of ca.pem, server-key.pem and server-cert.pem."""
    from tests.support.tls import make_ca_and_server

    certs = make_ca_and_server(tmp_path)
    listen = '["ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s"]' % (
        certs["server-key.pem"], certs["server-cert.pem"])
    relay = RelayProcess(tmp_path, write_config(tmp_path, listen=listen))
    relay.certs = certs
    yield relay
    relay.stop()


@pytest.fixture
def relay_proc(tmp_path):
    """A relay subprocess with the test config (entities echo, open, few, scoped)."""
    proc = RelayProcess(tmp_path, write_config(tmp_path))
    yield proc
    proc.stop()


class InProcessRelay:
    def __init__(self, service, port):
        self.service = service
        self.port = port
        self.host = "127.0.0.1"
        self.url = "ws://127.0.0.1:%d" % port
        self.http_url = "http://127.0.0.1:%d" % port


@pytest_twisted.async_yield_fixture
async def relay(tmp_path):
    """A relay running in the test's reactor, listening on an ephemeral loopback port."""
    from twisted.internet import reactor

    from relayd import config
    from relayd.tap import RelayService

    settings = config.load(write_config(tmp_path))
    service = RelayService(settings, reactor)
    service.startService()
    await service.whenListening()
    yield InProcessRelay(service, service.ports[0].getHost().port)
    await service.stopService()
    service.store.close()
