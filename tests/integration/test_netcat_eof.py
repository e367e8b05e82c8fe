"""``relayd listen`` / ``relayd connect`` with stdin at end of file (``</dev/null``, scripts,
services): EOF on stdin half-closes (an empty binary message, the marker ``relayd bridge``
uses too), receiving goes on until the peer has finished, and the exit status says whether the
transfer completed.  Real processes against a ``twistd -n relayd`` subprocess (the worker's shared one)."""

import os
import subprocess

from tests.support.cli import cli, cli_env, connection_string
from tests.support.cli import start_listen as start_cli_listen
from tests.support.relay import SEND_KEY

CLI = cli()


def start_listen(relay, tmp_path, stdin, stdout=subprocess.PIPE, name="listen"):
    err_path = tmp_path / ("%s.err" % name)
    proc = start_cli_listen(relay, err_path, stdin, stdout)
    proc.err_path = err_path
    return proc


def test_listen_with_stdin_at_eof_receives_everything_the_sender_sends(shared_relay, tmp_path):
    for attempt in range(3):
        data = os.urandom(300_000 + attempt)
        listen = start_listen(shared_relay, tmp_path, subprocess.DEVNULL, name="listen%d" % attempt)
        try:
            sender = subprocess.run(CLI + ["connect", "echo", "-x", connection_string(shared_relay, "sender", SEND_KEY)],
                                    input=data, capture_output=True, env=cli_env(), timeout=60)
            out, _ = listen.communicate(timeout=30)
            assert len(out) == len(data) and out == data, (attempt, len(out), listen.err_path.read_bytes())
            assert listen.returncode == 0, listen.err_path.read_bytes()
            assert sender.returncode == 0, sender.stderr
        finally:
            if listen.poll() is None:
                listen.kill()


def test_connect_with_stdin_at_eof_receives_everything_the_listener_sends(shared_relay, tmp_path):
    data = os.urandom(250_000)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    with open(source, "rb") as stdin:
        listen = start_listen(shared_relay, tmp_path, stdin)
    try:
        sender = subprocess.run(CLI + ["connect", "echo", "-x", connection_string(shared_relay, "sender", SEND_KEY)],
                                stdin=subprocess.DEVNULL, capture_output=True, env=cli_env(), timeout=60)
        assert sender.returncode == 0, sender.stderr
        assert sender.stdout == data
        listen.communicate(timeout=30)
        assert listen.returncode == 0, listen.err_path.read_bytes()
    finally:
        if listen.poll() is None:
            listen.kill()


def test_both_directions_at_once_with_half_closes(shared_relay, tmp_path):
    up, down = os.urandom(200_000), os.urandom(220_000)
    source = tmp_path / "down.bin"
    source.write_bytes(down)
    with open(source, "rb") as stdin:
        listen = start_listen(shared_relay, tmp_path, stdin)
    try:
        sender = subprocess.run(CLI + ["connect", "echo", "-x", connection_string(shared_relay, "sender", SEND_KEY)],
                                input=up, capture_output=True, env=cli_env(), timeout=60)
        out, _ = listen.communicate(timeout=30)
        assert sender.returncode == 0 and listen.returncode == 0, (sender.stderr, listen.err_path.read_bytes())
        assert sender.stdout == down and out == up
    finally:
        if listen.poll() is None:
            listen.kill()


def test_connect_reports_input_the_peer_did_not_take(shared_relay, tmp_path):
    """The listener's reader goes away (``| head``): it closes normally while the sender still
    has input; the sender's exit status says the transfer did not complete."""
    listen = start_listen(shared_relay, tmp_path, subprocess.PIPE)
    try:
        sender = subprocess.Popen(CLI + ["connect", "echo", "-x", connection_string(shared_relay, "sender", SEND_KEY)],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env())
        sender.stdin.write(b"x" * 1000)
        sender.stdin.flush()
        assert listen.stdout.read(1000) == b"x" * 1000
        listen.stdout.close()  # the reader is gone; the sender's stdin is still open
        sender.stdin.write(b"y" * 1000)
        sender.stdin.flush()
        assert sender.wait(30) == 3, sender.stderr.read()
        assert b"before all of stdin was sent" in sender.stderr.read()
        listen.stdin.close()
        listen.wait(30)
    finally:
        for p in (listen, sender):
            if p.poll() is None:
                p.kill()
