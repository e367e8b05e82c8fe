"""The live status page, ``/$relayd/ui/``: the few static files in ``relayd/web/statuspage/``
(HTML, hand-written JS, CSS; no framework, nothing fetched from elsewhere, so it works
air-gapped).

The files hold no data, so they are served without a token; the page asks the operator for a
Manage SAS token, keeps it in the browser's ``sessionStorage`` and sends it in the
``Authorization`` header of its calls to the management API (``GET /$relayd/status`` and
``/$relayd/entities``), which need it as always.

Serving is deliberately narrow:

* the directory is read once, when the site is built: regular files only (no symlinks, no
  subdirectories), with a known type, at most :data:`MAX_FILE_BYTES` each and :data:`MAX_FILES`
  in all, kept in memory;
* a request names one of those files by its exact name (``/$relayd/ui/`` is ``index.html``);
  the path is never joined to a directory, so ``..``, encoded separators or anything else
  that is not a name in the table is a 404;
* only ``GET`` and ``HEAD`` (else 405 with ``Allow``); every answer carries
  :data:`SECURITY_HEADERS` (a Content-Security-Policy allowing scripts, styles and calls from
  the relay itself only, no framing, no referrer).
"""

import os
import stat

from twisted.logger import Logger
from twisted.web import resource

from relayd.web.replies import json_error

PREFIX = "/$relayd/ui/"
DIRECTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "statuspage")
INDEX = "index.html"
MAX_FILE_BYTES = 256 * 1024
MAX_FILES = 16
TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
}
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                           "frame-ancestors 'none'")
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
)
METHODS = (b"GET", b"HEAD")


def is_page(path):
    """Whether a request path (as sent, before any decoding) is the status page's: such a
    request needs no token (its files hold no data)."""
    return path == PREFIX[:-1] or path.startswith(PREFIX)


def load(directory=DIRECTORY):
    """``{name: (content type, bytes)}`` of the servable files in ``directory``: regular files
    with a type in :data:`TYPES`, symlinks and everything else left out; raises ValueError
    when a file or the number of files is over its bound."""
    files = {}
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return files
    for name in names:
        content_type = TYPES.get(os.path.splitext(name)[1])
        path = os.path.join(directory, name)
        info = os.lstat(path)
        if content_type is None or not stat.S_ISREG(info.st_mode):
            continue
        if info.st_size > MAX_FILE_BYTES:
            raise ValueError("%s is %d bytes, over the status page's limit of %d" % (path, info.st_size, MAX_FILE_BYTES))
        if len(files) == MAX_FILES:
            raise ValueError("%s holds more than %d files for the status page" % (directory, MAX_FILES))
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ValueError("%s grew over the status page's limit of %d bytes" % (path, MAX_FILE_BYTES))
        files[name] = (content_type, data)
    return files


class StatusPage(resource.Resource):
    """``/$relayd/ui/*``: a leaf below the site's root; ``request.postpath`` starts with ``ui``."""

    isLeaf = True
    log = Logger()

    def __init__(self, directory=DIRECTORY):
        super().__init__()
        self.files = load(directory)
        if INDEX not in self.files:
            self.log.warn("the status page's files are missing from {directory}; /$relayd/ui/ answers 404",
                          directory=directory)

    def render(self, request):
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        body = self._answer(request)
        if request.method == b"HEAD":  # the length of what GET would send, and no body
            request.setHeader(b"content-length", b"%d" % len(body))
            return b""
        return body

    def _answer(self, request):
        if request.method not in METHODS:
            request.setHeader(b"allow", b", ".join(METHODS))
            return json_error(request, 405, "the status page is read with GET or HEAD")
        rest = request.postpath[1:]
        if not rest:
            request.redirect(PREFIX.encode())
            return b""
        name = rest[0].decode("utf-8", "replace") if len(rest) == 1 else None
        found = self.files.get(name or INDEX) if name is not None else None
        if found is None:
            return json_error(request, 404, "the status page has no file %s; open %s"
                              % (request.path.decode("utf-8", "replace"), PREFIX))
        content_type, body = found
        request.setHeader(b"content-type", content_type)
        return body
