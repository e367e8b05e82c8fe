"""HTTP bodies between a rendezvous WebSocket and Twisted's HTTP client, for
:mod:`relayd.client.http`.

* :class:`StreamBody`: a request body arriving over a rendezvous leg (binary frames), fed to
  the local request as an ``IBodyProducer``; the leg's transport is paused until the local
  request starts taking the body, and whenever the local connection pauses it;
* :class:`BodyToLeg`: a local response body streamed into the leg as one binary message, the
  local connection paused while the leg's transport is (a push producer registered on it);
* :class:`BodyToBytes`: a small local response body collected whole (control-channel answers);
* :class:`Discard`: a consumer that drops a refused request's body.
"""

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer


@implementer(IBodyProducer)
class StreamBody:
    """A request body arriving over a rendezvous WebSocket, fed to the local HTTP client."""

    length = UNKNOWN_LENGTH

    def __init__(self, leg):
        self.leg = leg
        self.consumer = None
        self.finished = defer.Deferred()
        self.held = []
        self.ended = False
        self.failure = None

    def startProducing(self, consumer):
        self.consumer = consumer
        held, self.held = self.held, []
        if self.failure is not None:
            self.finished.errback(self.failure)
            return self.finished
        for data in held:
            consumer.write(data)
        self.leg.transport.resumeProducing()
        if self.ended:
            self.finished.callback(None)
        return self.finished

    def fail(self, reason):
        """The relayed request was cut short (its leg closed mid-body): fail the body, which
        makes the HTTP client abort the local connection instead of waiting for the rest."""
        if self.ended:
            return
        self.ended = True
        self.held = []
        self.failure = Failure(RequestCutShort(reason))
        if self.consumer is not None and not self.finished.called:
            self.finished.errback(self.failure)

    def data(self, data):
        if self.ended:
            return
        if self.consumer is None:
            self.held.append(data)
            self.leg.transport.pauseProducing()
        else:
            self.consumer.write(data)

    def end(self):
        self.ended = True
        if self.consumer is not None and not self.finished.called:
            self.finished.callback(None)

    def pauseProducing(self):
        self.leg.transport.pauseProducing()

    def resumeProducing(self):
        self.leg.transport.resumeProducing()

    def stopProducing(self):
        pass


class RequestCutShort(Exception):
    """The relayed request ended before its body was complete."""


class BodyToLeg(Protocol):
    """Streams a local response body into the rendezvous leg as one binary message."""

    def __init__(self, leg, done):
        self.leg = leg
        self.done = done
        self.first = True  # the next frame starts the message

    def connectionMade(self):
        self.leg.response_body = self
        self.leg.transport.registerProducer(_Pausing(self.transport), True)

    def dataReceived(self, data):
        if self.leg.state != self.leg.STATE_OPEN:
            return
        self.leg.send_fragment(data, self.first, False)  # one masked frame per read
        self.first = False

    def leg_lost(self):
        """The leg closed mid-response: stop reading the local response (its connection closes)."""
        if getattr(self.leg.transport, "producer", None) is not None:
            self.leg.transport.unregisterProducer()
        self.transport.stopProducing()

    def connectionLost(self, reason):
        if self.leg.response_body is self:
            self.leg.response_body = None
        if getattr(self.leg.transport, "producer", None) is not None:
            self.leg.transport.unregisterProducer()
        if self.leg.state == self.leg.STATE_OPEN:
            self.leg.send_fragment(b"", self.first, True)
        self.done.callback(None)


class BodyToBytes(Protocol):
    def __init__(self, done, limit):
        self.parts = []
        self.size = 0
        self.done = done
        self.limit = limit

    def dataReceived(self, data):
        self.parts.append(data)
        self.size += len(data)

    def connectionLost(self, reason):
        self.done.callback(b"".join(self.parts))


@implementer(IPushProducer)
class _Pausing:
    def __init__(self, transport):
        self.transport = transport

    def pauseProducing(self):
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.transport.resumeProducing()

    def stopProducing(self):
        pass


class Discard:
    """A consumer that drops what it is given (the body of a refused request)."""

    def write(self, data):
        pass
