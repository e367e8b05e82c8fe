"""The tests' subprocesses use cached bytecode (see tests/conftest.py): a relay, a CLI command or
a bridge started by a test must not compile relayd from source each time, even where the
environment sets PYTHONDONTWRITEBYTECODE -- the cache then lives under the temp dir, not in
the checkout."""

import os
import subprocess
import sys


def test_a_child_python_reads_and_writes_cached_bytecode():
    out = subprocess.run([sys.executable, "-c", "import sys, relayd.wire.sas as m; "
                          "print(sys.dont_write_bytecode, sys.pycache_prefix, m.__cached__)"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    dont_write, prefix, cached = out.stdout.split()
    assert dont_write == "False"
    assert os.path.exists(cached), cached  # written by this child or an earlier one
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if prefix != "None":
        assert not cached.startswith(repo), "the cache is kept out of the checkout: %s" % cached
