"""Start-up failures are loud: a listen address that cannot be bound makes ``twistd -n relayd``,
``relayd serve`` and ``relayd bridge -L`` exit non-zero within seconds, naming the address and
the cause (real processes, real sockets)."""

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.support.relay import ROOT_KEY, require, twistd_path, write_config

EXIT_DEADLINE = 15  # seconds; the process must be gone well before this


def run_until_exit(cmd, cwd, env=None, timeout=EXIT_DEADLINE):
    """Run ``cmd``; return (returncode, output, seconds) or fail if it is still running."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail("still running after %ss although it cannot listen:\n%s" % (timeout, out.decode(errors="replace")))
    return proc.returncode, out.decode(errors="replace"), time.monotonic() - started


@pytest.fixture
def busy_port():
    """A loopback port another socket is listening on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


def relay_env(tmp_path):
    return dict(os.environ, RELAYD_DATA_DIR=str(tmp_path / "state"))


def assert_loud(code, out, seconds, address, cause):
    assert code != 0, out
    assert seconds < 10, seconds
    assert address in out, out
    assert cause in out, out
    assert "Traceback" not in out, out


def test_twistd_exits_when_the_port_is_in_use(tmp_path, busy_port):
    code, out, seconds = run_until_exit(
        [twistd_path(), "-n", "--pidfile=", "relayd", "--listen", "tcp:%d:interface=127.0.0.1" % busy_port],
        tmp_path, relay_env(tmp_path))
    assert_loud(code, out, seconds, "127.0.0.1:%d" % busy_port, "Address already in use")


def test_twistd_exits_when_a_tcp_door_cannot_listen(tmp_path, busy_port):
    config = write_config(tmp_path, extra="""
        [[tcp_ports]]
        listen = "tcp:%d:interface=127.0.0.1"
        entity = "echo"
        """ % busy_port)
    code, out, seconds = run_until_exit([twistd_path(), "-n", "--pidfile=", "relayd", "--config", config], tmp_path)
    assert_loud(code, out, seconds, "127.0.0.1:%d" % busy_port, "Address already in use")


def test_twistd_removes_its_pidfile_when_it_cannot_listen(tmp_path, busy_port):
    pidfile = tmp_path / "relayd.pid"
    code, out, seconds = run_until_exit(
        [twistd_path(), "-n", "--pidfile", str(pidfile), "relayd", "--listen", "tcp:%d:interface=127.0.0.1" % busy_port],
        tmp_path, relay_env(tmp_path))
    assert_loud(code, out, seconds, "127.0.0.1:%d" % busy_port, "Address already in use")
    assert not pidfile.exists()


def test_twistd_exits_when_the_address_is_not_local(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is on no interface: bind fails with EADDRNOTAVAIL
    code, out, seconds = run_until_exit(
        [twistd_path(), "-n", "--pidfile=", "relayd", "--listen", "tcp:0:interface=192.0.2.1"],
        tmp_path, relay_env(tmp_path))
    assert_loud(code, out, seconds, "192.0.2.1", "Cannot assign requested address")


def test_twistd_exits_when_the_unix_socket_directory_is_missing(tmp_path):
    path = tmp_path / "no-such-dir" / "relayd.sock"
    code, out, seconds = run_until_exit(
        [twistd_path(), "-n", "--pidfile=", "relayd", "--listen", "unix:%s" % path], tmp_path, relay_env(tmp_path))
    assert_loud(code, out, seconds, str(path), "No such file or directory")


def test_relayd_serve_exits_when_the_port_is_in_use(tmp_path, busy_port):
    code, out, seconds = run_until_exit(
        [sys.executable, "-m", "relayd.cli", "serve", "--listen", "tcp:%d:interface=127.0.0.1" % busy_port],
        tmp_path, relay_env(tmp_path))
    assert_loud(code, out, seconds, "127.0.0.1:%d" % busy_port, "Address already in use")


def test_bridge_local_forwarder_exits_when_the_port_is_in_use(tmp_path, busy_port):
    cs = "Endpoint=sb://127.0.0.1:9/;SharedAccessKeyName=root;SharedAccessKey=%s" % ROOT_KEY
    code, out, seconds = run_until_exit(
        [sys.executable, "-m", "relayd.cli", "bridge", "-x", cs, "-L", "127.0.0.1:%d:echo" % busy_port], tmp_path)
    assert_loud(code, out, seconds, "127.0.0.1:%d" % busy_port, "Address already in use")


def test_twistd_exits_when_it_may_not_bind_the_port(tmp_path):
    """Permission: a port below ip_unprivileged_port_start for a user without the right.  As
    root the relay drops to nobody first (twistd --uid: relayd binds in startService, after
    twistd has shed its privileges)."""
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            first_free = int(f.read())
    except OSError:
        first_free = 1024
    if first_free <= 1:
        require(False, "every port is unprivileged on this machine (net.ipv4.ip_unprivileged_port_start)")
    drop = []
    if os.geteuid() == 0:
        import grp
        import pwd

        try:
            pwd.getpwnam("nobody")
            group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
        except KeyError:
            require(False, "no user nobody to drop root privileges to")
        drop = ["--uid", "nobody", "--gid", group]
    os.chmod(tmp_path, 0o755)
    code, out, seconds = run_until_exit(
        [twistd_path(), "-n", "--pidfile=", *drop, "relayd", "--listen", "tcp:1:interface=127.0.0.1"],
        tmp_path, relay_env(tmp_path))
    assert_loud(code, out, seconds, "127.0.0.1:1", "Permission denied")
