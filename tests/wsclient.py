"""A plain Autobahn WebSocket client for tests: what a browser or any third-party client does,
independent of relayd's own client SDK."""

import json
import re

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer


class HandshakeFailed(Exception):
    def __init__(self, status, reason):
        super().__init__("%s %s" % (status, reason))
        self.status = status
        self.reason = reason


class Client(WebSocketClientProtocol):
    def __init__(self):
        super().__init__()
        self.messages = defer.DeferredQueue()
        self.closed = defer.Deferred()
        self.response = None

    def onConnect(self, response):
        self.response = response

    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.messages.put((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.called:
            m = re.search(r"upgrade failed \[(\d+)\]: (.*)", reason or "")
            status = int(m.group(1)) if m else None
            self.factory.opened.errback(HandshakeFailed(status, m.group(2) if m else reason))
        if not self.closed.called:
            self.closed.callback((code, reason))

    async def next_json(self):
        payload, is_binary = await self.messages.get()
        assert not is_binary
        return json.loads(payload)


def connect(url, headers=None, protocols=None, max_payload=0):
    """Open a WebSocket; fires with the protocol, or fails with HandshakeFailed(status)."""
    factory = WebSocketClientFactory(url, headers=headers or {}, protocols=protocols or [])
    factory.protocol = Client
    factory.opened = defer.Deferred()
    factory.setProtocolOptions(maxMessagePayloadSize=max_payload, maxFramePayloadSize=max_payload,
                               openHandshakeTimeout=20)
    connectWS(factory)
    return factory.opened
