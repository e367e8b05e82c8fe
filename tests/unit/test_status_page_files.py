"""The status page's file table (relayd.web.ui): what is read from its directory, once, and
what a request can reach -- served by a real twisted.web site on a loopback port in the test's
reactor, with a directory holding symlinks out of it (to a secret file next to it, to a Python
module, to a directory), a subdirectory and a file of an unknown type next to the page's files."""

import http.client
import os
import shutil

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.web import resource, server

from relayd.web import ui


@pytest.fixture
def page_dir(tmp_path):
    d = tmp_path / "page"
    d.mkdir()
    for name in ("index.html", "app.js", "style.css"):
        shutil.copy(os.path.join(ui.DIRECTORY, name), str(d / name))
    (tmp_path / "secret.txt").write_text("root:x:0:0:secret")
    os.symlink(str(tmp_path / "secret.txt"), str(d / "passwd.html"))
    os.symlink(os.path.abspath(ui.__file__), str(d / "source.js"))
    os.symlink(str(tmp_path), str(d / "up.css"))
    (d / "sub").mkdir()
    (d / "sub" / "inner.html").write_text("<p>inner</p>")
    (d / "notes.txt").write_text("not a page file")
    (d / "secret.py").write_text("KEY = 'x'")
    return d


def test_only_regular_files_of_known_types_are_read(page_dir):
    files = ui.load(str(page_dir))
    assert sorted(files) == ["app.js", "index.html", "style.css"]
    assert files["index.html"] == (b"text/html; charset=utf-8", (page_dir / "index.html").read_bytes())
    assert files["app.js"][0] == b"text/javascript; charset=utf-8"


def test_the_shipped_page_is_complete_and_within_bounds():
    files = ui.load()
    assert {"index.html", "app.js", "style.css", "icon.svg"} <= set(files)
    assert sum(len(body) for _, body in files.values()) <= ui.MAX_FILES * ui.MAX_FILE_BYTES


def test_a_file_over_the_bound_is_refused_naming_it(page_dir):
    (page_dir / "big.js").write_bytes(b"x" * (ui.MAX_FILE_BYTES + 1))
    with pytest.raises(ValueError, match=r"big\.js is %d bytes, over the status page's limit of %d"
                       % (ui.MAX_FILE_BYTES + 1, ui.MAX_FILE_BYTES)):
        ui.load(str(page_dir))


def test_too_many_files_are_refused(page_dir):
    for i in range(ui.MAX_FILES):
        (page_dir / ("extra%02d.css" % i)).write_text("p {}")
    with pytest.raises(ValueError, match="more than %d files" % ui.MAX_FILES):
        ui.load(str(page_dir))


def test_a_missing_directory_serves_nothing(tmp_path):
    assert ui.load(str(tmp_path / "absent")) == {}


def test_is_page():
    assert ui.is_page("/$relayd/ui") and ui.is_page("/$relayd/ui/") and ui.is_page("/$relayd/ui/app.js")
    assert not ui.is_page("/$relayd/uix") and not ui.is_page("/$relayd/entities") and not ui.is_page("/$relayd/")


@pytest_twisted.ensureDeferred
async def test_served_files_are_only_the_table(page_dir):
    page = ui.StatusPage(str(page_dir))
    root = resource.Resource()
    root.putChild(b"$relayd", page)
    site = server.Site(root)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    number = port.getHost().port

    def fetch(name):  # in a thread: the site answers in the test's reactor
        conn = http.client.HTTPConnection("127.0.0.1", number, timeout=10)
        try:
            conn.request("GET", "/$relayd/ui/" + name)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    async def get(name):
        return await threads.deferToThread(fetch, name)

    try:
        assert await get("app.js") == (200, (page_dir / "app.js").read_bytes())
        assert (await get(""))[0] == 200
        for name in ("passwd.html", "source.js", "up.css", "sub/inner.html", "sub", "notes.txt", "secret.py",
                     "%2e%2e/page/app.js", "..%2fpage%2fapp.js"):
            code, body = await get(name)
            assert code == 404, (name, body)
            assert b"root:" not in body and b"import" not in body and b"<p>inner" not in body
        os.remove(str(page_dir / "app.js"))  # read once, when the page was made: still served
        assert await get("app.js") == (200, page.files["app.js"][1])
    finally:
        await port.stopListening()
