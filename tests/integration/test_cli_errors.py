"""The ``relayd`` command as a new user meets it: mistakes get one-line messages that say what
to fix (never a traceback) and a non-zero status; ``relayd token`` takes -x and $RELAYD_KEY;
``relayd key show`` prints the endpoint the relay really listens on; ``relayd serve`` takes
twistd's --pidfile/--logfile and leaves no twistd.pid behind; -v/-q; ``relayd bridge`` takes
bracketed IPv6 addresses and Unix sockets.  Real processes on loopback."""

import os
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time

import pytest

from relayd.wire import sas
from tests.support.net import free_port
from tests.support.relay import ROOT_KEY, require, twistd_path
from tests.support.waits import file_reader, wait_for_text

CLI = [sys.executable, "-m", "relayd.cli"]
GOOD_CS = "Endpoint=sb://127.0.0.1:9/;SharedAccessKeyName=root;SharedAccessKey=%s" % ROOT_KEY


def clean_env(**extra):
    env = dict(os.environ)
    for name in ("RELAYD_KEY", "RELAYD_CONNECTION_STRING"):
        env.pop(name, None)
    env.update(extra)
    return env


def relayd(*args, env=None, cwd=None, timeout=60):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout,
                          env=env or clean_env(), cwd=cwd, stdin=subprocess.DEVNULL)


def assert_message(out, code, *fragments):
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    assert out.returncode == code, (out.returncode, text)
    for fragment in fragments:
        assert fragment in out.stderr, out.stderr


@pytest.mark.parametrize("args, fragments", [
    (["entity", "list"], ["relayd entity list:", "no relay given"]),
    (["entity", "list", "-x", "garbage"], ["relayd entity list:", "'garbage' is not of the form Key=Value"]),
    (["entity", "add", "bad path/", "-x", GOOD_CS], ["relayd entity add:", "'bad path/'", "letters, digits"]),
    (["entity", "show", "../x", "-x", GOOD_CS], ["relayd entity show:"]),
    (["token", "--rule", "root", "--key", ROOT_KEY, "--uri", "notauri"],
     ["relayd token:", "'notauri' is not an absolute URI"]),
    (["token", "--uri", "sb://127.0.0.1:9090/echo"], ["relayd token:", "SAS"]),
    (["token", "-x", "garbage", "echo"], ["relayd token:", "'garbage' is not of the form Key=Value"]),
    (["connect", "echo", "-x", "Endpoint=sb://h:notaport/;SharedAccessKeyName=r;SharedAccessKey=k"],
     ["relayd connect:", "bad port"]),
    (["bridge", "-x", GOOD_CS, "-L", "::1:80:echo"], ["relayd bridge:", "brackets"]),
    (["bridge", "-x", GOOD_CS, "-L", "[nope]:80:echo"], ["relayd bridge:", "not an IPv6 address"]),
])
def test_mistakes_get_messages_not_tracebacks(args, fragments):
    assert_message(relayd(*args), 2, *fragments)


def test_entity_command_that_cannot_reach_the_relay_says_so():
    out = relayd("entity", "list", "-x", GOOD_CS)
    assert_message(out, 1, "relayd entity list: cannot reach http://127.0.0.1:9")


@pytest.mark.parametrize("listen, fragment", [
    ("tcp:abc", "tcp:abc: port 'abc' is not a number"),
    ("tcp:0:interface=not-an-ip", "interface=not-an-ip is not an IP address"),
    ("tcp:0:colour=blue", "unknown option colour="),
    ("udp:53", "endpoint type 'udp' is not supported"),
    ("tcp:0:backlog=-1", "backlog=-1 is not a number"),
])
def test_bad_listen_endpoints_fail_at_config_load(tmp_path, listen, fragment):
    for cmd in ([twistd_path(), "-n", "--pidfile=", "relayd", "--listen", listen],
                CLI + ["serve", "--listen", listen]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                             env=clean_env(RELAYD_DATA_DIR=str(tmp_path / "state")), stdin=subprocess.DEVNULL)
        text = out.stdout + out.stderr
        assert out.returncode != 0 and fragment in text and "Traceback" not in text, text
    assert not os.path.exists(tmp_path / "state" / "relayd.sqlite")  # failed before touching state


# -- relayd token -----------------------------------------------------------------------------

def test_token_takes_a_connection_string_and_relayd_key():
    out = relayd("token", "-x", GOOD_CS, "echo", "--ttl", "60")
    assert out.returncode == 0, out.stderr
    rule = sas.Rule("root", ROOT_KEY, frozenset({"Send"}))
    assert sas.verify_token(out.stdout.strip(), "ws://127.0.0.1:9/$hc/echo", [rule], "Send", time.time())
    # the key from $RELAYD_KEY, the rule from --rule, the path from -x's EntityPath
    out = relayd("token", "-x", "Endpoint=sb://127.0.0.1:9/;EntityPath=echo", "--rule", "root",
                 env=clean_env(RELAYD_KEY=ROOT_KEY))
    assert out.returncode == 0, out.stderr
    assert sas.verify_token(out.stdout.strip(), "ws://127.0.0.1:9/$hc/echo", [rule], "Send", time.time())
    # --uri with the key from $RELAYD_KEY
    out = relayd("token", "--rule", "root", "--uri", "sb://127.0.0.1:9/echo", env=clean_env(RELAYD_KEY=ROOT_KEY))
    assert out.returncode == 0, out.stderr
    assert sas.verify_token(out.stdout.strip(), "ws://127.0.0.1:9/$hc/echo", [rule], "Send", time.time())


