"""Flow control and memory through a real ``twistd -n relayd`` process.

* A sender pushes 256 MiB at a listener leg that has stopped reading: the sender stalls,
  the relay's RSS stays within the documented bound, and once the listener reads again
  every byte arrives, in order.
* A single 1 GiB message (one frame) passes, and the relay never holds it whole.
"""

import hashlib
import json
import os
import time

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from relayd.wire import sas
from tests.support.relay import ROOT_KEY
from tests.wsclient import connect
from tests.support.waits import sleep

pytestmark = pytest.mark.slow

MiB = 1 << 20
# Documented bound (docs/protocol.rst, "Memory bound"): per spliced pair about
# 2 x (one read + one write buffer of limits.leg_buffer = 256 KiB) per direction.  The test
# allows 16 MiB of growth for the allocator and Autobahn's per-connection state.
RSS_GROWTH_LIMIT = 16 * MiB


@implementer(IPushProducer)
class Pusher(WebSocketClientProtocol):
    """Sends ``total`` bytes, either as messages of ``chunk`` bytes or as one single message
    (one frame), writing only while the socket accepts more (a well-behaved producer)."""

    def onOpen(self):
        f = self.factory
        self.paused = False
        self.sent = 0
        self.digest = hashlib.sha256()
        self.block = os.urandom(MiB)
        self.transport.registerProducer(self, True)
        if f.single:
            self.beginMessage(isBinary=True)
            self.beginMessageFrame(f.total)
        f.opened.callback(self)
        self._pump()

    def _pump(self):
        f = self.factory
        while self.sent < f.total and not self.paused:
            n = min(MiB, f.total - self.sent)
            data = self.block[:n]
            self.digest.update(data)
            if f.single:
                self.sendMessageFrameData(data)
            else:
                self.sendMessage(data, isBinary=True)
            self.sent += n
        if self.sent >= f.total and f.single and not getattr(self, "ended", False):
            self.ended = True
            self.endMessage()

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        reactor.callLater(0, self._pump)

    def stopProducing(self):
        self.paused = True


def push(url, token, total, single):
    factory = WebSocketClientFactory(url, headers={"ServiceBusAuthorization": token})
    factory.protocol = Pusher
    factory.total = total
    factory.single = single
    factory.opened = defer.Deferred()
    factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
    connectWS(factory)
    return factory.opened


class Counter(WebSocketClientProtocol):
    """An accept leg that hashes what it receives frame by frame (never whole messages)."""

    def onOpen(self):
        self.received = 0
        self.messages = 0
        self.digest = hashlib.sha256()
        self.factory.opened.callback(self)

    def onMessageBegin(self, isBinary):
        self.messages += 1

    def onMessageFrameBegin(self, length):
        pass

    def onMessageFrameData(self, payload):
        self.received += len(payload)
        self.digest.update(payload)

    def onMessageFrameEnd(self):
        pass

    def onMessageEnd(self):
        pass


def accept_leg(address):
    factory = WebSocketClientFactory(address)
    factory.protocol = Counter
    factory.opened = defer.Deferred()
    factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
    connectWS(factory)
    return factory.opened


async def wait_until(predicate, timeout, step=0.05):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("condition not met in %ss" % timeout)
        await sleep(step)


async def paired(relay_proc, total, single):
    t = sas.make_token(relay_proc.http_url + "/echo", "root", ROOT_KEY, int(time.time()) + 3600)
    control = await connect(relay_proc.url + "/$hc/echo?sb-hc-action=listen",
                            headers={"ServiceBusAuthorization": t})
    pusher_d = push(relay_proc.url + "/$hc/echo?sb-hc-action=connect", t, total, single)
    payload, _ = await control.messages.get()
    leg = await accept_leg(json.loads(payload)["accept"]["address"])
    return control, leg, pusher_d


@pytest_twisted.ensureDeferred
async def test_stalled_reader_stalls_writer_with_bounded_relay_memory(relay_proc):
    total = 256 * MiB
    baseline = relay_proc.rss()
    control, leg, pusher_d = await paired(relay_proc, total, single=False)
    leg.transport.pauseProducing()  # the listener stops reading
    pusher = await pusher_d

    # wait until the sender is stalled: nothing more accepted for a while
    last, still_since = -1, time.time()
    while time.time() - still_since < 1.5:
        await sleep(0.1)
        if pusher.sent != last:
            last, still_since = pusher.sent, time.time()
    stalled_at = pusher.sent
    peak = relay_proc.rss()
    print("stalled after %.1f MiB; relay RSS %.1f -> %.1f MiB" % (stalled_at / MiB, baseline / MiB, peak / MiB))
    assert stalled_at < 64 * MiB, "the sender was not held back (%d bytes accepted)" % stalled_at
    assert peak - baseline < RSS_GROWTH_LIMIT, (baseline, peak)

    leg.transport.resumeProducing()  # reading again: everything arrives
    rss_samples = []

    def done():
        rss_samples.append(relay_proc.rss())
        return leg.received >= total

    await wait_until(done, timeout=180, step=0.2)
    assert leg.received == total
    assert leg.messages == total // MiB
    assert leg.digest.hexdigest() == pusher.digest.hexdigest()
    assert max(rss_samples) - baseline < RSS_GROWTH_LIMIT, (baseline, max(rss_samples))
    control.sendClose(1000)


@pytest_twisted.ensureDeferred
async def test_one_gib_single_message(relay_proc):
    total = 1024 * MiB
    baseline = relay_proc.rss()
    control, leg, pusher_d = await paired(relay_proc, total, single=True)
    pusher = await pusher_d
    rss_samples = []

    def done():
        rss_samples.append(relay_proc.rss())
        return leg.received >= total

    await wait_until(done, timeout=300, step=0.2)
    print("1 GiB message: relay RSS %.1f -> max %.1f MiB" % (baseline / MiB, max(rss_samples) / MiB))
    assert leg.received == total and leg.messages == 1
    assert leg.digest.hexdigest() == pusher.digest.hexdigest()
    assert max(rss_samples) - baseline < RSS_GROWTH_LIMIT, (baseline, max(rss_samples))
    control.sendClose(1000)
