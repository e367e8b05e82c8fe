"""A spyne SOAP service for the SOAP relay tests (``python -m tests.support.soap_service``).

Serves the same Calculator service as SOAP 1.1 and SOAP 1.2 on two loopback ports and prints
``READY <soap11_port> <soap12_port>``.  Operations: add(a, b) -> int, echo(text) -> str,
fail(text) raises a server fault, notify(text) is a one-way operation (appends to
$NOTIFY_FILE and answers 202 Accepted with no body).

spyne declares one-way (``_is_async``) operations with WS-Addressing header parts whose
messages it leaves out of the WSDL, which zeep rightly refuses; :func:`one_way_fix` drops those
header references from the WSDL and turns the one-way operation's response into a bare 202,
as WCF does.
"""

import os
import re
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

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

    @rpc(Unicode, _is_async=True)
    def notify(ctx, text):
        path = os.environ.get("NOTIFY_FILE")
        if path:
            with open(path, "a") as f:
                f.write(text + "\n")


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def one_way_fix(app):
    def wrapped(environ, start):
        query = environ.get("QUERY_STRING", "")
        action = environ.get("HTTP_SOAPACTION", "") + environ.get("CONTENT_TYPE", "")
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers

        if environ["REQUEST_METHOD"] == "GET" and "wsdl" in query:
            body = b"".join(app(environ, capture))
            body = re.sub(rb'<wsdlsoap1[12]:header message="tns:(ReplyToHeader|MessageIDHeader)"[^>]*/>', b"", body)
            headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
            start(captured["status"], headers + [("Content-Length", str(len(body)))])
            return [body]
        if environ["REQUEST_METHOD"] == "POST" and "notify" in action:
            b"".join(app(environ, capture))
            start("202 Accepted", [("Content-Length", "0")])
            return [b""]
        return app(environ, start)

    return wrapped


def serve(protocol):
    app = Application([Calculator], tns="http://relayd.test/calc", in_protocol=protocol(validator="lxml"),
                      out_protocol=protocol())
    server = make_server("127.0.0.1", 0, one_way_fix(WsgiApplication(app)), server_class=Server,
                         handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_port


def main():
    ports = [serve(Soap11), serve(Soap12)]
    print("READY %d %d" % tuple(ports), flush=True)
    sys.stdin.read()  # until the test closes stdin


if __name__ == "__main__":
    main()