# -- relayd serve and relayd key show ------------------------------------------------------------

def test_serve_takes_twistd_options_and_key_show_prints_the_real_endpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    env = clean_env(RELAYD_DATA_DIR=str(tmp_path / "state"))
    logfile, pidfile = tmp_path / "relayd.log", tmp_path / "relayd.pid"
    proc = subprocess.Popen(CLI + ["serve", "--logfile", str(logfile), "--pidfile=%s" % pidfile,
                                   "--listen", "tcp:0:interface=127.0.0.1"],
                            cwd=run, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        port = int(wait_for_text(file_reader(logfile), r"relayd listening on 127\.0\.0\.1:(\d+)", proc).group(1))
        assert pidfile.read_text().strip() == str(proc.pid)
        shown = relayd("key", "show", env=env)
        assert shown.returncode == 0, shown.stderr
        assert "Endpoint=sb://127.0.0.1:%d/;" % port in shown.stdout, shown.stdout
        key = re.search(r"^key:\s+(\S+)$", shown.stdout, re.M).group(1)
        cs = re.search(r"^connection string: (\S+)$", shown.stdout, re.M).group(1)
        # the printed connection string works as is
        listed = relayd("entity", "list", "-x", cs, env=env)
        assert listed.returncode == 0, listed.stderr
        assert key not in logfile.read_text()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert os.listdir(run) == [], os.listdir(run)  # no twistd.pid (or anything) in the cwd
    assert not pidfile.exists()  # removed on exit


def test_serve_without_pidfile_leaves_the_cwd_clean(tmp_path):
    env = clean_env(RELAYD_DATA_DIR=str(tmp_path / "state"))
    run = tmp_path / "run"
    run.mkdir()
    log = tmp_path / "out.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(CLI + ["serve", "--listen", "tcp:0:interface=127.0.0.1"], cwd=run, env=env,
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for_text(file_reader(log), r"relayd listening on", proc)
        assert os.listdir(run) == [], os.listdir(run)
    finally:
        proc.terminate()
        proc.wait(15)


def test_key_show_for_a_tls_relay_says_use_tls(tmp_path):
    from tests.support.tls import make_ca_and_server

    certs = make_ca_and_server(tmp_path)
    env = clean_env(RELAYD_DATA_DIR=str(tmp_path / "state"))
    log = tmp_path / "out.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([twistd_path(), "-n", "--pidfile=", "relayd", "--listen",
                                 "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s"
                                 % (certs["server-key.pem"], certs["server-cert.pem"])],
                                cwd=tmp_path, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        port = int(wait_for_text(file_reader(log), r"relayd listening on 127\.0\.0\.1:(\d+)", proc).group(1))
        shown = relayd("key", "show", env=env)
        assert "Endpoint=sb://127.0.0.1:%d/;UseTls=true;" % port in shown.stdout, shown.stdout
    finally:
        proc.terminate()
        proc.wait(15)


# -- -v / -q ------------------------------------------------------------------------------------

def test_quiet_and_verbose(shared_relay):
    cs = "Endpoint=%s/;SharedAccessKeyName=root;SharedAccessKey=%s" % (shared_relay.url, ROOT_KEY)
    for args in (["-q", "listen", "echo", "-x", cs], ["listen", "echo", "-q", "-x", cs]):
        online_before = shared_relay.log_text().count("online on echo")
        proc = subprocess.Popen(CLI + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=clean_env())
        try:
            deadline = time.time() + 30
            while shared_relay.log_text().count("online on echo") == online_before:  # the relay's log
                if proc.poll() is not None:
                    pytest.fail("relayd %s exited with %s: %s" % (" ".join(args[:3]), proc.returncode,
                                                                  proc.communicate()[1]))
                assert time.time() < deadline
                time.sleep(0.05)
            sender = relayd("connect", "echo", "-x", cs, timeout=60)
            assert sender.returncode == 0, sender.stderr
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            assert b"online" not in err, err  # -q: only problems on stderr
        finally:
            if proc.poll() is None:
                proc.kill()
    out = relayd("-v", "connect", "echo", "-x", cs, timeout=60)  # nobody listens: 404
    assert out.returncode == 1
    assert "connecting to ws://127.0.0.1:%d/$hc/echo" % shared_relay.port in out.stderr, out.stderr
    assert "404" in out.stderr
    out = relayd("-q", "-v", "connect", "echo", "-x", cs)
    assert_message(out, 2, "-q", "-v")


