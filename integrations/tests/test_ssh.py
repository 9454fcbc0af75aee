"""integrations.ssh against the lab's real OpenSSH server (paramiko, SFTP, exec)."""

import subprocess

import pytest

from integrations.errors import IntegrationError
from integrations.ssh import SshClient, SshTarget
from lab.core import free_port

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def sshd(lab):
    return lab.info("sshd")


@pytest.fixture(scope="module")
def target(sshd):
    return SshTarget(
        host=sshd["host"],
        port=sshd["port"],
        user=sshd["user"],
        key_file=sshd["key_file"],
        known_hosts_file=sshd["known_hosts"],
        timeout=5.0,
    )


def _replace(target, **changes):
    values = {name: getattr(target, name) for name in target.__dataclass_fields__}
    return SshTarget(**{**values, **changes})


def _keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def test_sftp_writes_swaps_reads_and_removes_files(target, lab):
    base = lab.host_dir / "test-ssh" / "files"
    with SshClient(target) as ssh:
        ssh.makedirs(str(base))
        ssh.write_file(f"{base}/live.yml.tmp", "groups: []  # ünïcode\n", mode=0o640)
        ssh.rename(f"{base}/live.yml.tmp", f"{base}/live.yml")
        assert ssh.listdir(str(base)) == ["live.yml"]
        assert ssh.read_file(f"{base}/live.yml") == "groups: []  # ünïcode\n"
        assert (base / "live.yml").stat().st_mode & 0o777 == 0o640
        assert ssh.read_file(f"{base}/missing.yml") is None
        # Renaming over an existing file replaces it (posix-rename), as the atomic swap needs.
        ssh.write_file(f"{base}/live.yml.tmp", "new\n")
        ssh.rename(f"{base}/live.yml.tmp", f"{base}/live.yml")
        assert ssh.read_file(f"{base}/live.yml") == "new\n"
        ssh.remove(f"{base}/live.yml")
        ssh.remove(f"{base}/live.yml")  # missing_ok by default
        with pytest.raises(IntegrationError) as excinfo:
            ssh.remove(f"{base}/live.yml", missing_ok=False)
        assert excinfo.value.permanent and excinfo.value.code == "not_found"
        assert ssh.listdir(f"{base}/nope", missing_ok=True) == []
        assert ssh.round_trips >= 10
    # The files really are on the host.
    assert base.is_dir() and not (base / "live.yml").exists()


def test_run_executes_argv_without_a_shell_reading_it(target, tmp_path):
    marker = tmp_path / "injected"
    with SshClient(target) as ssh:
        result = ssh.run(["echo", f"$(touch {marker})", "; touch", str(marker)])
        assert result.exit_status == 0
        assert result.stdout == f"$(touch {marker}) ; touch {marker}\n"
        failing = ssh.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert not marker.exists()
    assert (failing.exit_status, failing.stdout, failing.stderr, failing.ok) == (3, "out\n", "err\n", False)


def test_run_timeout_is_a_temporary_error(target):
    with SshClient(target) as ssh:
        with pytest.raises(IntegrationError) as excinfo:
            ssh.run(["sleep", "3"], timeout=0.3)
        assert not excinfo.value.permanent and excinfo.value.code == "timeout"
        assert ssh.run(["true"]).ok  # the connection is still usable


def test_unknown_host_key_is_refused_and_not_added(target, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    with pytest.raises(IntegrationError) as excinfo:
        SshClient(_replace(target, known_hosts_file=str(known_hosts))).connect()
    error = excinfo.value
    assert error.system == "ssh" and error.permanent and error.code == "unknown_host_key"
    assert str(known_hosts) in error.message and "ssh-keyscan" in error.message
    assert known_hosts.read_text() == ""


def test_changed_host_key_is_refused(target, tmp_path):
    other = _keygen(tmp_path / "other_host_key")
    key_type, key_data = (tmp_path / "other_host_key.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{target.host}]:{target.port} {key_type} {key_data}\n")
    assert other.exists()
    with pytest.raises(IntegrationError) as excinfo:
        SshClient(_replace(target, known_hosts_file=str(known_hosts))).connect()
    assert excinfo.value.permanent and excinfo.value.code == "host_key_mismatch"


def test_unauthorized_key_is_a_permanent_auth_failure(target, tmp_path):
    stranger = _keygen(tmp_path / "stranger")
    with pytest.raises(IntegrationError) as excinfo:
        SshClient(_replace(target, key_file=str(stranger))).connect()
    assert excinfo.value.permanent and excinfo.value.code == "auth_failed"


def test_missing_key_file_and_known_hosts_are_permanent(target, tmp_path):
    for changes in ({"key_file": str(tmp_path / "none")}, {"known_hosts_file": str(tmp_path / "none")}):
        with pytest.raises(IntegrationError) as excinfo:
            SshClient(_replace(target, **changes)).connect()
        assert excinfo.value.permanent
        assert str(tmp_path / "none") in excinfo.value.message


def test_unreachable_host_is_a_temporary_error(target):
    with pytest.raises(IntegrationError) as excinfo:
        SshClient(_replace(target, port=free_port(), timeout=2.0)).connect()
    assert not excinfo.value.permanent and excinfo.value.code == "unreachable"
