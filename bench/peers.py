"""Benchmark peers for ``bench/run.py`` (everything on 127.0.0.1; each prints ``READY PORT``).

    python bench/peers.py http-backend [--port 0] [--size 100]
        a twisted.web server answering every GET with a SIZE-byte body (keep-alive, no logging);
        GET /_stats answers {"connections": accepted so far, "requests": served so far}

    python bench/peers.py transit-client --relay PORT [--port 0] [--token-seed S]
    python bench/peers.py transit-server --relay PORT --target PORT [--pool 4] [--token-seed S]
        the two ends that put an ordinary TCP client/server (iperf3) on both sides of a
        magic-wormhole transit relay, the way ``relayd bridge -L`` / ``-R`` put them on both
        sides of relayd.  The transit relay pairs two TCP connections that send the same
        ``please relay TOKEN for side SIDE\\n`` line and answers ``ok\\n`` to both; after that
        it splices the bytes.  Connection number n (in accept order on the client end) uses
        token sha256(seed:n); the server end keeps POOL connections waiting for the next
        tokens, and on each ``ok`` connects to the target and splices.  Both ends splice with
        Twisted push producers (the same flow control as the bridge and the transit relay).
"""

import argparse
import hashlib
import os
import sys

from twisted.internet import endpoints, protocol, reactor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- HTTP backend -----------------------------------------------------------------------------

def http_backend(port, size):
    from twisted.web import resource, server

    import json

    body = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    stats = {"connections": 0, "requests": 0}

    class Small(resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            stats["requests"] += 1
            if request.path == b"/_stats":
                request.setHeader(b"content-type", b"application/json")
                return json.dumps(stats).encode()
            request.setHeader(b"content-type", b"text/plain")
            return body

    class CountingSite(server.Site):
        def buildProtocol(self, addr):
            stats["connections"] += 1
            return super().buildProtocol(addr)

    site = CountingSite(Small())
    site.log = lambda request: None
    site.timeOut = None
    p = reactor.listenTCP(port, site, interface="127.0.0.1", backlog=128)
    print("READY %d" % p.getHost().port, flush=True)


# -- magic-wormhole transit relay ends ----------------------------------------------------------

def token(seed, n):
    return hashlib.sha256(("%s:%d" % (seed, n)).encode()).hexdigest()


class Plain(protocol.Protocol):
    """One spliced side: bytes go to ``peer``; the peer's transport throttles ours."""

    peer = None

    def __init__(self):
        self.held = []

    def splice(self, peer):
        self.peer = peer
        peer.transport.registerProducer(self.transport, True)
        held, self.held = self.held, []
        for data in held:
            peer.transport.write(data)

    def dataReceived(self, data):
        if self.peer is None:
            self.held.append(data)
        else:
            self.peer.transport.write(data)

    def connectionLost(self, reason):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.unregisterProducer()
            self.peer.transport.loseConnection()
        self.peer = None
        self.lost()

    def lost(self):
        pass


class TransitLeg(Plain):
    """A connection to the transit relay: handshake line, wait for ``ok\\n``, then splice."""

    def __init__(self, tok, side, on_ok):
        super().__init__()
        self.tok, self.side, self.on_ok = tok, side, on_ok
        self.handshake = b""
        self.ok = False

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.transport.write(b"please relay %s for side %s\n" % (self.tok.encode(), self.side.encode()))

    def dataReceived(self, data):
        if self.ok:
            return super().dataReceived(data)
        self.handshake += data
        if b"\n" not in self.handshake:
            return
        line, _, rest = self.handshake.partition(b"\n")
        if line != b"ok":
            print("transit relay said %r" % line, file=sys.stderr, flush=True)
            self.transport.loseConnection()
            return
        self.ok = True
        if rest:
            self.held.append(rest)
        self.on_ok(self)


class LocalClient(Plain):
    """transit-client: one accepted local connection; becomes transit connection number n."""

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        f = self.factory
        n, f.count = f.count, f.count + 1
        leg = TransitLeg(token(f.seed, n), "a" * 16, self._ok)
        self.transport.pauseProducing()
        endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", f.relay).connect(
            _factory(lambda: leg)).addErrback(lambda _: self.transport.loseConnection())

    def _ok(self, leg):
        leg.splice(self)
        self.splice(leg)
        self.transport.resumeProducing()


def _factory(make):
    f = protocol.Factory()
    f.buildProtocol = lambda addr: make()
    return f


def transit_client(port, relay, seed):
    f = protocol.Factory()
    f.protocol = LocalClient
    f.count = 0
    f.relay = relay
    f.seed = seed
    p = reactor.listenTCP(port, f, interface="127.0.0.1")
    print("READY %d" % p.getHost().port, flush=True)


def transit_server(relay, target, pool, seed):
    state = {"next": 0}

    def open_one():
        n, state["next"] = state["next"], state["next"] + 1
        leg = TransitLeg(token(seed, n), "b" * 16, on_ok)
        endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", relay).connect(_factory(lambda: leg))

    def on_ok(leg):
        reactor.callLater(0, open_one)  # keep POOL connections waiting
        leg.transport.pauseProducing()
        local = Plain()

        def made(p):
            p.transport.setTcpNoDelay(True)
            leg.splice(p)
            p.splice(leg)
            leg.transport.resumeProducing()

        endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", target).connect(
            _factory(lambda: local)).addCallbacks(made, lambda _: leg.transport.loseConnection())

    for _ in range(pool):
        open_one()
    print("READY", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("http-backend")
    a.add_argument("--port", type=int, default=0)
    a.add_argument("--size", type=int, default=100)
    a = sub.add_parser("transit-client")
    a.add_argument("--relay", type=int, required=True)
    a.add_argument("--port", type=int, default=0)
    a.add_argument("--token-seed", default="relayd-bench")
    a = sub.add_parser("transit-server")
    a.add_argument("--relay", type=int, required=True)
    a.add_argument("--target", type=int, required=True)
    a.add_argument("--pool", type=int, default=4)
    a.add_argument("--token-seed", default="relayd-bench")
    args = p.parse_args(argv)
    if args.cmd == "http-backend":
        http_backend(args.port, args.size)
    elif args.cmd == "transit-client":
        transit_client(args.port, args.relay, args.token_seed)
    else:
        transit_server(args.relay, args.target, args.pool, args.token_seed)
    reactor.run()


if __name__ == "__main__":
    main()
