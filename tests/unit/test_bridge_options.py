"""relayd bridge without a network: the -R/-L/-H specs, --config, and the IForwarder contract
every forwarder keeps (the end-to-end behaviour is in tests/integration/test_tcp_bridge.py and
test_http_bridge.py)."""

import argparse

import pytest
from twisted.internet.testing import MemoryReactorClock
from zope.interface.verify import verifyObject

from relayd.client.bridge.cli import BridgeError, build_parser, load_config, parse_http, parse_local, parse_remote
from relayd.client.bridge.forwarder import IForwarder, address
from relayd.client.bridge.tcp_local import LocalForwarder
from relayd.client.bridge.tcp_remote import RemoteForwarder
from relayd.client.connection_string import ConnectionInfo
from relayd.client.http import HttpForwarder

INFO = ConnectionInfo.parse("Endpoint=sb://127.0.0.1:9090/;SharedAccessKeyName=root;SharedAccessKey=a2V5")


@pytest.mark.parametrize("spec, parsed", [
    ("redis:6379", ("redis", "127.0.0.1", 6379, None)),
    ("redis:10.0.0.5:6379", ("redis", "10.0.0.5", 6379, None)),
    ("ssh:[::1]:22", ("ssh", "::1", 22, None)),
    ("sock:/sockets/app.sock", ("sock", "/sockets/app.sock", None, None)),
    ("wcf:net.tcp://svc.local:808/calc", ("wcf", "svc.local", 808, "net.tcp://svc.local:808/calc")),
])
def test_remote_specs(spec, parsed):
    assert parse_remote(spec) == parsed


@pytest.mark.parametrize("spec, parsed", [
    ("8080:echo", ("127.0.0.1", 8080, "echo")),
    ("0.0.0.0:8080:a/b", ("0.0.0.0", 8080, "a/b")),
    ("[::1]:8080:echo", ("::1", 8080, "echo")),
    ("/sockets/x.sock:echo", ("/sockets/x.sock", None, "echo")),
])
def test_local_specs(spec, parsed):
    assert parse_local(spec) == parsed


@pytest.mark.parametrize("option, spec, words", [
    ("-R", "redis", "expected ENTITY:[HOST:]PORT"),
    ("-R", "redis:host:http", "'http' is not a port number"),
    ("-R", "redis:70000", "port 70000 is out of range"),
    ("-R", "ssh:::1:22", "put an IPv6 address in brackets, e.g. [::1]:22"),
    ("-R", "ssh:[nothex]:22", "'nothex' is not an IPv6 address"),
    ("-R", "wcf:net.tcp://svc.local/calc", "the net.tcp URI needs a host and a port"),
    ("-L", "echo", "expected [BIND:]PORT:ENTITY"),
    ("-L", "[::1:8080:echo", "expected [IPV6]:PORT"),
    ("-H", "web:ftp://x", "expected ENTITY:http://HOST:PORT[/BASE]"),
])
def test_bad_specs_say_what_to_write(option, spec, words):
    parse = {"-R": parse_remote, "-L": parse_local, "-H": parse_http}[option]
    with pytest.raises(BridgeError) as e:
        parse(spec)
    assert str(e.value).startswith("%s %r: " % (option, spec))
    assert words in str(e.value)


def test_config_file_extends_the_command_line(tmp_path):
    path = tmp_path / "bridge.toml"
    path.write_text('connection_string = "Endpoint=sb://h/"\nremote = ["a:1"]\nlocal = ["2:b"]\n')
    args = build_parser().parse_args(["--config", str(path), "-R", "c:3"])
    load_config(args)
    assert (args.connection_string, args.remote, args.local, args.http) == (
        "Endpoint=sb://h/", ["c:3", "a:1"], ["2:b"], [])


def test_config_file_unknown_keys_are_named(tmp_path):
    path = tmp_path / "bridge.toml"
    path.write_text('remotes = ["a:1"]\n')
    with pytest.raises(BridgeError) as e:
        load_config(argparse.Namespace(config=str(path)))
    assert str(e.value) == ("%s: unknown keys ['remotes']; expected connection_string, remote, local, http"
                            % path)


def test_addresses_in_messages():
    assert address("127.0.0.1", 80) == "127.0.0.1:80"
    assert address("::1", 80) == "[::1]:80"
    assert address("/sockets/x.sock", None) == "/sockets/x.sock"


def test_every_forwarder_keeps_the_contract():
    reactor = MemoryReactorClock()
    remote = RemoteForwarder(reactor, INFO, "redis", "::1", 6379)
    local = LocalForwarder(reactor, INFO, "127.0.0.1", 8080, "echo")
    assert verifyObject(IForwarder, remote) and remote.label == "-R redis->[::1]:6379"
    assert verifyObject(IForwarder, local) and local.label == "-L 127.0.0.1:8080->echo"
    assert local.backlog == 1024
    # -H is the listener SDK's HttpForwarder, which keeps the same contract without naming it
    web = HttpForwarder(reactor, INFO, "web", "http://127.0.0.1:8000")
    assert verifyObject(IForwarder, web, tentative=True) and web.label == "-H web->http://127.0.0.1:8000"


def test_local_forwarder_listens_with_its_backlog_and_stops():
    reactor = MemoryReactorClock()
    local = LocalForwarder(reactor, INFO, "::1", 0, "echo", backlog=7)
    started = []
    local.start().addCallback(started.append)
    port, factory, backlog, interface = reactor.tcpServers[0]
    assert (port, factory, backlog, interface) == (0, local, 7, "::1")
    assert started == [local]
    stopped = []
    local.stop().addCallback(stopped.append)
    assert stopped == [None]
