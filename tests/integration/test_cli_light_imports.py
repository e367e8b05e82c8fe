"""The ``relayd`` commands that need no network event loop start light (issue 9, suite time):
``--version``, ``key new|show``, ``token`` and ``entity`` import neither Twisted's reactor
nor Autobahn nor lxml (``token`` and ``entity`` sign with relayd.wire.sas and talk HTTP with
urllib).  Each command runs in a fresh interpreter, as ``python -m relayd.cli`` would, and
reports what it imported."""

import json
import subprocess
import sys

import pytest

from tests.support.relay import ROOT_KEY

HEAVY = ("twisted.internet.reactor", "autobahn", "lxml", "cffi", "OpenSSL")
UNREACHABLE = "Endpoint=sb://127.0.0.1:9/;SharedAccessKeyName=root;SharedAccessKey=%s" % ROOT_KEY

# The command's own output goes to a file descriptor of its own; stdout carries the report.
PROBE = """
import json, os, sys
out = os.fdopen(os.dup(1), "w")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
from relayd import cli
try:
    status = cli.main(sys.argv[1:])
except SystemExit as e:
    status = e.code
out.write(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def run_command(*argv, cwd=None):
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("argv, status", [
    (["--version"], 0),
    (["key", "new"], 0),
    (["token", "-x", UNREACHABLE, "echo"], 0),
    (["token", "--rule", "root", "--key", ROOT_KEY, "--uri", "sb://127.0.0.1:9/echo"], 0),
    (["entity", "list", "-x", UNREACHABLE], 1),  # nothing listens on port 9: "cannot reach"
], ids=["version", "key-new", "token-x", "token-uri", "entity-list"])
def test_commands_without_an_event_loop_import_no_twisted_reactor_autobahn_or_lxml(argv, status):
    report = run_command(*argv)
    assert report["status"] == status
    heavy = [m for m in report["modules"] if m.split(".")[0] in HEAVY or m in HEAVY]
    assert heavy == [], "relayd %s imported %s" % (" ".join(argv[:2]), heavy[:10])


def test_key_show_reads_the_store_without_twisted(tmp_path):
    from relayd.namespace import SqliteStore
    from relayd.wire.sas import Rule

    store = SqliteStore(str(tmp_path))
    store.put_rule(Rule("root", ROOT_KEY, frozenset({"Manage", "Listen", "Send"})))
    store.close()
    report = run_command("key", "show", "--data-dir", str(tmp_path))
    assert report["status"] == 0
    assert not [m for m in report["modules"] if m.split(".")[0] in HEAVY or m in HEAVY]


# ``twistd relayd`` reads its options and the config file before it builds the relay: a mistake
# there is reported before any door, Autobahn or lxml is imported.
TWISTD_PROBE = """
import json, sys
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
maker = next(p for p in getPlugins(IServiceMaker) if p.tapname == "relayd")
options = maker.options()
try:
    options.parseOptions(sys.argv[1:])
    status = 0
except SystemExit as e:
    status = e.code
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("argv, status", [
    (["--listen", "udp:53"], 1),
    (["--config", "missing.toml"], 1),
    (["--listen", "tcp:0:interface=127.0.0.1"], 0),
], ids=["bad-listen", "missing-config", "good"])
def test_twistd_relayd_options_import_no_door(tmp_path, argv, status):
    out = subprocess.run([sys.executable, "-c", TWISTD_PROBE, *argv], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["status"] == status, out.stderr
    heavy = [m for m in report["modules"]
             if m.split(".")[0] in ("autobahn", "lxml") or m.startswith(("relayd.transports", "relayd.web"))]
    assert heavy == [], heavy[:10]


def test_relayd_serve_with_a_config_mistake_imports_no_door(tmp_path):
    report = run_command("serve", "--listen", "udp:53", cwd=str(tmp_path))
    assert report["status"] == 1
    heavy = [m for m in report["modules"]
             if m.split(".")[0] in ("autobahn", "lxml") or m.startswith(("relayd.transports", "relayd.web"))]
    assert heavy == [], heavy[:10]
