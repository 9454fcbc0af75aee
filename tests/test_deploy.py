"""The deployment files under scripts/deploy/: systemd units, the nginx site and install.sh.

The units are checked by the real `systemd-analyze verify` (it works without systemd as PID 1) after pointing the
/opt/vmautoscale paths at this checkout, so the ExecStart programs exist. The web unit's command and the nginx
site are then run for real on free loopback ports: nginx -> gunicorn -> the portal.
"""

import ast
import configparser
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from lab.core import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "scripts" / "deploy"
UNITS = ["vmautoscale-web.service", "vmautoscale-tasks.service"]
PREFIX = "/opt/vmautoscale"


def need(program):
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.access(p, os.X_OK)), None
    )
    if not path:
        pytest.fail(f"{program} is missing: run scripts/install-system-deps.sh")
    return path


def parse_unit(text):
    # systemd allows repeated keys; the units here do not repeat any, so a strict parser doubles as a check.
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str
    parser.read_string(text)
    return parser


def localized_prefix(tmp_path, app=ROOT):
    """A stand-in for /opt/vmautoscale: app -> this checkout (or the code install.sh ships), venv -> its .venv."""
    prefix = tmp_path / "opt"
    prefix.mkdir()
    (prefix / "app").symlink_to(app)
    (prefix / "venv").symlink_to(ROOT / ".venv")
    return prefix


def staged_code(tmp_path):
    """The code install.sh copies to a host (`install.sh --stage DIR`, which needs no root)."""
    app = tmp_path / "staged-app"
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), "--stage", str(app)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return app


def localized_units(tmp_path, prefix, port=None):
    out = tmp_path / "units"
    out.mkdir()
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        assert PREFIX in text, f"{name} no longer installs under {PREFIX}: update this test and install.sh"
        text = text.replace(PREFIX, str(prefix))
        if port:
            text = text.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        (out / name).write_text(text)
    return out


