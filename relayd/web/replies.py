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
            request.setHeader(b"content-length", b"%d" % len(body))  # as a direct answer: not chunked
            request.write(body)
            request.finish()

    def done(_):
        answer(json_reply(request, reply(), status))

    def failed(failure):
        if getattr(failure.value, "status", None) == 503:  # the store is away for now (a cluster's Redis)
            log.warn("management API: {error}", error=failure.getErrorMessage())
            return answer(json_error(request, 503, failure.getErrorMessage()))
        log.failure("management API: a store write failed", failure)
        answer(json_error(request, 500, "the change applies now but could not be written to the store (%s); "
                                        "it will be lost at restart: check the data directory and retry"
                          % failure.getErrorMessage()))

    written.addCallbacks(done, failed)
    return server.NOT_DONE_YET


class BadBody(ValueError):
    """A request body that is not the JSON object a call wants: 400 (or 413) with this message."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def read_json(request, limit):
    """The request's JSON object body ({} when empty), at most ``limit`` bytes, or BadBody."""
    body = request.content.read(limit + 1)
    if len(body) > limit:
        raise BadBody("the request body is larger than %d bytes" % limit, 413)
    try:
        spec = json.loads(body or b"{}")
    except ValueError as e:
        raise BadBody("body is not JSON: %s" % e) from None
    if not isinstance(spec, dict):
        raise BadBody("body must be a JSON object")
    return spec
