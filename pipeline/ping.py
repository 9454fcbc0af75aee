"""Does an address answer a ping? `ping -c1 -W<seconds> ADDRESS`, or the command in PING_COMMAND (e.g. with sudo)."""

import os
import shlex
import subprocess


def answers_ping(address, *, timeout=1.0, command=None):
    argv = shlex.split(command or os.environ.get("PING_COMMAND") or "ping")
    wait = max(1, round(timeout))
    try:
        result = subprocess.run(
            [*argv, "-c1", f"-W{wait}", address],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=wait + 2,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0
