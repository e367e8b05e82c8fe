"""Waiting for an event with a deadline, never for a fixed time.

Blocking (subprocess tests): :func:`wait_until`, :func:`wait_for_text`, :func:`wait_listening`.
In the test's reactor (pytest-twisted): :func:`wait_for`; :func:`sleep` is only the short poll
interval inside such a deadline loop (or what a test deliberately lets time pass for).
"""

import re
import socket
import time

POLL = 0.05  # seconds between two looks at a condition


def wait_until(predicate, timeout=10.0, step=POLL):
    """Poll ``predicate`` until it returns something true (returned) or ``timeout`` passes
    (returns what it last returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def wait_for_text(read, pattern, proc=None, timeout=30.0):
    """The first match of ``pattern`` in ``read()`` (a log file's text), waiting up to ``timeout``;
    fails early when ``proc`` (a Popen) has exited, and with the text's tail when none came."""
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        m = re.search(pattern, text)
        if m:
            return m
        if proc is not None and proc.poll() is not None:
            raise AssertionError("%r not seen: the process exited with %s:\n%s" % (pattern, proc.returncode, text[-3000:]))
        if time.monotonic() > deadline:
            raise AssertionError("%r not seen within %ss:\n%s" % (pattern, timeout, text[-3000:]))
        time.sleep(POLL)


def file_reader(path):
    """A ``read`` for :func:`wait_for_text`: the file's text, "" while it does not exist."""

    def read():
        try:
            with open(str(path), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    return read


def wait_listening(port, host="127.0.0.1", timeout=10.0):
    """Wait until something accepts connections on ``host:port``."""

    def accepts():
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False

    if not wait_until(accepts, timeout):
        raise AssertionError("nothing listens on %s:%d after %ss" % (host, port, timeout))


def sleep(seconds):
    """A Deferred that fires after ``seconds`` on the global reactor (a poll interval)."""
    from twisted.internet import reactor, task

    return task.deferLater(reactor, seconds, lambda: None)


async def wait_for(predicate, timeout=10.0, step=0.02):
    """In the reactor: wait until ``predicate()`` is true, failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %ss" % timeout)
        await sleep(step)
