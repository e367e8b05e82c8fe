"""``relayd listen`` / ``relayd connect`` as subprocesses, for the CLI tests."""

import os
import subprocess
import sys

from tests.support.relay import LISTEN_KEY, ROOT_KEY
from tests.support.waits import file_reader, wait_for_text

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args):
    """The command line of ``relayd ARGS`` run by this Python."""
    return [sys.executable, "-m", "relayd.cli", *args]


def cli_env():
    """This environment with the repository importable and no credentials of the user's own
    (RELAYD_KEY, RELAYD_CONNECTION_STRING) leaking into the command."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RELAYD_KEY", None)
    env.pop("RELAYD_CONNECTION_STRING", None)
    return env


def connection_string(relay, rule="root", key=ROOT_KEY):
    return "Endpoint=%s/;SharedAccessKeyName=%s;SharedAccessKey=%s" % (relay.url, rule, key)


def start_listen(relay, err_path, stdin, stdout=subprocess.PIPE, path="echo", env=None, timeout=30):
    """``relayd listen PATH`` with the listener rule, its stderr in ``err_path``; returns the
    process once it is online (killed, and the test failed, when it does not come online)."""
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cli("listen", path, "-x", connection_string(relay, "listener", LISTEN_KEY)),
                                stdin=stdin, stdout=stdout, stderr=err, env=env or cli_env(), cwd=REPO)
    try:
        wait_for_text(file_reader(err_path), "online on", proc, timeout)
    except AssertionError:
        proc.kill()
        proc.wait()
        raise
    return proc
