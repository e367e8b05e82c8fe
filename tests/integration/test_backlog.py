"""The listen backlog of every listening socket (HTTP/WebSocket port, TCP doors, bridge -L) is
limits.listen_backlog (default 1024), not Twisted's 50.  Measured on the real sockets of real
processes: for a listening TCP socket ``ss -ltn`` reports the backlog as Send-Q."""

import subprocess
import sys

import pytest

from relayd.endpoint_strings import DEFAULT_LISTEN_BACKLOG
from tests.support.net import free_port
from tests.support.relay import ROOT_KEY, RelayProcess, require_tool, stop_process, write_config
from tests.support.waits import file_reader, wait_for_text


def listen_backlog(port):
    """Send-Q (= the backlog) of the socket listening on 127.0.0.1:port, from ss."""
    out = subprocess.run(["ss", "-Hltn", "sport = :%d" % port], capture_output=True, text=True, timeout=10)
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "LISTEN" and fields[3].endswith(":%d" % port):
            return int(fields[2])
    raise AssertionError("nothing listens on port %d:\n%s" % (port, out.stdout))


def somaxconn():
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


def door_port(relay):
    return relay.door_port("door (echo)")


def test_default_backlog_on_the_http_port_and_the_tcp_door(tmp_path):
    require_tool("ss", "reads the listen backlog of a socket (iproute2)")
    assert DEFAULT_LISTEN_BACKLOG >= 1024
    expected = min(DEFAULT_LISTEN_BACKLOG, somaxconn())
    config = write_config(tmp_path, extra="""
        [[tcp_ports]]
        listen = "tcp:0:interface=127.0.0.1"
        entity = "echo"
        """)
    relay = RelayProcess(tmp_path, config)
    try:
        assert listen_backlog(relay.port) == expected
        assert listen_backlog(door_port(relay)) == expected
    finally:
        relay.stop()


def test_backlog_is_configurable_and_an_endpoint_string_may_override_it(tmp_path):
    require_tool("ss", "reads the listen backlog of a socket (iproute2)")
    config = write_config(tmp_path, listen='["tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1:backlog=77"]',
                          extra="""
        [limits]
        listen_backlog = 2000
        """)
    relay = RelayProcess(tmp_path, config)
    try:
        m = relay.wait_log(r"(?s)relayd listening on [0-9.]+:(\d+).*relayd listening on [0-9.]+:(\d+)", 10)
        ports = [int(p) for p in m.groups()]
        assert sorted(listen_backlog(p) for p in ports) == [77, min(2000, somaxconn())]
    finally:
        relay.stop()


def test_bridge_local_forwarder_backlog(tmp_path):
    require_tool("ss", "reads the listen backlog of a socket (iproute2)")
    port = free_port()
    cs = "Endpoint=sb://127.0.0.1:9/;SharedAccessKeyName=root;SharedAccessKey=%s" % ROOT_KEY
    log = open(tmp_path / "bridge.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "relayd.cli", "bridge", "-x", cs, "-L", "127.0.0.1:%d:echo" % port],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for_text(file_reader(tmp_path / "bridge.log"), "listening on", proc, 20)
        assert listen_backlog(port) == min(DEFAULT_LISTEN_BACKLOG, somaxconn())
    finally:
        stop_process(proc)
        log.close()


def test_listen_backlog_limit_is_validated():
    from relayd import config

    with pytest.raises(config.ConfigError, match="limits.listen_backlog: must be an integer from 1 to 65535"):
        config.parse({"limits": {"listen_backlog": 0}})
    with pytest.raises(config.ConfigError, match="backlog=x is not a number"):
        config.parse({"relay": {"listen": ["tcp:0:backlog=x"]}})
