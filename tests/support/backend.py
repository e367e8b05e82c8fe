"""A local HTTP service for the bridge tests (run as ``python -m tests.support.backend``).

    GET  /hello?x=X    200 "hello X", two Set-Cookie headers
    GET  /big?n=N      200, N bytes (byte i = i % 251), streamed with a producer
    POST /sha          200 JSON {"length": n, "sha256": hex} of the request body
    GET  /status?code=C  that status
Prints ``READY <port>``.
"""

import hashlib
import json
import sys

from twisted.internet import reactor
from twisted.web import resource, server

BLOCK = bytes(i % 251 for i in range(251 * 261))  # 65511 bytes, a multiple of 251


class Big:
    def __init__(self, request, n):
        self.request, self.left, self.paused = request, n, False
        request.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self):
        self.paused = False
        while self.left > 0 and not self.paused:
            n = min(self.left, len(BLOCK))
            self.request.write(BLOCK[:n])
            self.left -= n
        if self.left <= 0 and not getattr(self, "done", False):
            self.done = True
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self):
        self.paused = True

    def stopProducing(self):
        self.left = 0


class Root(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        path = request.path.decode()
        arg = lambda name, default=None: (request.args.get(name.encode()) or [default.encode() if default else b""])[0].decode()
        if path == "/hello":
            request.addCookie(b"a", b"1")
            request.addCookie(b"b", b"2")
            request.setHeader(b"content-type", b"text/plain")
            return ("hello " + arg("x", "")).encode()
        if path == "/big":
            n = int(arg("n", "0"))
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-length", str(n).encode())
            Big(request, n)
            return server.NOT_DONE_YET
        if path == "/status":
            request.setResponseCode(int(arg("code", "200")))
            return b"status"
        request.setResponseCode(404)
        return b"no route"

    def render_POST(self, request):
        digest, length = hashlib.sha256(), 0
        while True:
            chunk = request.content.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            length += len(chunk)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"length": length, "sha256": digest.hexdigest()}).encode()


def main():
    port = reactor.listenTCP(int(sys.argv[1]) if len(sys.argv) > 1 else 0, server.Site(Root()), interface="127.0.0.1")
    print("READY %d" % port.getHost().port, flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
