"""The relay's service tree (relayd.relay_service; relayd.tap's ``makeService`` returns it): a
MultiService with one DoorService per listening socket, binding in ``startService`` (after
twistd --uid has dropped root), telling when it listens, and failing loudly and cleanly when a
socket cannot be bound.  On MemoryReactorClock: no real sockets."""

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock

from relayd import config
from relayd.relay_service import DoorService, RelayService, StartupError
from relayd.transports.front import CountingFactory, FrontDoorFactory

HTTP_PORTS = [9001, 9002]
TCP_PORT = 9100
BUSY = 9666


class Port:
    """A listening port that knows whether it still listens."""

    def __init__(self, address):
        self.address = address
        self.listening = True

    def getHost(self):
        return self.address

    def stopListening(self):
        self.listening = False


class BusyReactor(MemoryReactorClock):
    """A MemoryReactorClock on which port BUSY is in use."""

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port == BUSY:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        super().listenTCP(port, factory, backlog, interface)
        return Port(IPv4Address("TCP", interface or "0.0.0.0", port))


def settings_for(tmp_path, listen, tcp_listen=()):
    settings = config.parse({
        "relay": {"listen": ["tcp:%d:interface=127.0.0.1" % p for p in listen],
                  "data_dir": str(tmp_path)},
        "hybrid_connections": [{"path": "echo"}],
        "tcp_ports": [{"listen": "tcp:%d:interface=127.0.0.1" % p, "entity": "echo"} for p in tcp_listen],
    }, "<test>")
    settings.data_dir = str(tmp_path)
    return settings


@pytest.fixture
def reactor():
    return BusyReactor()


def test_one_door_service_per_listening_socket(tmp_path, reactor):
    relay = RelayService(settings_for(tmp_path, HTTP_PORTS, [TCP_PORT]), reactor)
    assert isinstance(relay, MultiService)
    doors = list(relay)
    assert [d.description for d in doors] == [
        "tcp:9001:interface=127.0.0.1", "tcp:9002:interface=127.0.0.1", "tcp:9100:interface=127.0.0.1"]
    assert all(isinstance(d, StreamServerEndpointService) for d in doors)
    assert all(d.parent is relay for d in doors)
    assert [type(d.factory) for d in doors] == [FrontDoorFactory, FrontDoorFactory, CountingFactory]
    assert doors[0].factory is doors[1].factory is relay.front
    assert doors[2].factory.budget is relay.front.budget  # one connection budget for every door
    relay.store.close()


def test_doors_bind_in_start_service_not_before(tmp_path, reactor):
    relay = RelayService(settings_for(tmp_path, HTTP_PORTS, [TCP_PORT]), reactor)
    listened = []
    relay.whenListening().addCallback(listened.append)
    IService(relay).privilegedStartService()
    assert reactor.tcpServers == [] and listened == [] and relay.ports == []
    relay.startService()
    assert [(port, backlog, interface) for port, _f, backlog, interface in reactor.tcpServers] == [
        (9001, 1024, "127.0.0.1"), (9002, 1024, "127.0.0.1"), (9100, 1024, "127.0.0.1")]
    # whenListening fired with the bound ports, HTTP ports first
    assert [p.getHost().port for p in listened[0]] == [9001, 9002, 9100]
    assert [p.getHost().port for p in relay.ports] == [9001, 9002]
    assert [p.getHost().port for p in relay.tcp_ports] == [9100]
    # ... and fires at once for a late caller
    late = []
    relay.whenListening().addCallback(late.append)
    assert late == listened
    # the connection-string endpoint recorded for `relayd key show`: the first HTTP port
    assert (tmp_path / config.ENDPOINT_FILE).read_text() == "sb://127.0.0.1:9001/\n"
    relay.stopService()
    relay.store.close()


def test_a_port_in_use_is_a_startup_error_and_releases_the_others(tmp_path, reactor):
    relay = RelayService(settings_for(tmp_path, [9001], [BUSY, TCP_PORT]), reactor)
    waiting = relay.whenListening()
    failures = []
    waiting.addErrback(failures.append)
    with pytest.raises(StartupError) as raised:
        relay.startService()
    assert str(raised.value) == ("cannot listen on tcp:%d:interface=127.0.0.1: Couldn't listen on "
                                 "127.0.0.1:%d: [Errno 98] Address already in use." % (BUSY, BUSY))
    bound = [door.port for door in relay if door.port is not None]
    assert [p.getHost().port for p in bound] == [9001]  # the door after BUSY never started
    assert all(not p.listening for p in bound)  # stopped listening again
    assert failures and failures[0].value.subFailure.check(StartupError)
    stopped = []
    relay.stopService().addCallback(stopped.append)
    assert [ok for ok, _result in stopped[0]] == [True, True, True] and not relay.running
    relay.store.close()


def test_door_service_tells_each_waiter(reactor):
    door = DoorService(reactor, "tcp:9001:interface=127.0.0.1", 50, object(), "test door on")
    early = [door.whenListening() for _ in range(2)]
    got = []
    for d in early:
        d.addCallback(got.append)
    door.startService()
    assert len(got) == 2 and got[0] is got[1] is door.port
    port, _factory, backlog, _interface = reactor.tcpServers[0]
    assert (port, backlog) == (9001, 50)
    door.stopService()
    assert door.port is None and not got[0].listening
