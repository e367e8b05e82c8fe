"""Benchmark peers: a WebSocket byte source and byte sinks (direct and behind relayd).

    python bench/wsbench.py sink-direct PORT
    python bench/wsbench.py sink-hc URL PATH RULE KEY       (an HC listener that counts bytes)
    python bench/wsbench.py source URL --bytes N --message M [--token T]

The source sends a text message with the byte count, then N bytes as binary messages of M
bytes (with backpressure: it only writes while the socket is not full), and waits for the
sink's "done".  It prints one JSON line: {"bytes": N, "seconds": s, "mb_per_s": x}.
Sinks count bytes frame by frame (nothing is buffered whole) and print READY when ready.
"""

import argparse
import json
import os
import sys
import time

from autobahn.twisted.websocket import (
    WebSocketClientFactory, WebSocketClientProtocol, WebSocketServerFactory,
    WebSocketServerProtocol, connectWS,
)
from twisted.internet import reactor
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class CountingMixin:
    expected = None
    received = 0

    def onMessageBegin(self, isBinary):
        self._binary = isBinary
        self._text = []

    def onMessageFrameBegin(self, length):
        pass

    def onMessageFrameData(self, payload):
        if self._binary:
            self.received += len(payload)
        else:
            self._text.append(payload)

    def onMessageFrameEnd(self):
        pass

    def onMessageEnd(self):
        if not self._binary:
            self.expected = int(b"".join(self._text))
            self.received = 0
        if self.expected is not None and self.received >= self.expected:
            self.sendMessage(b"done", isBinary=False)
            self.expected = None


class SinkServer(CountingMixin, WebSocketServerProtocol):
    pass


class SinkLeg(CountingMixin, WebSocketClientProtocol):
    pass


def _options(factory):
    factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0,
                               perMessageCompressionAccept=lambda offers: None)


def sink_direct(port):
    factory = WebSocketServerFactory()
    factory.protocol = SinkServer
    _options(factory)
    p = reactor.listenTCP(port, factory, interface="127.0.0.1")
    print("READY %d" % p.getHost().port, flush=True)


class Control(WebSocketClientProtocol):
    def onOpen(self):
        print("READY", flush=True)

    def onMessage(self, payload, isBinary):
        accept = json.loads(payload)["accept"]
        factory = WebSocketClientFactory(accept["address"])
        factory.protocol = SinkLeg
        _options(factory)
        connectWS(factory)


def sink_hc(url, path, rule, key):
    from relayd.wire import sas

    base = url.rstrip("/")
    token = sas.make_token("%s/%s" % (base.replace("ws://", "http://"), path), rule, key,
                            int(time.time()) + 86400)
    factory = WebSocketClientFactory("%s/$hc/%s?sb-hc-action=listen" % (base, path),
                                     headers={"ServiceBusAuthorization": token})
    factory.protocol = Control
    connectWS(factory)


@implementer(IPushProducer)
class Source(WebSocketClientProtocol):
    def onOpen(self):
        self.paused = False
        self.left = self.factory.total
        self.chunk = os.urandom(self.factory.message)
        self.transport.registerProducer(self, True)
        self.sendMessage(str(self.factory.total).encode(), isBinary=False)
        self.start = time.perf_counter()
        self._pump()

    def _pump(self):
        while self.left > 0 and not self.paused:
            n = min(self.left, len(self.chunk))
            self.sendMessage(self.chunk[:n] if n < len(self.chunk) else self.chunk, isBinary=True)
            self.left -= n

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        reactor.callLater(0, self._pump)

    def stopProducing(self):
        self.paused = True

    def onMessage(self, payload, isBinary):
        if payload == b"done":
            seconds = time.perf_counter() - self.start
            total = self.factory.total
            print(json.dumps({"bytes": total, "seconds": seconds,
                              "mb_per_s": total / seconds / 1e6}), flush=True)
            self.sendClose(1000)

    def onClose(self, wasClean, code, reason):
        if not getattr(self, "start", None):
            print(json.dumps({"error": reason}), flush=True)
        reactor.callLater(0, reactor.stop)


def source(url, total, message, token=None):
    headers = {"ServiceBusAuthorization": token} if token else {}
    factory = WebSocketClientFactory(url, headers=headers)
    factory.protocol = Source
    factory.total = total
    factory.message = message
    _options(factory)
    connectWS(factory)


def main(argv=None):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("sink-direct")
    a.add_argument("port", type=int)
    a = sub.add_parser("sink-hc")
    a.add_argument("url")
    a.add_argument("path")
    a.add_argument("rule")
    a.add_argument("key")
    a = sub.add_parser("source")
    a.add_argument("url")
    a.add_argument("--bytes", type=int, default=256 << 20)
    a.add_argument("--message", type=int, default=1 << 20)
    a.add_argument("--token")
    args = p.parse_args(argv)
    if args.cmd == "sink-direct":
        sink_direct(args.port)
    elif args.cmd == "sink-hc":
        sink_hc(args.url, args.path, args.rule, args.key)
    else:
        source(args.url, args.bytes, args.message, args.token)
    reactor.run()


if __name__ == "__main__":
    main()
