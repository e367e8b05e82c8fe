"""The ``ssh -R`` anchor of the tcp section: a throwaway sshd on a free loopback port and an
``ssh -R`` client forwarding a port of it to a target, both with ``aes128-gcm@openssh.com``.

Everything lives in a temporary directory of the section: a fresh ed25519 host key, a fresh
ed25519 user key authorized for the current user, the sshd configuration and its pid file.
sshd runs in the foreground (``-D -e``) as a child of the harness and is stopped by its pid
like every other process; nothing of the machine's own ssh setup is read or changed (the
client gets ``-F none`` and its own known-hosts file).  Needs openssh-server
(``apt-get install -y openssh-server``) for ``/usr/sbin/sshd``.
"""

import getpass
import os
import shutil
import subprocess

from bench.harness import free_port
from tests.support.waits import wait_listening

CIPHER = "aes128-gcm@openssh.com"
SSHD_PATHS = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
PRIVSEP_DIR = "/run/sshd"  # Debian's sshd refuses to start without it (it is made at boot by systemd)
NEEDS = "openssh-server is not installed (apt-get update && apt-get install -y openssh-server)"
KEYGEN_TIMEOUT = 30
LISTEN_TIMEOUT = 20  # seconds for sshd, then the forwarded port, to accept connections

SSHD_CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {dir}/host_ed25519
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
AllowTcpForwarding yes
GatewayPorts no
X11Forwarding no
PrintMotd no
Ciphers {cipher}
LogLevel ERROR
"""


def sshd_path():
    for path in SSHD_PATHS:
        if os.path.exists(path):
            return path
    return shutil.which("sshd")


def missing():
    """Why the ssh -R anchor cannot run here, or None."""
    if not sshd_path():
        return NEEDS
    if not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return "ssh or ssh-keygen is not installed (apt-get install -y openssh-client)"
    if os.geteuid() == 0 and not os.path.isdir(PRIVSEP_DIR):
        try:
            os.makedirs(PRIVSEP_DIR, mode=0o755)
        except OSError as e:
            return "sshd needs %s and it cannot be made: %s" % (PRIVSEP_DIR, e)
    return None


def keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "relayd-bench", "-f", path],
                   check=True, capture_output=True, timeout=KEYGEN_TIMEOUT)


def start(harness, target_port):
    """Start sshd and ``ssh -N -R`` forwarding a free loopback port of sshd to ``target_port``;
    (that port, [sshd proc, ssh proc]).  Both are stopped with the section."""
    d = os.path.join(harness.workdir, "ssh")
    os.makedirs(d, mode=0o700)
    keygen(os.path.join(d, "host_ed25519"))
    keygen(os.path.join(d, "user_ed25519"))
    shutil.copy(os.path.join(d, "user_ed25519.pub"), os.path.join(d, "authorized_keys"))
    port = free_port()
    config = os.path.join(d, "sshd_config")
    with open(config, "w") as f:
        f.write(SSHD_CONFIG.format(port=port, dir=d, cipher=CIPHER))
    sshd = harness.start("sshd", [sshd_path(), "-D", "-e", "-f", config], ready=None)
    _listening(port, sshd)
    forwarded = free_port()
    ssh = harness.start("ssh -R", [
        "ssh", "-N", "-F", "none", "-p", str(port), "-i", os.path.join(d, "user_ed25519"),
        "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=%s" % os.path.join(d, "known_hosts"), "-o", "BatchMode=yes",
        "-o", "Ciphers=%s" % CIPHER, "-o", "ExitOnForwardFailure=yes", "-o", "Compression=no",
        "-o", "ServerAliveInterval=0", "-R", "127.0.0.1:%d:127.0.0.1:%d" % (forwarded, target_port),
        "%s@127.0.0.1" % getpass.getuser()], ready=None)
    _listening(forwarded, ssh, sshd)
    return forwarded, [sshd, ssh]


def _listening(port, *procs):
    """Wait until ``port`` accepts connections; RuntimeError with the logs of ``procs`` if not."""
    try:
        wait_listening(port, timeout=LISTEN_TIMEOUT)
    except AssertionError as e:
        logs = "\n".join("%s: %s" % (p.name, p.text()[-1500:]) for p in procs)
        raise RuntimeError("%s\n%s" % (e, logs)) from None
