"""The monitoring host over SSH: read, write and swap files with SFTP, run validators and reloads.

One connection per `SshClient` (a context manager); every remote call goes through `_remote`, which counts round
trips and turns paramiko's and the socket's errors into `IntegrationError(system="ssh")`. Host keys must already
be in the configured known_hosts file: an unknown key is refused, never added.

    with SshClient(target) as ssh:
        ssh.write_file("/etc/prometheus/rules/x.yml.tmp", text)
        result = ssh.run(["promtool", "check", "rules", "/etc/prometheus/rules/x.yml.tmp"])
        ssh.rename("/etc/prometheus/rules/x.yml.tmp", "/etc/prometheus/rules/x.yml")
"""

import errno
import posixpath
import shlex
import socket
import stat
import time
from dataclasses import dataclass

import paramiko

from integrations.errors import IntegrationError

SYSTEM = "ssh"
_READ_CHUNK = 32768


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    user: str
    key_file: str
    known_hosts_file: str
    timeout: float = 10.0

    def __str__(self):
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self):
        return self.exit_status == 0


class _UnknownHostKey(Exception):
    def __init__(self, hostname, key):
        super().__init__(hostname)
        self.hostname = hostname
        self.key = key


class _RefuseUnknownHostKey(paramiko.MissingHostKeyPolicy):
    """Like paramiko's RejectPolicy, but keeps the offered key so the error can show its fingerprint."""

    def missing_host_key(self, client, hostname, key):
        raise _UnknownHostKey(hostname, key)


