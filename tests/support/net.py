"""Blocking loopback socket helpers for tests against real sockets."""

import socket
import threading


def free_port(host="127.0.0.1"):
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def recv_all(sock):
    """Everything ``sock`` sends until it closes."""
    parts = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(parts)
        parts.append(data)


def read_until_closed(sock, timeout=5.0):
    """Everything ``sock`` sends until it closes or resets (a reset ends the read quietly)."""
    sock.settimeout(timeout)
    parts = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        parts.append(chunk)
    return b"".join(parts)


def serve_tcp(handler, host="127.0.0.1", backlog=50):
    """A loopback TCP service running ``handler(conn)`` in a thread per connection; returns the
    listening socket (close it to stop)."""
    srv = socket.socket()
    srv.bind((host, 0))
    srv.listen(backlog)

    def loop():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv


def read_response(sock, timeout=5.0):
    """(status, head, body) of one response, or None when the peer closed/reset first."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (ConnectionResetError, socket.timeout):
        return None
    return int(head.split(b" ")[1]), head, body


def wait_sent(sock, timeout=5.0):
    """Wait until the kernel has no byte of ``sock``'s output left unacknowledged (Linux
    ``SIOCOUTQ``), e.g. before resetting a connection whose last bytes must arrive first."""
    import fcntl
    import struct
    import termios

    from tests.support.waits import wait_until

    def drained():
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0] == 0

    return wait_until(drained, timeout, step=0.01)
