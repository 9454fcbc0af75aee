"""A real OpenSSH server on a loopback port, standing in for the monitoring host.

The lab generates the server's host key and a client key at start (never committed), authorizes the client key
for the current user, and writes a known_hosts file for the portal, which must not accept unknown host keys. The
monitoring host's files are lab.host_dir; sessions run as the current user on this machine, so promtool and
amtool are the local ones.
"""

import contextlib
import getpass
import shutil
import subprocess
from pathlib import Path

from lab.core import LabError, free_port

NAME = "sshd"
REQUIRES = ()

SSHD = "/usr/sbin/sshd"

CONFIG = """\
# sshd of the lab's monitoring host (loopback only, key authentication only).
ListenAddress 127.0.0.1:{port}
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
MaxStartups 50:30:200
Subsystem sftp internal-sftp
"""


def _keygen(path, comment):
    if path.exists():
        return
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def start(lab):
    if not Path(SSHD).exists() or not shutil.which("ssh-keygen"):
        raise LabError("lab: OpenSSH server is not installed; run: apt-get install -y openssh-server")
    # sshd's privilege-separation directory; only root can (and must) have it.
    with contextlib.suppress(PermissionError):
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    ssh_dir = lab.run_dir / "ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    lab.host_dir.mkdir(parents=True, exist_ok=True)
    host_key = ssh_dir / "host_ed25519_key"
    client_key = ssh_dir / "client_key"
    _keygen(host_key, "vmautoscale-lab-host")
    _keygen(client_key, "vmautoscale-lab-portal")
    authorized_keys = ssh_dir / "authorized_keys"
    authorized_keys.write_text(Path(f"{client_key}.pub").read_text())
    user = getpass.getuser()
    port = free_port()
    config = ssh_dir / "sshd_config"
    config.write_text(CONFIG.format(port=port, host_key=host_key, authorized_keys=authorized_keys, user=user))
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise LabError(f"lab: sshd rejected {config}: {check.stderr.strip()}")
    known_hosts = ssh_dir / "known_hosts"
    key_type, key_data = Path(f"{host_key}.pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_data}\n")
    pid = lab.spawn(NAME, [SSHD, "-D", "-e", "-f", config])
    lab.wait_tcp(NAME, port, pid=pid, timeout=15)
    return {
        "pids": [pid],
        "host": "127.0.0.1",
        "port": port,
        "user": user,
        "key_file": str(client_key),
        "known_hosts": str(known_hosts),
        "host_public_key": f"{key_type} {key_data}",
        "host_dir": str(lab.host_dir),
        "summary": f"{user}@127.0.0.1:{port} (host files {lab.host_dir})",
        "env": {
            "MONITORING_SSH_HOST": "127.0.0.1",
            "MONITORING_SSH_PORT": str(port),
            "MONITORING_SSH_USER": user,
            "MONITORING_SSH_KEY_FILE": str(client_key),
            "MONITORING_SSH_KNOWN_HOSTS": str(known_hosts),
        },
    }
