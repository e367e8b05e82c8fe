"""The HTTP door's per-connection and per-request objects are freed by reference counting when
a connection closes, without waiting for a full garbage collection (issue 8: no reference
cycles between the protocol, Exchange, timers and Deferreds that outlive the connection).

A relay in this process on real loopback sockets, a listener in this process
(``relayd.client.http.serve_resource``), clients in a thread; the garbage collector is off
while the traffic runs, so any object left in a cycle stays visible to ``gc.get_objects()``."""

import gc
import socket
import time

import pytest_twisted
import requests

from relayd.transports import front
from relayd.transports.http import connection, exchange, soap

WATCHED = (connection.HttpRelayProtocol, exchange.Exchange, connection.LegReader, soap.SoapRequest, front.FrontDoor,
           front.CountedConnection, front.AtLimit)


def census():
    counts = {}
    for o in gc.get_objects():
        if isinstance(o, WATCHED):
            counts[type(o).__name__] = counts.get(type(o).__name__, 0) + 1
    return counts


def traffic(base):
    with requests.Session() as session:  # keep-alive: several requests per connection
        for i in range(5):
            assert session.get(base + "/open/get/%d" % i, timeout=20).text == "get /get/%d" % i
        for size in (10, 1000, 200_000):  # control-channel and rendezvous paths
            r = session.post(base + "/open/post", data=b"x" * size, timeout=20)
            assert r.text == "post %d" % size
        assert session.get(base + "/nothing/here", timeout=20).status_code == 404
        assert session.get(base + "/few/x", timeout=20).status_code == 401  # no token
    # a client that goes away in the middle of its upload
    s = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    s.sendall(b"POST /open/post HTTP/1.1\r\nHost: relay\r\nContent-Length: 50000\r\n\r\n" + b"y" * 20_000)
    time.sleep(0.2)
    s.close()
    # and one that closes while its response is on the way
    s = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    s.sendall(b"GET /open/get/slow HTTP/1.1\r\nHost: relay\r\n\r\n")
    s.close()


def attributes(obj):
    """An object's attributes for the failure message, whether it keeps them in a ``__dict__``
    or in ``__slots__`` (the door's protocols do)."""
    if hasattr(obj, "__dict__"):
        return dict(vars(obj))
    return {name: getattr(obj, name, None) for cls in type(obj).__mro__ for name in getattr(cls, "__slots__", ())}


@pytest_twisted.ensureDeferred
async def test_http_door_objects_are_freed_without_a_full_collection(relay):
    from twisted.internet import reactor, task, threads
    from twisted.web import resource as web_resource

    from relayd.client.connection_string import ConnectionInfo
    from relayd.client.http import serve_resource
    from tests.support.relay import ROOT_KEY
    from tests.support.waits import wait_for

    class Echo(web_resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            return b"get " + request.path

        def render_POST(self, request):
            return b"post %d" % len(request.content.read())

    info = ConnectionInfo.from_url(relay.url, rule="root", key=ROOT_KEY)
    forwarder = await serve_resource(reactor, info, "open", Echo())
    front_factory = relay.service.front
    try:
        idle = front_factory.connections  # the forwarder's control channel
        await threads.deferToThread(requests.get, relay.http_url + "/open/warm", timeout=20)
        await wait_for(lambda: front_factory.connections <= idle)  # the warm-up connection closed
        settled = front_factory.connections
        gc.collect()
        gc.disable()
        try:
            before = census()
            await threads.deferToThread(traffic, relay.http_url)
            deadline = time.monotonic() + 10
            while front_factory.connections > settled and time.monotonic() < deadline:
                await task.deferLater(reactor, 0.05, lambda: None)
            open_ = [(type(o.wrappedProtocol).__name__, getattr(o.wrappedProtocol, "role", None),
                      attributes(getattr(o.wrappedProtocol, "exchange", None) or o.wrappedProtocol))
                     for o in gc.get_objects() if isinstance(o, front.CountedConnection) and o.wrappedProtocol]
            if front_factory.connections != settled:
                for item in open_:
                    print({k: v for k, v in item[2].items() if k not in ("headers", "lowered", "forward_headers")})
            assert front_factory.connections == settled, open_
            await task.deferLater(reactor, 0.1, lambda: None)
            after = census()
        finally:
            gc.enable()
        leftover = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) > before.get(k, 0)}
        assert not leftover, "left in reference cycles after the connections closed: %r" % leftover
    finally:
        await forwarder.stop()