class SshClient:
    """One SSH connection to the monitoring host. `round_trips` counts remote operations (connect included)."""

    def __init__(self, target: SshTarget):
        self.target = target
        self.round_trips = 0
        self._client = None
        self._sftp_client = None

    # --- connection ----------------------------------------------------------------------------------------
    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def connect(self):
        if self._client is not None:
            return
        target = self.target
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(target.known_hosts_file)
        except OSError as exc:
            raise IntegrationError(
                f"ssh: cannot read the known_hosts file {target.known_hosts_file} ({exc.strerror or exc}); "
                f"create it with the host key of {target.host}:{target.port}",
                system=SYSTEM,
                permanent=True,
                code="known_hosts",
            ) from exc
        client.set_missing_host_key_policy(_RefuseUnknownHostKey())
        key = self._load_key()
        self.round_trips += 1
        try:
            client.connect(
                hostname=target.host,
                port=target.port,
                username=target.user,
                pkey=key,
                look_for_keys=False,
                allow_agent=False,
                timeout=target.timeout,
                banner_timeout=target.timeout,
                auth_timeout=target.timeout,
                channel_timeout=target.timeout,
            )
        except Exception as exc:
            client.close()
            raise self._translate(exc, "connect") from exc
        self._client = client

    def close(self):
        if self._sftp_client is not None:
            self._sftp_client.close()
            self._sftp_client = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _load_key(self):
        try:
            return paramiko.PKey.from_path(self.target.key_file)
        except OSError as exc:
            message = f"ssh: cannot read the private key {self.target.key_file} ({exc.strerror or exc})"
        except (paramiko.SSHException, ValueError) as exc:
            message = f"ssh: the private key {self.target.key_file} is not usable: {exc} (a passphrase-less key)"
        raise IntegrationError(message, system=SYSTEM, permanent=True, code="key_file")

    def _sftp(self):
        if self._sftp_client is None:
            self.connect()
            self._sftp_client = self._client.open_sftp()
            self._sftp_client.get_channel().settimeout(self.target.timeout)
        return self._sftp_client

    def _remote(self, what, func, *args):
        """The choke point: run one remote operation, count it, translate its errors."""
        self.round_trips += 1
        try:
            return func(*args)
        except IntegrationError:
            raise
        except Exception as exc:
            raise self._translate(exc, what) from exc

    def _translate(self, exc, what):
        target = self.target
        where = f"{target.host}:{target.port}"
        if isinstance(exc, _UnknownHostKey):
            fingerprint = exc.key.fingerprint
            return IntegrationError(
                f"ssh: the host key of {where} ({exc.key.get_name()} {fingerprint}) is not in "
                f"{target.known_hosts_file}; check the fingerprint on the host "
                f"(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and add it, e.g. "
                f"`ssh-keyscan -p {target.port} {target.host} >> {target.known_hosts_file}`",
                system=SYSTEM,
                permanent=True,
                code="unknown_host_key",
            )
        if isinstance(exc, paramiko.BadHostKeyException):
            return IntegrationError(
                f"ssh: the host key of {where} does not match {target.known_hosts_file} (got "
                f"{exc.key.get_name()} {exc.key.fingerprint}); if the host was reinstalled, replace its line there",
                system=SYSTEM,
                permanent=True,
                code="host_key_mismatch",
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return IntegrationError(
                f"ssh: {target.user}@{where} refused the key {target.key_file}; add its public key to the "
                f"user's authorized_keys on the host",
                system=SYSTEM,
                permanent=True,
                code="auth_failed",
            )
        if isinstance(exc, TimeoutError | socket.timeout):
            return IntegrationError(
                f"ssh: {what} on {where} timed out ({exc or f'no answer within {target.timeout:g}s'})",
                system=SYSTEM,
                code="timeout",
            )
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError | ConnectionError | socket.gaierror):
            return IntegrationError(
                f"ssh: cannot reach {where} ({exc}); is the host up and sshd listening?",
                system=SYSTEM,
                code="unreachable",
            )
        if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
            return IntegrationError(
                f"ssh: {what}: permission denied for {target.user} on {where}",
                system=SYSTEM,
                permanent=True,
                code="permission_denied",
            )
        if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
            return IntegrationError(
                f"ssh: {what}: no such file or directory on {where}",
                system=SYSTEM,
                permanent=True,
                code="not_found",
            )
        return IntegrationError(f"ssh: {what} on {where} failed: {exc}", system=SYSTEM, code="ssh_error")

    # --- files ---------------------------------------------------------------------------------------------
    def read_file(self, path) -> str | None:
        """The file's text, or None when it does not exist."""

        def read():
            try:
                with self._sftp().open(path, "r") as remote:
                    remote.prefetch()
                    return remote.read().decode("utf-8")
            except FileNotFoundError:
                return None

        return self._remote(f"reading {path}", read)

    def write_file(self, path, text, mode=None, like=None):
        """Create or replace a file (not atomic: write NAME.tmp, then `rename` it over the live file).

        `like`: an existing file whose mode and owner the new one takes (the live file NAME.tmp will replace, so a
        640 alertmanager.yml holding a token stays 640 and keeps its group). Nothing is copied when it is absent.
        """

        def write():
            sftp = self._sftp()
            original = self._stat_or_none(like) if like else None
            with sftp.open(path, "w") as remote:
                if original is not None:
                    remote.chmod(0o600)  # no wider than the live file while its text is written
                remote.set_pipelined(True)
                remote.write(text.encode("utf-8"))
            if original is not None:
                written = sftp.stat(path)
                if (written.st_uid, written.st_gid) != (original.st_uid, original.st_gid):
                    sftp.chown(path, original.st_uid, original.st_gid)
                sftp.chmod(path, stat.S_IMODE(original.st_mode))
            if mode is not None:
                sftp.chmod(path, mode)

        self._remote(f"writing {path}", write)

    def _stat_or_none(self, path):
        try:
            return self._sftp().stat(path)
        except FileNotFoundError:
            return None

    def rename(self, src, dst):
        """Atomically replace dst with src (POSIX rename on the host)."""
        self._remote(f"renaming {src} to {dst}", lambda: self._sftp().posix_rename(src, dst))

    def remove(self, path, missing_ok=True):
        def remove():
            try:
                self._sftp().remove(path)
            except FileNotFoundError:
                if not missing_ok:
                    raise

        self._remote(f"removing {path}", remove)

    def makedirs(self, path):
        """Create a directory and its missing parents (like mkdir -p)."""
        missing = []
        current = posixpath.normpath(path)
        while current not in ("/", "", "."):
            if self._remote(f"checking {current}", self._exists, current):
                break
            missing.append(current)
            current = posixpath.dirname(current)
        for directory in reversed(missing):
            self._remote(f"creating directory {directory}", lambda d=directory: self._sftp().mkdir(d))

    def listdir(self, path, missing_ok=False) -> list[str]:
        """Names in a directory, sorted; [] for a missing directory when missing_ok."""

        def listdir():
            try:
                return sorted(self._sftp().listdir(path))
            except FileNotFoundError:
                if missing_ok:
                    return []
                raise

        return self._remote(f"listing {path}", listdir)

    def _exists(self, path):
        try:
            self._sftp().stat(path)
        except FileNotFoundError:
            return False
        return True

    # --- commands ------------------------------------------------------------------------------------------
    def run(self, argv: list[str], timeout=60.0) -> CommandResult:
        """Run a program on the host; argv is quoted with shlex.join, so no argument is read by the shell."""
        if not argv or not all(isinstance(arg, str) for arg in argv):
            raise IntegrationError("ssh: a command is a non-empty list of strings", system=SYSTEM, permanent=True)
        command = shlex.join(argv)
        return self._remote(f"running {argv[0]}", self._run, command, timeout)

    def _run(self, command, timeout):
        self.connect()
        channel = self._client.get_transport().open_session(timeout=self.target.timeout)
        try:
            channel.settimeout(min(timeout, 1.0))
            channel.exec_command(command)
            channel.shutdown_write()
            stdout, stderr = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            # Read both streams as they come: a full stderr must not stall a command whose stdout we wait for.
            while True:
                drained = True
                if channel.recv_ready():
                    stdout += channel.recv(_READ_CHUNK)
                    drained = False
                if channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(_READ_CHUNK)
                    drained = False
                if drained:
                    # The exit status can arrive before the last output: stop only once the host sent EOF too.
                    finished = channel.exit_status_ready() and channel.eof_received
                    if finished and not channel.recv_ready() and not channel.recv_stderr_ready():
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"command did not finish within {timeout:g}s")
                    channel.status_event.wait(0.005)
            status = channel.recv_exit_status()
        finally:
            channel.close()
        return CommandResult(
            exit_status=status,
            stdout=stdout.decode("utf-8", errors="replace"),
            stderr=stderr.decode("utf-8", errors="replace"),
        )
