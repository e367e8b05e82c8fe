"""A throwaway redis-server for the cluster tests: loopback, a free port, a temp directory, no
persistence (``--save "" --appendonly no``); stopped by its pid.  Missing redis-server skips the
test locally and fails it under CI (:func:`tests.support.relay.require`)."""

import os
import shutil
import socket
import subprocess
import time

from tests.support.net import free_port
from tests.support.relay import require, stop_process

START_TIMEOUT = 10.0


class RedisServer:
    def __init__(self, directory, port=None, password=None, tls=None):
        """``tls``: the paths of :func:`tests.support.tls.make_ca_and_server` -- TLS only (rediss://)."""
        path = shutil.which("redis-server")
        require(path is not None, "redis-server not found (apt-get install redis-server): the cluster needs it")
        self.directory = str(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        self.tls = tls
        self.binary = path
        self.proc = None
        self.start()

    @property
    def url(self):
        return "redis%s://%s127.0.0.1:%d/0" % ("s" if self.tls else "", ":%s@" % self.password if self.password else "",
                                               self.port)

    def start(self):
        ports = ["--port", str(self.port)]
        if self.tls:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.tls["server-cert.pem"],
                     "--tls-key-file", self.tls["server-key.pem"], "--tls-ca-cert-file", self.tls["ca.pem"],
                     "--tls-auth-clients", "no"]
        args = [self.binary, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.directory, "--logfile", os.path.join(self.directory, "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if self.command("PING") in ("PONG", "NOAUTH Authentication required."):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s; see %s/redis.log" % (self.proc.returncode,
                                                                                      self.directory))
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer on port %d within %s s" % (self.port, START_TIMEOUT))

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def command(self, *args, timeout=5.0):
        """One command over RESP on a fresh socket (AUTH first when there is a password); the
        reply decoded: str, int, None or a list of them."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as plain:
            sock = plain
            if self.tls:
                import ssl

                sock = ssl.create_default_context(cafile=self.tls["ca.pem"]).wrap_socket(plain,
                                                                                         server_hostname="127.0.0.1")
            reader = sock.makefile("rb")
            if self.password:
                sock.sendall(_encode(("AUTH", self.password)))
                _read(reader)
            sock.sendall(_encode(args))
            return _read(reader)


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read(reader):
    line = reader.readline()
    if not line:
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b"-"):
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = reader.read(n + 2)[:-2]
        return data.decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read(reader) for _ in range(n)]
    raise OSError("unexpected RESP reply %r" % line)
