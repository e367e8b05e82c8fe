"""``twistd -n relayd`` and the ``relayd`` command as real processes."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from relayd import config

from relayd.wire import sas
from tests.support.relay import RelayProcess, stop_process, twistd_path

ISSUE_EXAMPLE = """\
[relay]
listen = ["tcp:9090:interface=127.0.0.1"]          # Twisted endpoint strings; ssl:... for TLS
public_url = "ws://127.0.0.1:9090"                 # used to build rendezvous addresses

[[rules]]
name = "root"
key = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="
rights = ["Manage", "Listen", "Send"]

[[hybrid_connections]]
path = "echo"
requires_client_authorization = true
# max_listeners = 25

[[hybrid_connections]]
path = "open"
requires_client_authorization = false
"""


def relayd_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "relayd.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)


def get_entities(base, token):
    req = urllib.request.Request(base + "/$relayd/entities", headers={"Authorization": token})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_documented_example_config_runs_as_is(tmp_path):
    path = tmp_path / "relayd.toml"
    path.write_text(ISSUE_EXAMPLE)
    settings = config.load(str(path))
    assert settings.listen == ["tcp:9090:interface=127.0.0.1"]
    assert settings.public_url == "ws://127.0.0.1:9090"
    assert [e.path for e in settings.entities] == ["echo", "open"]
    assert [e.requires_client_authorization for e in settings.entities] == [True, False]
    assert settings.entities[0].max_listeners == 25
    # The same file under twistd (listening on an ephemeral port so tests never collide).
    relay = RelayProcess(tmp_path, str(path), args=["--listen", "tcp:0:interface=127.0.0.1"])
    try:
        token = sas.make_token(relay.http_url + "/", "root", "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ==",
                                int(time.time()) + 60)
        status, body = get_entities(relay.http_url, token)
        assert status == 200
        assert [e["path"] for e in body] == ["echo", "open"]
    finally:
        relay.stop()


def test_no_options_generates_root_key_and_key_show_prints_it(tmp_path):
    data = tmp_path / "state"
    env = dict(os.environ, RELAYD_DATA_DIR=str(data))
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen([twistd_path(), "-n", "--pidfile=", "relayd", "--listen", "tcp:0:interface=127.0.0.1"],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        text = ""
        while time.time() < deadline:
            text = (tmp_path / "log").read_text()
            m = re.search(r"relayd listening on [0-9.]+:(\d+)", text)
            if m:
                break
            time.sleep(0.05)
        assert m, text
        assert "relayd key show" in text
        shown = relayd_cli("key", "show", env=env)
        assert shown.returncode == 0, shown.stderr
        key = re.search(r"^key:\s+(\S+)$", shown.stdout, re.M).group(1)
        assert key not in text  # the secret never reaches the log
        base = "http://127.0.0.1:%s" % m.group(1)
        token = sas.make_token(base + "/", "RootManageSharedAccessKey", key, int(time.time()) + 60)
        assert get_entities(base, token)[0] == 200
        wrong = sas.make_token(base + "/", "RootManageSharedAccessKey", sas.generate_key(), int(time.time()) + 60)
        status, body = get_entities(base, wrong)
        assert status == 401 and "signature" in body["error"]["message"]
    finally:
        stop_process(proc)
        log.close()
    # restart: the same key is kept
    again = relayd_cli("key", "show", env=env)
    assert re.search(r"^key:\s+(\S+)$", again.stdout, re.M).group(1) == key


@pytest.mark.parametrize("body, expected", [
    ('[relay]\nlisten = ["tcp:0"]\nbogus = 1\n', "relay.bogus: unknown key"),
    ('[[hybrid_connections]]\npath = "/bad/"\n', "hybrid_connections[0].path"),
    ('[[hybrid_connections]]\npath = "a"\nmax_listeners = "x"\n', "hybrid_connections[0].max_listeners: must be an integer"),
    ('[[rules]]\nname = "r"\nkey = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="\nrights = ["Fly"]\n', "rules[0].rights: unknown right 'Fly'"),
    ('[relay]\npublic_url = "ftp://x"\n', "relay.public_url: must be an absolute"),
    ('[relay\n', "not valid TOML"),
])
def test_bad_config_fails_at_start_naming_the_key(tmp_path, body, expected):
    path = tmp_path / "relayd.toml"
    path.write_text(body)
    out = subprocess.run([twistd_path(), "-n", "--pidfile=", "relayd", "--config", str(path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert expected in out.stdout + out.stderr, out.stdout + out.stderr


def test_token_command_makes_azure_compatible_tokens():
    out = relayd_cli("token", "--rule", "root", "--key", "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ==",
                     "--uri", "ws://127.0.0.1:9090/echo", "--ttl", "120")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("SharedAccessSignature sr=http%3A%2F%2F127.0.0.1%3A9090%2Fecho&sig=")
    rule = sas.Rule("root", "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ==", frozenset({"Listen"}))
    verified = sas.verify_token(token, "ws://127.0.0.1:9090/$hc/echo", [rule], "Listen", time.time())
    assert 100 <= verified.expires - time.time() <= 121
    bad = relayd_cli("token", "--rule", "root", "--key", "k", "--uri", "ws://x/echo", "--ttl", "0")
    assert bad.returncode == 2 and "--ttl" in bad.stderr


def test_tokens_and_keys_never_reach_the_log(relay_proc):
    """Requests carrying valid, malformed and wrongly signed tokens on every door: the relay's
    log has neither the tokens' signatures nor the keys."""
    import requests
    from urllib.parse import quote

    from tests.support.relay import ROOT_KEY, SEND_KEY

    base = relay_proc.http_url
    good = sas.make_token(base + "/echo", "root", ROOT_KEY, int(time.time()) + 60)
    bad = sas.make_token(base + "/echo", "sender", "d3Jvbmcta2V5LWZvci10ZXN0cw==", int(time.time()) + 60)
    secrets = [good.split("sig=")[1].split("&")[0], bad.split("sig=")[1].split("&")[0], "PLAINSECRETTEXT",
               ROOT_KEY, SEND_KEY]
    for token in (good, bad, "PLAINSECRETTEXT", "SharedAccessSignature sig=PLAINSECRETTEXT"):
        requests.get(base + "/$relayd/entities?sb-hc-token=" + quote(token, safe=""), timeout=10)
        requests.get(base + "/echo/x", headers={"ServiceBusAuthorization": token}, timeout=10)
        requests.get(base + "/echo/x?sb-hc-token=" + quote(token, safe=""), timeout=10)
        requests.get(base + "/$hc/echo?sb-hc-action=connect&sb-hc-token=" + quote(token, safe=""),
                     headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, timeout=10)
    relay_proc.wait_log(r"401|denied")  # the requests were seen and refused
    log = relay_proc.log_text()
    for secret in secrets:
        assert secret not in log and quote(secret, safe="") not in log
