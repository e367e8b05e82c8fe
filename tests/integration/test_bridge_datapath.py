"""The bridge agents' data path with real processes (issue 10 item 3): a TCP client -> ``relayd
bridge -L`` -> relayd (twistd) -> ``relayd bridge -R`` -> a TCP service.  64 MiB and more each
way at once, with a half-close in the middle, byte for byte; a local reader that stops reading
on either end stalls its writer without the bridge agents' memory growing (RSS of the bridge
processes, psutil), and the stream resumes intact."""

import contextlib
import hashlib
import os
import socket
import threading
import time

import psutil
import pytest

from tests.support.net import free_port
from tests.support.relay import Bridge, RelayProcess, write_config
from tests.support.waits import wait_until


ENTITY_CONFIG = """
[[hybrid_connections]]
path = "datapath"
"""
MiB = 1 << 20
BIG = 64 * MiB + 4321  # not a multiple of any read or frame size
# What a stalled reader may cost a bridge agent: a read buffer, Twisted's write buffer limit and
# the masking scratch buffer are a few hundred KiB; an unbounded queue would grow by the hundreds
# of MiB the sender pushes meanwhile.
RSS_GROWTH_LIMIT = 24 * MiB
PUSH_LIMIT = 768 * MiB  # a sender that got this far past a stalled reader: nothing held it back
PATTERN = bytes(i % 251 for i in range(251 * 1024))  # a block whose bytes say their offset mod 251


@contextlib.contextmanager
def bridges(tmp_path, relay, entity):
    """(-R agent, -L agent, -L port, the listening socket of the service behind -R)."""
    service = socket.socket()
    service.bind(("127.0.0.1", 0))
    service.listen(8)
    remote = Bridge(tmp_path, relay, "-R", "%s:127.0.0.1:%d" % (entity, service.getsockname()[1]))
    local_port = free_port()
    local = Bridge(tmp_path, relay, "-L", "127.0.0.1:%d:%s" % (local_port, entity))
    try:
        remote.wait(r"online")
        local.wait(r"listening on")
        yield remote, local, local_port, service
    finally:
        local.stop()
        remote.stop()
        service.close()


@pytest.fixture
def bridged(tmp_path):
    """(relay, -R agent, -L agent, -L port, the service's listening socket)."""
    relay = RelayProcess(tmp_path, write_config(tmp_path, extra=ENTITY_CONFIG))
    try:
        with bridges(tmp_path, relay, "datapath") as agents:
            yield (relay,) + agents
    finally:
        relay.stop()


def _accept(service):
    service.settimeout(30)
    conn, _ = service.accept()
    conn.settimeout(60)
    return conn


def _send_then_shut(sock, data, errors):
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError as e:
        errors.append(e)


def _read_all_hashed(sock):
    digest, total = hashlib.sha256(), 0
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return digest.hexdigest(), total
        digest.update(chunk)
        total += len(chunk)


def test_64_mib_both_ways_at_once_with_a_half_close_byte_for_byte(bridged):
    _relay, remote, local, port, service = bridged
    both_ways(remote, local, port, service, BIG)


def both_ways(remote, local, port, service, size):
    """``size`` bytes client -> service and a little more service -> client at once, the latter
    half before the client's EOF and half after (on the half-closed connection)."""
    up = os.urandom(size)  # client -> service
    down = os.urandom(size + 999)
    half = size // 2
    got_up, errors = {}, []

    def serve():
        conn = _accept(service)
        try:
            sender = threading.Thread(target=conn.sendall, args=(memoryview(down)[:half],))
            sender.start()
            got_up["value"] = _read_all_hashed(conn)  # until the client's EOF (its half-close)
            sender.join(60)
            conn.sendall(memoryview(down)[half:])  # the half-closed connection still carries this
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)
        except OSError as e:
            errors.append(e)
        finally:
            conn.close()

    server = threading.Thread(target=serve)
    server.start()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
        writer = threading.Thread(target=_send_then_shut, args=(c, up, errors))
        writer.start()
        got_down = _read_all_hashed(c)
        writer.join(60)
    server.join(60)
    assert not errors, errors
    assert got_up["value"] == (hashlib.sha256(up).hexdigest(), len(up)), remote.text()[-2000:]
    assert got_down == (hashlib.sha256(down).hexdigest(), len(down)), local.text()[-2000:]
    remote.wait(r"closed by the (local|relay) side.*%d bytes in, %d bytes out" % (len(up), len(down)))


def _rss(bridge):
    return psutil.Process(bridge.proc.pid).memory_info().rss


def _push(sock, counter, stop):
    """Send the pattern without end, counting, until ``stop`` is set or the socket fails."""
    offset = 0
    try:
        while not stop.is_set():
            n = sock.send(memoryview(PATTERN)[offset % 251:])
            counter[0] += n
            offset += n
    except OSError:
        pass


def _stalled(counter, quiet=0.7):
    """True once ``counter`` stopped growing for ``quiet`` seconds (the sender is held back)."""
    before = counter[0]
    time.sleep(quiet)  # the quiet period that defines "stalled"
    return counter[0] == before or counter[0] > PUSH_LIMIT


def _check_pattern(sock, at_least):
    """Read ``at_least`` bytes and check each is its offset mod 251."""
    got = 0
    while got < at_least:
        chunk = sock.recv(1 << 20)
        assert chunk, "the stream ended after %d bytes" % got
        expected = (PATTERN[got % 251:] * ((len(chunk) // len(PATTERN)) + 2))[:len(chunk)]
        assert chunk == expected, "wrong bytes at offset %d" % got
        got += len(chunk)


@pytest.mark.parametrize("stalled_end", ["client of -L", "service behind -R"])
def test_a_reader_that_stops_reading_stalls_the_writer_with_bounded_bridge_memory(bridged, stalled_end):
    _relay, remote, local, port, service = bridged
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn = _accept(service)
    reader, writer = (client, conn) if stalled_end == "client of -L" else (conn, client)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    writer.settimeout(120)  # held back by the stalled reader meanwhile
    baseline = {b: _rss(b) for b in (local, remote)}
    counter, stop = [0], threading.Event()
    pusher = threading.Thread(target=_push, args=(writer, counter, stop), daemon=True)
    pusher.start()
    try:
        assert wait_until(lambda: counter[0] > 4 * MiB, timeout=20), "nothing flowed"
        assert wait_until(lambda: _stalled(counter), timeout=60), counter[0]
        assert counter[0] < PUSH_LIMIT, "the sender pushed %d MiB past a stalled reader" % (counter[0] >> 20)
        peak = {b: _rss(b) for b in (local, remote)}
        for b, name in ((local, "-L"), (remote, "-R")):
            assert peak[b] - baseline[b] < RSS_GROWTH_LIMIT, (name, baseline[b] >> 20, peak[b] >> 20)
        # the reader comes back: the stream resumes where it stopped, intact
        _check_pattern(reader, 16 * MiB)
    finally:
        stop.set()
        for s in (client, conn):
            s.close()
        pusher.join(10)
