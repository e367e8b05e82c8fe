"""The tests read nothing outside the checkout: every fixture they need lives under tests/.

Every string literal of every test module (and every script the interop tests run) is scanned
for absolute file-system paths; only system locations (/dev, /proc, /sys, /usr, /bin: tools and
kernel interfaces) are allowed.  Request targets such as ``/echo/x`` are not file paths: a path is
only flagged when its first component is a directory that exists at the root of this machine or
is the root of the checkout's own location (``/work/...``)."""

import ast
import io
import os
import re
import tokenize

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKOUT = os.path.dirname(TESTS)
ALLOWED_TOP = {"dev", "proc", "sys", "usr", "bin"}
SCRIPT_SUFFIXES = (".js", ".cs", ".sh", ".json", ".toml", ".cfg", ".ini")
# an absolute path at the start of a string or after a separator (not the path part of a URL)
PATH = re.compile(r"(?:^|(?<=[\s\"'=(,:;]))(?<!//)/([A-Za-z0-9_.-]+)/[^\s\"']*")


def _tops():
    tops = {name for name in os.listdir("/") if os.path.isdir(os.path.join("/", name))}
    tops.add(os.path.abspath(CHECKOUT).strip("/").split("/")[0])
    tops.update({"work", "home", "tmp", "root", "opt", "srv", "mnt", "var", "etc", "media"})
    return tops - ALLOWED_TOP


def outside_paths(text, tops):
    return [m.group(0) for m in PATH.finditer(text) if m.group(1) in tops]


def _test_files():
    for top, dirs, files in os.walk(TESTS):
        dirs[:] = [d for d in dirs if d not in ("node_modules", "__pycache__", "bin", "obj")]
        for name in files:
            yield os.path.join(top, name)


def _string_literals(path):
    with open(path, "rb") as f:
        tokens = tokenize.tokenize(io.BytesIO(f.read()).readline)
        for tok in tokens:
            if tok.type == tokenize.STRING:
                try:
                    value = ast.literal_eval(tok.string)
                except (ValueError, SyntaxError):
                    value = tok.string  # f-strings: scan the source text
                if isinstance(value, bytes):
                    value = value.decode("latin-1")
                yield tok.start[0], value


def test_the_scanner_finds_outside_paths():
    tops = _tops()
    # (built at run time so this file's own literals hold no outside path)
    root = "/"
    assert outside_paths(root + "work/shared/vectors/sas-tokens.json", tops)
    assert outside_paths("open('%stmp/x/y')" % root, tops)
    assert outside_paths("VECTORS=%shome/me/v.json" % root, tops)
    assert not outside_paths("http://127.0.0.1:9090/work/x", tops)
    assert not outside_paths("/echo/x?sb-hc-token=1", tops)
    assert not outside_paths("/usr/bin/chromium", tops)
    assert not outside_paths("/dev/null", tops)


def test_no_test_reads_outside_the_checkout():
    tops = _tops()
    found = []
    for path in _test_files():
        rel = os.path.relpath(path, CHECKOUT)
        if path.endswith(".py"):
            for line, value in _string_literals(path):
                found += ["%s:%d: %s" % (rel, line, p) for p in outside_paths(value, tops)]
        elif path.endswith(SCRIPT_SUFFIXES):
            with open(path, encoding="utf-8", errors="replace") as f:
                for line, text in enumerate(f, 1):
                    found += ["%s:%d: %s" % (rel, line, p) for p in outside_paths(text, tops)]
    assert not found, "tests must read only files inside the checkout:\n" + "\n".join(found)


def test_sas_vectors_live_in_the_checkout():
    from tests.unit import test_auth

    assert os.path.commonpath([os.path.abspath(test_auth.VECTORS_PATH), TESTS]) == TESTS
    assert os.path.isfile(test_auth.VECTORS_PATH)
