"""JSON replies of the management API: errors as ``{"error": {"code", "message", "trackingId"}}``,
results as JSON, and answers that wait for the store (:func:`when_written`)."""

import json

from twisted.logger import Logger
from twisted.web import server

from relayd import access

log = Logger()


def error_body(status, message):
    return json.dumps({"error": {"code": status, "message": message, "trackingId": access.tracking_id()}}).encode()


def json_error(request, status, message):
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return error_body(status, message)


def json_reply(request, obj, status=200):
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(obj, indent=1).encode()


def when_written(request, written, reply, status=200):
    """Answer ``request`` with ``reply()`` (a JSON-able object, made when the write is done) and
    ``status`` once the Deferred ``written`` of a store write fires -- the change is durable
    then -- or with 500 if the write failed.  Returns NOT_DONE_YET for ``render``."""
    gone = []
    request.notifyFinish().addErrback(gone.append)

    def answer(body):
        if not gone:
            request.write(body)
            request.finish()

    def done(_):
        answer(json_reply(request, reply(), status))

    def failed(failure):
        log.failure("management API: a store write failed", failure)
        answer(json_error(request, 500, "the change applies now but could not be written to the store (%s); "
                                        "it will be lost at restart: check the data directory and retry"
                          % failure.getErrorMessage()))

    written.addCallbacks(done, failed)
    return server.NOT_DONE_YET
