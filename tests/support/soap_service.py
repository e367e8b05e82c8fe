"""A spyne SOAP service for the SOAP relay tests (``python -m tests.support.soap_service``).

Serves the same Calculator service as SOAP 1.1 and SOAP 1.2 on two loopback ports and prints
``READY <soap11_port> <soap12_port>``.  Operations: add(a, b) -> int, echo(text) -> str,
fail(text) raises a server fault, notify(text) returns nothing (appends to $NOTIFY_FILE).
"""

import os
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from spyne import Application, Fault, Integer, ServiceBase, Unicode, rpc
from spyne.protocol.soap import Soap11, Soap12
from spyne.server.wsgi import WsgiApplication


class Calculator(ServiceBase):
    @rpc(Integer, Integer, _returns=Integer)
    def add(ctx, a, b):
        return a + b

    @rpc(Unicode, _returns=Unicode)
    def echo(ctx, text):
        return text

    @rpc(Unicode, _returns=Unicode)
    def fail(ctx, text):
        raise Fault("Server.Custom", "failed: %s" % text)

    @rpc(Unicode)
    def notify(ctx, text):
        path = os.environ.get("NOTIFY_FILE")
        if path:
            with open(path, "a") as f:
                f.write(text + "\n")


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def serve(protocol):
    app = Application([Calculator], tns="http://relayd.test/calc", in_protocol=protocol(validator="lxml"),
                      out_protocol=protocol())
    server = make_server("127.0.0.1", 0, WsgiApplication(app), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_port


def main():
    ports = [serve(Soap11), serve(Soap12)]
    print("READY %d %d" % tuple(ports), flush=True)
    sys.stdin.read()  # until the test closes stdin


if __name__ == "__main__":
    main()
