"""Events from the client side (issue 11 item 3): ``relayd publish`` / ``relayd subscribe`` as
subprocesses and the SDK's :func:`relayd.client.events.publish` / :func:`subscribe` in the test's
reactor, against a ``twistd -n relayd`` subprocess on loopback."""

import os
import signal
import subprocess

import pytest
import pytest_twisted

from relayd.client import ConnectionInfo, PublishError, publish, subscribe
from tests.integration.test_events_http import EVENTS  # bus: multicast, max_message 4096; queue: oneway
from tests.support.cli import REPO, cli, cli_env, connection_string
from tests.support.relay import SEND_KEY, RelayProcess, write_config
from tests.support.waits import file_reader, wait_for, wait_for_text, wait_until

@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("events-cli-relay")
    proc = RelayProcess(workdir, write_config(workdir, extra=EVENTS))
    yield proc
    proc.stop()


def run(relay, *args, stdin=b"", rule="root", key=None):
    cs = connection_string(relay) if key is None else connection_string(relay, rule, key)
    return subprocess.run(cli(*args, "-x", cs), input=stdin, capture_output=True, timeout=60,
                          env=cli_env(), cwd=REPO)


def start_subscriber(relay, tmp_path, name, *extra):
    err_path = os.path.join(str(tmp_path), name + ".err")
    out_path = os.path.join(str(tmp_path), name + ".out")
    with open(err_path, "wb") as err, open(out_path, "wb") as out:
        proc = subprocess.Popen(cli("subscribe", "bus", *extra, "-x", connection_string(relay)),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=cli_env(), cwd=REPO)
    try:
        wait_for_text(file_reader(err_path), "online on bus", proc, 30)
    except AssertionError:
        proc.kill()
        proc.wait()
        raise
    return proc, out_path, err_path


def read(path):
    with open(path, "rb") as f:
        return f.read()


def stop(proc, sig=signal.SIGTERM):
    proc.send_signal(sig)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("relayd subscribe did not exit on SIGTERM")


def test_two_subscribers_print_every_line_published_in_order(relay, tmp_path):
    subs = [start_subscriber(relay, tmp_path, "s%d" % i) for i in range(2)]
    try:
        lines = [("event %03d" % i).encode() for i in range(100)]
        result = run(relay, "publish", "bus", "-", stdin=b"\n".join(lines) + b"\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().splitlines() == ["delivered to 2"] * 100
        expected = b"\n".join(lines) + b"\n"
        for proc, out_path, _ in subs:
            wait_until(lambda: len(read(out_path)) >= len(expected), timeout=15)
            assert read(out_path) == expected
    finally:
        codes = [stop(proc, sig) for (proc, _, _), sig in zip(subs, (signal.SIGINT, signal.SIGTERM))]
    assert codes == [0, 0]
    assert all(b"Traceback" not in read(err) for _, _, err in subs)


def test_raw_publishes_stdin_as_one_event_and_raw_subscribe_writes_bytes_as_they_are(relay, tmp_path):
    proc, out_path, _ = start_subscriber(relay, tmp_path, "raw", "--raw")
    try:
        data = bytes(range(256)) * 4 + b"\nno newline at the end"
        result = run(relay, "publish", "bus", "--raw", stdin=data)
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().splitlines() == ["delivered to 1"]
        result = run(relay, "publish", "bus", "second")
        assert result.stdout.decode().splitlines() == ["delivered to 1"]
        wait_until(lambda: len(read(out_path)) >= len(data) + 6, timeout=15)
        assert read(out_path) == data + b"second"
    finally:
        assert stop(proc) == 0


def test_publish_to_a_oneway_entity_without_listener_fails_naming_the_cause(relay):
    result = run(relay, "publish", "queue", "job 1")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "502" in err and "no listener" in err, err
    assert "Traceback" not in err


def test_publish_over_max_message_fails_naming_max_message(relay):
    result = run(relay, "publish", "bus", "--raw", stdin=b"x" * 5000)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "413" in err and "max_message" in err, err


def test_publish_without_send_right_fails_naming_it(relay):
    from tests.support.relay import LISTEN_KEY

    result = run(relay, "publish", "bus", "x", rule="listener", key=LISTEN_KEY)
    assert result.returncode == 1
    assert "403" in result.stderr.decode() and "Send" in result.stderr.decode()


@pytest_twisted.ensureDeferred
async def test_sdk_subscribe_and_publish_in_process(relay):
    from twisted.internet import reactor

    got = []
    cs = connection_string(relay)
    listener = await subscribe(cs, "bus", lambda body, content_type: got.append((body, content_type)),
                               reactor=reactor)
    try:
        sender = ConnectionInfo.parse(connection_string(relay, "sender", SEND_KEY))
        for i in range(20):
            assert await publish(sender, "bus", b"sdk %d" % i, content_type="application/x-test") == 1
        await wait_for(lambda: len(got) == 20, timeout=10)
        assert got == [(b"sdk %d" % i, "application/x-test") for i in range(20)]
        with pytest.raises(PublishError) as refused:
            await publish(sender, "queue", b"nobody")
        assert refused.value.status == 502 and "no listener" in str(refused.value)
        with pytest.raises(PublishError) as refused:
            await publish(sender, "bus", b"y" * 5000)
        assert refused.value.status == 413 and "max_message" in str(refused.value)
    finally:
        await listener.stop()


def test_publish_and_subscribe_help_stay_light():
    from tests.integration.test_cli_light_imports import HEAVY, run_command

    for command in ("publish", "subscribe"):
        report = run_command(command, "--help")
        assert report["status"] == 0
        heavy = [m for m in report["modules"] if m.split(".")[0] in HEAVY]
        assert heavy == [], "relayd %s --help imported %s" % (command, heavy[:10])
