"""The Node.js side of the WebSocket sections (stream, pingpong, rendezvous): ``bench/node/``
holds ``ws`` with ``bufferutil`` and ``utf-8-validate`` (native masking and UTF-8 checks,
versions pinned in its package.json and package-lock.json) and the programs:

    peer.js ROLE [--listen=URL --token=T]   the far end: a plain WebSocket server (the direct
                                            anchor) and an HC listener behind relayd, both
                                            serving ROLE (sink, echo, hold)
    stream.js, pingpong.js, rendezvous.js   the clients; each prints one JSON line

:func:`ensure` runs ``npm ci`` in bench/node when its node_modules is missing or older than
its package-lock.json; without node or npm, the sections are skipped with that reason.
"""

import json
import os
import shutil
import subprocess
import time

from bench.harness import HERE, KEY, RULE, log

NODE_DIR = os.path.join(HERE, "node")
NEEDS = ("node and npm are needed for the WebSocket sections (apt-get install -y nodejs npm, "
         "or Node.js >= 18 from nodejs.org); they are skipped")
NPM_CI_TIMEOUT = 600
TOKEN_LIFETIME = 86400
_ensured = {}


def ensure():
    """None when bench/node is ready to run (``npm ci`` done now if needed), else why not."""
    if "why" in _ensured:
        return _ensured["why"]
    why = None
    if not shutil.which("node") or not shutil.which("npm"):
        why = NEEDS
    elif _stale():
        log("npm ci in %s (ws, bufferutil, utf-8-validate)" % NODE_DIR)
        out = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True,
                             text=True, timeout=NPM_CI_TIMEOUT)
        if out.returncode != 0:
            why = "npm ci in bench/node failed: %s" % (out.stderr or out.stdout).strip()[-1000:]
    if why is None:
        check = subprocess.run(["node", "-e", "console.log(JSON.stringify(require('./common').nativeHelpers()))"],
                               cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
        if check.returncode != 0:
            why = "bench/node cannot load its native ws helpers: %s" % check.stderr.strip()[-1000:]
        else:
            _ensured["versions"] = json.loads(check.stdout)
    _ensured["why"] = why
    return why


def versions():
    """{"ws", "bufferutil", "utf-8-validate", "node"} once :func:`ensure` succeeded, else {}."""
    if not _ensured.get("versions"):
        return {}
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return dict(_ensured["versions"], node=node)


def _stale():
    marker = os.path.join(NODE_DIR, "node_modules", ".package-lock.json")
    lock = os.path.join(NODE_DIR, "package-lock.json")
    return not os.path.exists(marker) or os.path.getmtime(marker) < os.path.getmtime(lock)


def script(name):
    return os.path.join(NODE_DIR, name)


def entity_config(path):
    """The relay configuration (TOML) of one HC entity ``path`` whose senders need a token."""
    return '\n[[hybrid_connections]]\npath = "%s"\n' % path


class Entity:
    """An HC entity of a relay (a :meth:`Harness.relay`): its listen and connect URLs and the
    tokens for them (made by relayd's own SAS code)."""

    def __init__(self, relay, path):
        from relayd.wire import sas

        base = "ws://127.0.0.1:%d" % relay.port
        self.listen_url = "%s/$hc/%s?sb-hc-action=listen" % (base, path)
        self.connect_url = "%s/$hc/%s?sb-hc-action=connect" % (base, path)
        self.token = sas.make_token("http://127.0.0.1:%d/%s" % (relay.port, path), RULE, KEY,
                                    int(time.time()) + TOKEN_LIFETIME)


def start_peer(harness, name, role, entity=None):
    """``node peer.js ROLE`` (listening on ``entity`` too when given); its Proc, ``.port`` the
    direct server's port."""
    cmd = ["node", script("peer.js"), role]
    if entity is not None:
        cmd += ["--listen=%s" % entity.listen_url, "--token=%s" % entity.token]
    return harness.start(name, cmd, cwd=NODE_DIR)


def run_client(name, url, *options, token=None, timeout=300):
    """``node NAME URL OPTIONS`` to its end; its JSON line (RuntimeError on {"error"} or none)."""
    cmd = ["node", script(name), url, *options]
    if token:
        cmd.append("--token=%s" % token)
    out = subprocess.run(cmd, cwd=NODE_DIR, capture_output=True, text=True, timeout=timeout)
    return parse_result(name, out.stdout, out.stderr)


def parse_result(name, stdout, stderr=""):
    """The first JSON line of a client's output (RuntimeError on {"error"} or none)."""
    for line in stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            if "error" in result:
                raise RuntimeError("%s: %s" % (name, result["error"]))
            return result
    raise RuntimeError("%s printed no result: %s%s" % (name, stdout[-1000:], stderr[-1000:]))
