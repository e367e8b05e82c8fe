"""A regular (non-editable) install: the wheel built from the checkout holds every package of
relayd and the twistd plugin, and ``twistd -n relayd`` runs from it alone."""

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile

import pytest

from tests.support.relay import stop_process

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _copy_sources(dest):
    """The checkout's sources without build output, caches, the venv or node_modules (a build
    in place would leave build/ behind, and a stale build/lib could leak into the wheel)."""
    import shutil

    shutil.copytree(CHECKOUT, dest, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "node_modules", ".pytest_cache",
        ".hypothesis", "dropin.cache", "_build"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    src = tmp_path_factory.mktemp("src") / "relayd"
    _copy_sources(src)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
                           capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = [name for name in os.listdir(out) if name.endswith(".whl")]
    assert len(wheels) == 1, wheels
    return os.path.join(str(out), wheels[0])


def test_wheel_holds_every_module_and_the_plugin(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    expected = {"twisted/plugins/relayd_plugin.py"}
    for top, dirs, files in os.walk(os.path.join(CHECKOUT, "relayd")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                expected.add(os.path.relpath(os.path.join(top, name), CHECKOUT).replace(os.sep, "/"))
    assert "relayd/web/__init__.py" in expected
    expected |= {"relayd/web/statuspage/" + n for n in os.listdir(os.path.join(CHECKOUT, "relayd/web/statuspage"))}
    assert expected <= names, sorted(expected - names)
    assert not any(n.startswith("tests/") for n in names)
    assert "twisted/plugins/dropin.cache" not in names
    metadata = [n for n in names if n.endswith(".dist-info/METADATA")]
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(metadata[0]).decode()
    from relayd import __version__
    assert "Version: %s" % __version__ in text
    assert re.search(r"^Requires-Dist: [Tt]wisted", text, re.M)
    assert re.search(r"^Provides-Extra: test", text, re.M)


def test_twistd_runs_from_the_installed_wheel_alone(wheel, tmp_path):
    """The wheel's files installed into a directory that shadows the checkout: ``twistd -n
    relayd`` starts from them (ModuleNotFoundError: relayd.web before the fix) and answers HTTP."""
    target = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), wheel],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), RELAYD_DATA_DIR=str(tmp_path / "state"))
    log_path = tmp_path / "log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c",
                                 "import sys, relayd; print('relayd from', relayd.__file__, flush=True); "
                                 "from twisted.scripts.twistd import run; "
                                 "sys.argv = ['twistd', '-n', '--pidfile=', 'relayd', '--listen', "
                                 "'tcp:0:interface=127.0.0.1']; run()"],
                                cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        m = None
        while time.time() < deadline and proc.poll() is None:
            m = re.search(r"relayd listening on [0-9.]+:(\d+)", log_path.read_text())
            if m:
                break
            time.sleep(0.05)
        text = log_path.read_text()
        assert m, text
        assert "relayd from %s" % os.path.join(str(target), "relayd") in text
        try:
            with urllib.request.urlopen("http://127.0.0.1:%s/" % m.group(1), timeout=10) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            status = e.code
        assert 200 <= status < 500
        with urllib.request.urlopen("http://127.0.0.1:%s/$relayd/ui/app.js" % m.group(1), timeout=10) as resp:
            assert resp.status == 200 and b"sessionStorage" in resp.read()  # the status page's files shipped
    finally:
        stop_process(proc)


def test_version_option():
    from relayd import __version__

    out = subprocess.run([sys.executable, "-m", "relayd.cli", "--version"], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "relayd %s" % __version__