def test_units_pass_systemd_analyze_verify(tmp_path):
    units = localized_units(tmp_path, localized_prefix(tmp_path))
    result = subprocess.run(
        [need("systemd-analyze"), "verify", *(str(units / n) for n in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Unknown keys and bad values are only warnings (exit 0): any output about our units is a failure too.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "vmautoscale" in line]
    assert result.returncode == 0, result.stderr
    assert ours == []


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    """The check above would notice a typo in ExecStart or in a key."""
    units = localized_units(tmp_path, localized_prefix(tmp_path))
    broken = units / UNITS[0]
    text = broken.read_text().replace("/venv/bin/gunicorn", "/venv/bin/gunicorn-typo")
    broken.write_text(text.replace("NoNewPrivileges=", "NoNewPrivilege="))
    result = subprocess.run(
        [need("systemd-analyze"), "verify", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "gunicorn-typo" in result.stderr
    assert "Unknown key 'NoNewPrivilege'" in result.stderr


@pytest.mark.parametrize("name", UNITS)
def test_units_run_hardened_as_the_service_user(tmp_path, name):
    unit = parse_unit((DEPLOY / name).read_text())
    service = unit["Service"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert service["User"] == "vmautoscale"
    assert service["EnvironmentFile"] == "/etc/vmautoscale/vmautoscale.env"
    assert service["WorkingDirectory"] == f"{PREFIX}/app"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == f"{PREFIX}/app/var"
    assert service["PrivateTmp"] == "yes"
    argv = shlex.split(service["ExecStart"])
    assert argv[0].startswith(f"{PREFIX}/venv/bin/")

    units = localized_units(tmp_path, localized_prefix(tmp_path))
    result = subprocess.run(
        [need("systemd-analyze"), "security", "--offline=true", "--threshold=25", str(units / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Exposure 2.5 or lower ("OK" in systemd's words); a lost hardening option pushes it up.
    assert result.returncode == 0, result.stdout[-2000:]


METRICS_TOKEN = "deploy-test-metrics-token"


def wait_for(what, check, *, timeout, logs=None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"{what} within {timeout} s" + (f":\n{logs()}" if logs else "")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """The web unit's ExecStart behind the nginx site, on free loopback ports, with a migrated SQLite database."""
    tmp_path = tmp_path_factory.mktemp("deployed")
    nginx = need("nginx")
    # The portal runs from the code install.sh ships: no lab/, no demo/, no tests.
    prefix = localized_prefix(tmp_path, staged_code(tmp_path))
    gunicorn_port, http_port, https_port = free_port(), free_port(), free_port()
    web = parse_unit((localized_units(tmp_path, prefix, gunicorn_port) / UNITS[0]).read_text())["Service"]

    env = {
        "PATH": os.environ["PATH"],
        "LAB_ENV_FILE": "",
        "SECRET_KEY": "deploy-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        "WEBHOOK_TOKEN": "deploy-test-webhook-token",
        "METRICS_TOKEN": METRICS_TOKEN,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    # The task cluster runs the periodic passes: point every external system at a closed loopback port.
    closed = free_port()
    env.update(
        {
            "MONITORING_SSH_PORT": str(closed),
            "PROMETHEUS_URL": f"http://127.0.0.1:{closed}",
            "ALERTMANAGER_URL": f"http://127.0.0.1:{closed}",
            "JENKINS_URL": f"http://127.0.0.1:{closed}",
            "VCENTER_URL": f"https://127.0.0.1:{closed}/sdk",
            "F5_URL": f"https://127.0.0.1:{closed}",
        }
    )
    env.update(dict(item.split("=", 1) for item in shlex.split(web["Environment"])))
    for command in (["migrate", "--noinput", "-v0"], ["createcachetable"]):  # as install.sh does
        done = subprocess.run(
            [str(prefix / "venv" / "bin" / "python"), "manage.py", *command],
            cwd=web["WorkingDirectory"], env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    static = tmp_path / "static"
    static.mkdir()
    (static / "probe.txt").write_text("static file served by nginx\n")
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(
        [need("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(tls / "portal.key"), "-out", str(tls / "portal.crt"), "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    site = (DEPLOY / "vmautoscale-nginx.conf").read_text()
    for old, new in [
        ("127.0.0.1:8000", f"127.0.0.1:{gunicorn_port}"),
        (f"{PREFIX}/app/var/static/", f"{static}/"),
        ("/etc/vmautoscale/tls", str(tls)),
        ("/var/log/nginx", str(tmp_path)),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
    ]:
        assert old in site, old
        site = site.replace(old, new)
    site = "\n".join(line for line in site.splitlines() if "listen [::]" not in line)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/nginx-main.log;\nevents {{}}\n"
        f"http {{ include /etc/nginx/mime.types; include {tmp_path}/site.conf; }}\n"
    )
    nginx_argv = [nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-e", str(tmp_path / "e.log")]
    checked = subprocess.run([*nginx_argv, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr

    # Type=notify: systemd waits for READY=1 on this socket before it calls the unit started.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    env["NOTIFY_SOCKET"] = str(tmp_path / "notify.sock")
    log = (tmp_path / "gunicorn.log").open("w")
    portal = subprocess.Popen(
        shlex.split(web["ExecStart"]), cwd=web["WorkingDirectory"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    proxy = subprocess.Popen([*nginx_argv, "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    info = {
        "base": f"https://127.0.0.1:{https_port}",
        "http": f"http://127.0.0.1:{http_port}",
        "ca": str(tls / "portal.crt"),
        "tmp": tmp_path,
        "notify": notify,
        "env": dict(env),
        "units": tmp_path / "units",
    }

    def gunicorn_log():
        assert portal.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
        return (tmp_path / "gunicorn.log").read_text()[-3000:]

    try:
        # The first answer waits for a worker to import Django: slow on a busy machine.
        wait_for(
            "nginx -> gunicorn answered",
            lambda: (
                gunicorn_log() is not None
                and requests.get(f"{info['base']}/healthz", verify=info["ca"], timeout=10).status_code != 502
            ),
            timeout=60,
            logs=gunicorn_log,
        )
        yield info
    finally:
        proxy.terminate()
        portal.terminate()
        proxy.wait(timeout=10)
        portal.wait(timeout=40)
        log.close()
        notify.close()


def test_web_unit_serves_the_portal_behind_the_nginx_site(deployed):
    base, ca = deployed["base"], deployed["ca"]
    health = requests.get(f"{base}/healthz", verify=ca, timeout=10)
    # The portal itself answered through the proxy (no task cluster runs here, hence 503 is fine).
    assert health.status_code in (200, 503)
    assert health.json()["database"] == {"ok": True}

    static_file = requests.get(f"{base}/static/probe.txt", verify=ca, timeout=5)
    assert static_file.status_code == 200
    assert static_file.text == "static file served by nginx\n"

    plain = requests.get(f"{deployed['http']}/admin/", allow_redirects=False, timeout=5)
    assert plain.status_code == 301
    assert plain.headers["Location"].startswith("https://")


def test_tasks_unit_runs_a_cluster_that_healthz_sees(deployed):
    tasks = parse_unit((deployed["units"] / UNITS[1]).read_text())["Service"]
    env = {key: value for key, value in deployed["env"].items() if key != "NOTIFY_SOCKET"}
    log = deployed["tmp"] / "qcluster.log"
    with log.open("w") as out:
        cluster = subprocess.Popen(
            shlex.split(tasks["ExecStart"]), cwd=tasks["WorkingDirectory"], env=env, stdout=out, stderr=out
        )
    try:

        def healthy():
            assert cluster.poll() is None, log.read_text()[-3000:]
            answer = requests.get(f"{deployed['base']}/healthz", verify=deployed["ca"], timeout=10)
            return answer.status_code == 200 and answer.json()

        body = wait_for("/healthz saw the task cluster", healthy, timeout=60, logs=lambda: log.read_text()[-3000:])
        assert body["task_cluster"]["clusters"] == 1
    finally:
        # The unit stops the cluster with SIGTERM (KillSignal) and waits for running tasks.
        cluster.send_signal(signal.SIGTERM)
        assert cluster.wait(timeout=60) is not None


def test_web_unit_notifies_systemd_when_ready(deployed):
    """The unit is Type=notify: without READY=1 systemd would fail the start after its timeout."""
    assert parse_unit((DEPLOY / UNITS[0]).read_text())["Service"]["Type"] == "notify"
    deployed["notify"].settimeout(30)
    messages = b""
    while b"READY=1" not in messages:
        messages += deployed["notify"].recv(4096) + b"\n"
    assert b"READY=1" in messages


def test_prometheus_scrapes_metrics_with_the_documented_job(deployed):
    """A real Prometheus, configured with the scrape job shown in the operations guide, scrapes /metrics through
    nginx with the bearer token."""
    prometheus = need("prometheus")
    tmp_path = deployed["tmp"]
    guide = (ROOT / "docs" / "operations-guide.md").read_text()
    block = re.search(r"```yaml\n(  - job_name: vmautoscale-portal\n.*?)```", guide, re.S)
    assert block, "the operations guide no longer shows the vmautoscale-portal scrape job"
    job = yaml.safe_load(block.group(1))[0]
    token_file = tmp_path / "metrics.token"
    token_file.write_text(METRICS_TOKEN + "\n")
    job["authorization"]["credentials_file"] = str(token_file)
    job["tls_config"]["ca_file"] = deployed["ca"]
    job["static_configs"] = [{"targets": [deployed["base"].removeprefix("https://")]}]
    port = free_port()
    # Slow machines (several test suites at once): a generous timeout, and one warm-up request first.
    config = {"global": {"scrape_interval": "2s", "scrape_timeout": "2s"}, "scrape_configs": [job]}
    warm = requests.get(
        f"{deployed['base']}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        verify=deployed["ca"],
        timeout=30,
    )
    assert warm.status_code == 200
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    server = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"),
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(expr):
        body = requests.get(f"{api}/query", params={"query": expr}, timeout=5).json()
        return body["data"]["result"]

    try:
        wait_for("Prometheus ready", lambda: requests.get(f"{api}/status/buildinfo", timeout=2).ok, timeout=30)

        def scraped_up():
            targets = requests.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
            return [t for t in targets if t["health"] == "up"]

        wait_for(
            "Prometheus scraped the portal successfully",
            scraped_up,
            timeout=45,
            logs=lambda: requests.get(f"{api}/targets", timeout=5).text,
        )
        statuses = {series["metric"]["status"] for series in query("vmautoscale_scale_out_events")}
        assert statuses >= {"pending", "running", "succeeded", "failed"}
        assert query("vmautoscale_trigger_latency_seconds_count")[0]["value"][1] == "0"
    finally:
        server.terminate()
        server.wait(timeout=30)


NOT_SHIPPED = {"lab", "demo", "tests", "benchmarks"}


def imported_top_names(path):
    """Top-level names of every module a Python file imports (at module level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_install_script_ships_the_portal_without_the_lab_the_demo_tests_or_benchmarks(tmp_path, settings):
    app = staged_code(tmp_path)
    top = {path.name for path in app.iterdir()}
    assert top & (NOT_SHIPPED | {".git", ".venv", "var"}) == set()
    left = [str(p.relative_to(app)) for p in app.rglob("*") if {"tests", "__pycache__"} & set(p.parts)]
    assert left == [], "install.sh ships tests or caches"
    # Every app of the project ships, the demo aside (the test session installs it: the check below means something).
    apps = {name for name in settings.INSTALLED_APPS if "." not in name and (ROOT / name / "apps.py").is_file()}
    assert "demo" in apps
    assert apps - {"demo"} <= top, "an app of the portal is missing from SHIPPED in install.sh"
    assert {"manage.py", "requirements.txt", "jenkins", "locale"} <= top
    for path in app.rglob("*.py"):
        wrong = imported_top_names(path) & NOT_SHIPPED
        assert not wrong, f"{path.relative_to(app)} imports {sorted(wrong)}, which install.sh does not ship"

    # The shipped code starts as a host runs it; asking it for the demo fails, since the demo is not there.
    env = {
        "PATH": os.environ["PATH"],
        "LAB_ENV_FILE": "",
        "SECRET_KEY": "deploy-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        "WEBHOOK_TOKEN": "deploy-test-webhook-token",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    python = str(ROOT / ".venv" / "bin" / "python")
    check = subprocess.run(
        [python, "manage.py", "check"], cwd=app, env=env, capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stderr
    demo = subprocess.run(
        [python, "manage.py", "check"], cwd=app, env={**env, "DEMO_ENABLED": "true"}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert demo.returncode != 0
    assert "No module named 'demo'" in demo.stderr


def test_install_script_dry_run_changes_nothing(tmp_path):
    script = DEPLOY / "install.sh"
    lint = subprocess.run([need("shellcheck"), str(script)], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout

    watched = [Path(PREFIX), Path("/etc/vmautoscale"), Path("/etc/systemd/system/vmautoscale-web.service")]
    existed = {path: path.exists() for path in watched}
    result = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert {path: path.exists() for path in watched} == existed

    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    joined = "\n".join(commands)

    def position(fragment):
        index = joined.find(fragment)
        assert index >= 0, f"install.sh --dry-run does not run {fragment!r}:\n{joined}"
        return index

    steps = [
        "-m venv /opt/vmautoscale/venv",
        "pip install",
        "install -o root -g root -m 600 <template with generated secrets> /etc/vmautoscale/vmautoscale.env",
        "manage.py collectstatic",
        "manage.py migrate",
        "systemctl enable vmautoscale-web.service vmautoscale-tasks.service",
        "nginx -t",
    ]
    try:
        pwd.getpwnam("vmautoscale")
    except KeyError:
        steps.insert(0, "useradd --system")
    positions = [position(step) for step in steps]
    assert positions == sorted(positions), "install.sh runs its steps out of order"
    # Management commands run as the service user with the units' env file, never as root.
    for line in commands:
        if f"{PREFIX}/app/manage.py" in line:
            assert "--uid=vmautoscale" in line
            assert "--property=EnvironmentFile=/etc/vmautoscale/vmautoscale.env" in line

    # The code is copied from an explicit list, without the lab, the demo, the tests or the benchmarks.
    (copy,) = [line for line in commands if line.startswith("tar ")]
    assert "manage.py" in copy.split() and "vmautoscale" in copy.split()
    assert set(copy.split()) & NOT_SHIPPED == set()

    unknown = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 2
    assert "unknown option --bogus" in unknown.stderr


def test_admin_log_in_works_through_the_tls_proxy(deployed):
    """gunicorn trusts nginx's X-Forwarded-Proto (--forwarded-allow-ips), so Django sees HTTPS: the admin log-in
    form passes the CSRF origin check without CSRF_TRUSTED_ORIGINS, and refuses a wrong password normally."""
    session = requests.Session()
    login = f"{deployed['base']}/admin/login/"
    page = session.get(login, verify=deployed["ca"], timeout=10)
    assert page.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    answer = session.post(
        login,
        data={"csrfmiddlewaretoken": token, "username": "nobody", "password": "wrong", "next": "/admin/"},
        headers={"Origin": deployed["base"], "Referer": login},
        verify=deployed["ca"],
        timeout=10,
    )
    assert answer.status_code == 200, re.sub(r"\s+", " ", answer.text)[:3000]  # 403 would be a CSRF failure
    assert 'name="username"' in answer.text
    assert session.cookies["csrftoken"]
