"""Shared fixtures: a relay in this process (real loopback sockets) and a relay as a
``twistd -n relayd`` subprocess.  The helpers themselves live in :mod:`tests.support`."""

import os
import sys
import tempfile

import pytest
import pytest_twisted

# The suite starts a few hundred Python processes (relays, CLI commands, bridges), and each xdist
# worker rewrites the asserts of every test module: without cached bytecode each of them compiles
# its modules from source again (~0.1 s CPU a process, ~2 s a worker).  Where the environment
# turns the cache off (PYTHONDONTWRITEBYTECODE), the tests and the processes they start keep it
# in a directory of their own under the system's temp dir (PYTHONPYCACHEPREFIX), so the checkout
# stays as it was.  Set before the xdist workers start: they and their children inherit it.
if os.environ.get("PYTHONDONTWRITEBYTECODE"):
    PYCACHE = os.path.join(tempfile.gettempdir(), "relayd-tests-pycache-%d" % os.getuid())
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = PYCACHE
    sys.dont_write_bytecode = False
    sys.pycache_prefix = PYCACHE

from tests.support.relay import (  # noqa: F401  (tests/unit still import the keys from here)
    LISTEN_KEY, ROOT_KEY, SEND_KEY, RelayProcess, SharedRelay, write_config,
)


@pytest.fixture(scope="session")
def _shared_tls_relay_process(tmp_path_factory):
    from tests.support.tls import make_ca_and_server

    workdir = tmp_path_factory.mktemp("shared-tls-relay")
    relay = SharedRelay(workdir, certs=make_ca_and_server(workdir))
    yield relay
    relay.stop()


@pytest.fixture
def tls_relay(_shared_tls_relay_process):
    """The worker's relay subprocess listening with TLS (``ssl:``) on a throwaway CA's
    certificate; ``certs`` has the paths of ca.pem, server-key.pem and server-cert.pem.  Shared
    like :func:`shared_relay`: a test leaves it as it found it."""
    yield from _shared_tls_relay_process.borrowed()


@pytest.fixture
def relay_proc(tmp_path):
    """A relay subprocess with the test config (entities echo, open, few, scoped)."""
    proc = RelayProcess(tmp_path, write_config(tmp_path))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def _shared_relay_process(tmp_path_factory):
    relay = SharedRelay(tmp_path_factory.mktemp("shared-relay"))
    yield relay
    relay.stop()


@pytest.fixture
def shared_relay(_shared_relay_process):
    """The worker's relay subprocess with the test config (entities echo, open, few, scoped),
    shared by the tests that leave it as they found it: no entity added or removed, every
    listener and connection gone by the end of the test (checked after each test, see
    :class:`tests.support.relay.SharedRelay`)."""
    yield from _shared_relay_process.borrowed()


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
    from relayd.relay_service import RelayService

    settings = config.load(write_config(tmp_path))
    service = RelayService(settings, reactor)
    service.startService()
    await service.whenListening()
    yield InProcessRelay(service, service.ports[0].getHost().port)
    await service.stopService()
    service.store.close()
