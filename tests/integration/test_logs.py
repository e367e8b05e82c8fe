"""``twistd relayd`` logs people can use (issue 12, Deliver 7): ``-q`` keeps warnings and errors
only, ``-v`` adds debug lines, ``--log-format json`` writes one parseable JSON object per line
(also to twistd's ``--logfile``), no Twisted "Starting factory" lines in the relay's or a busy
``relayd bridge``'s log, and no key or signature in the log at any level or format."""

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import psutil

from relayd.wire import sas
from tests.support import rawws
from tests.support.relay import (LISTEN_KEY, ROOT_KEY, SEND_KEY, Bridge, stop_process, twistd_path,
                                 write_config)
from tests.support.waits import file_reader, wait_for_text, wait_until

NOISE = "Starting factory", "Stopping factory"


class Relay:
    """``twistd -n [twistd options] relayd --config ... [relayd options]``; its port read from the
    process's listening socket, not from its log (``-q`` hides the "listening on" line)."""

    def __init__(self, tmp_path, relayd_args=(), twistd_args=(), relay_extra="", log_name="relayd.log"):
        self.log_path = str(tmp_path / log_name)
        self.stdout_path = str(tmp_path / "stdout.log")
        config = write_config(tmp_path, relay_extra=relay_extra)
        self.proc = subprocess.Popen(
            [twistd_path(), "-n", "--pidfile=", *twistd_args, "relayd", "--config", config, *relayd_args],
            cwd=str(tmp_path), stdout=open(self.stdout_path, "wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        try:
            self.port = wait_until(self._listening_port, timeout=30)
            assert self.port, "the relay is not listening:\n" + file_reader(self.stdout_path)()
            self.http_url = self.url = "http://127.0.0.1:%d" % self.port
        except BaseException:
            self.stop()
            raise

    def _listening_port(self):
        assert self.proc.poll() is None, file_reader(self.stdout_path)()
        for conn in psutil.Process(self.proc.pid).net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN:
                return conn.laddr.port
        return None

    def text(self):
        return file_reader(self.log_path)()

    def wait(self, pattern, timeout=20):
        return wait_for_text(self.text, pattern, self.proc, timeout)

    def stop(self):
        stop_process(self.proc)


def _refused_connect(relay, key=ROOT_KEY, path="echo"):
    token = sas.make_token("%s/%s" % (relay.http_url, path), "root", key, int(time.time()) + 60)
    ws = rawws.RawWS(relay.port).start(rawws.hc_url(relay, path, "connect", sb_hc_token=token))
    return ws.finish(), token


def _manage_get(relay, path, token):
    request = urllib.request.Request(relay.http_url + path, headers={"Authorization": token})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_quiet_keeps_warnings_and_errors_only(tmp_path):
    relay = Relay(tmp_path, ["-q"], ["--logfile", "relayd.log"], relay_extra="[limits]\nmax_connections = 1")
    try:
        held = socket.create_connection(("127.0.0.1", relay.port))  # the relay's one connection
        wait_until(lambda: relay.proc.pid and len(psutil.Process(relay.proc.pid).net_connections("tcp")) > 1)
        refused = socket.create_connection(("127.0.0.1", relay.port))
        relay.wait(r"#warn\] relayd refused 1 connection\(s\) .* at its connection limit of 1")
        refused.close()
        held.close()
        assert rawws.RawWS(relay.port).start(rawws.hc_url(relay, "nowhere", "connect")).finish() == 404
    finally:
        relay.stop()
    text = relay.text()
    assert "#info]" not in text and "#debug]" not in text, text  # not even twistd's "starting up"
    assert "Server Shut Down" not in text and "listening on" not in text


def test_verbose_adds_debug_lines_and_no_secret_reaches_the_log_in_either_format(tmp_path):
    for fmt in ("text", "json"):
        workdir = tmp_path / fmt
        workdir.mkdir()
        relay = Relay(workdir, ["-v", "--log-format", fmt], ["--logfile", "relayd.log"])
        try:
            secrets = [ROOT_KEY, SEND_KEY, LISTEN_KEY]
            ctl = rawws.RawWS(relay.port).start(rawws.hc_url(
                relay, "echo", "listen", sb_hc_token=rawws.token(relay, "echo")))  # token in the query
            assert ctl.finish() == 101
            _ctl, sender, leg = rawws.pair(relay, "echo", ctl)
            sender.sock.close(), leg.sock.close()
            status, bad = _refused_connect(relay, key="d3Jvbmcta2V5LWZvci10ZXN0cw==")
            assert status == 401
            manage = sas.make_token(relay.http_url + "/", "root", ROOT_KEY, int(time.time()) + 60)
            assert _manage_get(relay, "/$relayd/status", manage) == 200
            assert _manage_get(relay, "/$relayd/status", bad) == 401
            assert _manage_get(relay, "/$relayd/status?sb-hc-token=" + quote(bad, safe=""), "") == 401
            secrets += [t.split("sig=")[1].split("&")[0] for t in (bad, manage, rawws.token(relay, "echo"))]
            if fmt == "json":
                relay.wait(r'"level": "debug".*"HC handshake on /\$hc/echo from .* accepted"')
            else:
                relay.wait(r"#debug\] HC handshake on /\$hc/echo from \S+ accepted")
            relay.wait(r"denied: 401")
        finally:
            relay.stop()
        text = relay.text()
        for secret in secrets:
            assert secret not in text and quote(secret, safe="") not in text, (fmt, secret)
        assert not any(noise in text for noise in NOISE), fmt


def test_json_format_one_object_per_line_with_the_event_fields(tmp_path):
    relay = Relay(tmp_path, ["--log-format", "json"], ["--logfile", "relayd.log"])
    try:
        ctl = rawws.listen(relay, "echo")
        relay.wait(r"listener \S+ online on echo")
        ctl.sock.close()
        relay.wait(r"listener \S+ offline on echo")
    finally:
        relay.stop()
    lines = relay.text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(records) >= 5
    for record in records:
        assert set(record) >= {"time", "level", "namespace", "message"}
        assert not [key for key in record if key.startswith("log_")]
        assert record["level"] != "debug"  # the default level is info
    online = next(r for r in records if r["message"].startswith("listener ") and "online" in r["message"])
    assert online["path"] == "echo" and online["level"] == "info"
    assert online["id"] in online["message"] and online["peer"].startswith("tcp")
    assert online["namespace"] == "relayd.transports.listener.control.ControlChannel"
    listening = next(r for r in records if "relayd listening on" in r["message"])
    assert listening["port"] == relay.port
    assert not any(noise in line for line in lines for noise in NOISE)
    assert os.path.getsize(relay.stdout_path) == 0  # --logfile: nothing on stdout


def test_log_options_are_checked_before_the_relay_starts(tmp_path):
    for args, expected in ((["-v", "-q"], "-q and -v contradict each other"),
                           (["--log-format", "xml"], "--log-format xml: use one of text, json")):
        out = subprocess.run([twistd_path(), "-n", "--pidfile=", "relayd", "--config",
                              write_config(tmp_path), *args], cwd=str(tmp_path), capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert out.returncode == 1 and expected in out.stderr, out


def _echo_service():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return server


def test_a_busy_bridge_logs_no_factory_lines(tmp_path):
    """-R and -L agents carrying 30 connections: each connection is logged (open, closed), and
    no Twisted factory start/stop line is (before: 2 of every 3 lines of the -R agent's log)."""
    from tests.support.relay import RelayProcess

    relay = RelayProcess(tmp_path, write_config(tmp_path))
    service = _echo_service()
    remote = Bridge(tmp_path, relay, "-R", "echo:127.0.0.1:%d" % service.getsockname()[1])
    local = Bridge(tmp_path, relay, "-L", "127.0.0.1:0:echo")
    try:
        remote.wait("online")
        port = local.listening_port()
        for i in range(30):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"x" * 100)
                got = b""
                while len(got) < 100:
                    got += conn.recv(100)
        wait_until(lambda: remote.text().count("closed by") >= 30 and local.text().count("closed by") >= 30)
    finally:
        for process in (remote, local, relay):
            process.stop()
        service.close()
    for text in (remote.text(), local.text(), relay.log_text()):
        assert text.count("closed by") >= 30 or "relayd listening on" in text
        assert not any(noise in text for noise in NOISE), text[:2000]