# -- relayd bridge: IPv6 and Unix sockets -------------------------------------------------------------

class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                self.request.shutdown(socket.SHUT_WR)
                return
            self.request.sendall(data)


def ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def round_trip(family, address, data):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(address)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    return got


def test_bridge_with_unix_sockets_and_bracketed_ipv6(shared_relay, tmp_path):
    require(ipv6_loopback(), "no IPv6 loopback (::1) on this machine")
    service_path = str(tmp_path / "service.sock")
    server = socketserver.ThreadingUnixStreamServer(service_path, _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s6 = socket.socket(socket.AF_INET6)
    s6.bind(("::1", 0))
    port6 = s6.getsockname()[1]
    s6.close()
    local_path = str(tmp_path / "local.sock")
    log = tmp_path / "bridge.log"
    with open(log, "wb") as f:
        bridge = subprocess.Popen(CLI + ["bridge", "--url", shared_relay.url, "--rule", "root", "--key", ROOT_KEY,
                                         "-R", "echo:%s" % service_path, "-L", "[::1]:%d:echo" % port6,
                                         "-L", "%s:echo" % local_path],
                                  stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=clean_env())
    try:
        wait_for_text(file_reader(log), r"listening on \[::1\]:%d" % port6, bridge)
        wait_for_text(file_reader(log), r"listening on %s" % re.escape(local_path), bridge)
        wait_for_text(file_reader(log), r"-R echo->%s: online" % re.escape(service_path), bridge)
        data = os.urandom(100_000)
        assert round_trip(socket.AF_INET6, ("::1", port6), data) == data
        assert round_trip(socket.AF_UNIX, local_path, data) == data
    finally:
        bridge.terminate()
        bridge.wait(15)
        server.shutdown()
        server.server_close()


def test_bridge_quiet_logs_only_problems(shared_relay, tmp_path):
    number = free_port()
    logs = {}
    since = shared_relay.log_end()
    for flag in ("-v", "-q"):
        log = tmp_path / ("bridge%s.log" % flag)
        with open(log, "wb") as f:
            bridge = subprocess.Popen(CLI + [flag, "bridge", "--url", shared_relay.url, "--rule", "root", "--key",
                                             ROOT_KEY, "-R", "echo:127.0.0.1:9", "-L", "127.0.0.1:%d:echo" % number],
                                      stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=clean_env())
        try:
            online = 1 if flag == "-v" else 2  # the relay's log counts both runs
            shared_relay.wait_log(r"(?s)(online on echo.*){%d}" % online, since=since)
            if flag == "-v":
                wait_for_text(file_reader(log), r"online", bridge)
        finally:
            bridge.terminate()
            bridge.wait(15)
        logs[flag] = log.read_text()
    assert "listening on 127.0.0.1:%d" % number in logs["-v"] and "online" in logs["-v"], logs["-v"]
    assert "listening on" not in logs["-q"] and "online" not in logs["-q"], logs["-q"]
    out = relayd("bridge", "-q", "-v", "--url", shared_relay.url, "-L", "1:echo")
    assert_message(out, 2, "-q and -v")


def test_serve_refuses_client_verbosity_flags():
    assert_message(relayd("-q", "serve"), 2, "relayd serve:", "client commands")


@pytest.mark.parametrize("public_url, host, port, tls, expected", [
    (None, "127.0.0.1", 9090, False, "sb://127.0.0.1:9090/"),
    (None, "127.0.0.1", 9443, True, "sb://127.0.0.1:9443/;UseTls=true"),
    (None, "0.0.0.0", 9090, False, "sb://127.0.0.1:9090/"),
    (None, "::", 9090, False, "sb://[::1]:9090/"),
    (None, "192.0.2.7", 9090, False, "sb://192.0.2.7:9090/;UseTls=false"),
    (None, "192.0.2.7", 443, True, "sb://192.0.2.7:443/"),
    ("wss://relay.example.com", "127.0.0.1", 9090, False, "sb://relay.example.com:443/"),
    ("ws://relay.example.com:8080", "127.0.0.1", 9090, False, "sb://relay.example.com:8080/;UseTls=false"),
])
def test_recorded_endpoint_means_what_the_relay_speaks(public_url, host, port, tls, expected):
    """The Endpoint= that relayd key show prints parses back to the right scheme, host and port."""
    from types import SimpleNamespace

    from relayd.client.connection_string import ConnectionInfo
    from relayd.relay_service import connection_endpoint

    endpoint = connection_endpoint(public_url, SimpleNamespace(host=host, port=port), tls)
    assert endpoint == expected
    info = ConnectionInfo.parse("Endpoint=%s;SharedAccessKeyName=r;SharedAccessKey=k" % endpoint)
    assert info.secure == (public_url.startswith("wss") if public_url else tls)
    assert info.port == (443 if public_url and public_url.startswith("wss") else 8080 if public_url else port)
