"""Benchmarks of the events area (issue 5), on gunicorn + PostgreSQL, loopback only.

    .venv/bin/python benchmarks/bench_events.py            # full run, ~2-3 min
    .venv/bin/python benchmarks/bench_events.py --quick    # smaller numbers, for a smoke test
    .venv/bin/python benchmarks/bench_events.py --no-history      # 1 and 2 only
    .venv/bin/python benchmarks/bench_events.py --webhook-alone   # a diagnosis: 1 with no task cluster

1. Webhook burst: 1,000 notifications for 100 services plus 9,000 byte-identical repeats (shuffled), from 16
   concurrent keep-alive clients; every answer must be 2xx and exactly 100 events must exist once every
   notification is decided. Throughput, p50/p99, and the ratio to a bare endpoint (parse the JSON, insert one row,
   no auth/validation/decision) measured in the same run against the same gunicorn. The webhook's part runs with a
   task cluster (2 workers), whose decider decides behind the answers on the same machine; then the time until the
   last notification is decided, the rate answered and decided, and the CPU seconds of each group of processes.
2. Notification received -> Jenkins build requested (the lab's Jenkins stand-in records the time of the
   `buildWithParameters` call), with a django-q cluster (ORM broker) running: p50/p99.
3. With 100,000 events stored: a filtered page of the events API and the admin event list (p50/p99), and the query
   count of each at two page sizes.

It needs PostgreSQL at 127.0.0.1:5432 (trust auth) and recreates the database `vmas_bench_events`.
"""

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.core import Lab, free_port  # noqa: E402
from lab.payloads import firing_notification  # noqa: E402

DB_NAME = "vmas_bench_events"
# Persistent connections (as a deployment should configure them): a new PostgreSQL connection per request costs more
# than the whole webhook.
DB_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}?conn_max_age=300"
TOKEN = "bench-webhook-token"
ADMIN_PASSWORD = "bench-admin-password"

# A settings module and a URLconf for the benchmark's gunicorn: the portal's settings and URLs plus one bare
# endpoint (parse the JSON, insert one row) to compare the webhook with.
SITE_SETTINGS = """
from vmautoscale.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench_events_urls"
"""
SITE_URLS = """
import json

from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from events.models import AlertNotification


@csrf_exempt
def bare(request, service):
    payload = json.loads(request.body)
    row = AlertNotification.objects.create(
        service_name=service, status=payload["status"], group_key=payload["groupKey"], payload=payload
    )
    return JsonResponse({"id": row.pk})


urlpatterns = [path("bench/bare/<str:service>", bare), path("", include("vmautoscale.urls"))]
"""


def percentile(values, pct):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


# --- environment ---------------------------------------------------------------------------------------------
def recreate_database():
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


def portal_env(site_dir, extra=None):
    env = {
        **os.environ,
        "LAB_ENV_FILE": "",
        "DATABASE_URL": DB_URL,
        "WEBHOOK_TOKEN": TOKEN,
        "DJANGO_SETTINGS_MODULE": "bench_events_site",
        "PYTHONPATH": f"{site_dir}:{ROOT}",
        "LOG_LEVEL": "WARNING",
        "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "Q_BROKER": "orm",
    }
    env.update(extra or {})
    return env


def start_gunicorn(env, *, workers, threads):
    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", "gthread", "--threads", str(threads),
        "--keep-alive", "30", "--backlog", "256", "-b", f"127.0.0.1:{port}", "vmautoscale.wsgi:application",
    ]  # fmt: skip
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise SystemExit("gunicorn exited: " + process.stderr.read().decode()[-2000:])
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            break
        if time.monotonic() > deadline:
            raise SystemExit("gunicorn did not start")
        time.sleep(0.1)
    return process, port


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds():
    """CPU seconds used so far by the web server, the task cluster and the database's backends of this benchmark
    (Linux /proc; processes alive now), by group."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {"web": 0.0, "cluster": 0.0, "database": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if "gunicorn" in cmdline:
            group = "web"
        elif "qcluster" in cmdline or ("django_q" in cmdline) or "manage.py" in cmdline:
            group = "cluster"
        elif cmdline.startswith("postgres:") and DB_NAME in cmdline:
            group = "database"
        else:
            continue
        used[group] += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return used


# --- load generator: processes x threads, one keep-alive connection per client -------------------------------
def _client_thread(port, items, headers, out):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for path, body in items:
        start = time.perf_counter()
        for attempt in range(3):
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
                break
            except (ConnectionError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status = 599
                if attempt == 2:
                    break
        out.append((time.perf_counter() - start, status))
    conn.close()


def _client_process(args):
    port, chunks, headers = args
    results, threads = [], []
    for chunk in chunks:
        out = []
        results.append(out)
        thread = threading.Thread(target=_client_thread, args=(port, chunk, headers, out))
        threads.append(thread)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [item for out in results for item in out]


# A load generator in Go (built from this source with Debian's golang-go, offline, standard library only) leaves
# more of the two CPUs to the server than Python clients do; without `go` the Python clients above are used.
LOADGEN_GO = """
package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

type Item struct {
	Path string `json:"path"`
	Body string `json:"body"`
}

type Input struct {
	Base    string            `json:"base"`
	Headers map[string]string `json:"headers"`
	Clients int               `json:"clients"`
	Items   []Item            `json:"items"`
}

func main() {
	var in Input
	data, _ := io.ReadAll(os.Stdin)
	if err := json.Unmarshal(data, &in); err != nil {
		panic(err)
	}
	transport := &http.Transport{MaxIdleConnsPerHost: in.Clients, MaxConnsPerHost: in.Clients}
	client := &http.Client{Transport: transport, Timeout: 60 * time.Second}
	latencies := make([]float64, len(in.Items))
	statuses := make([]int, len(in.Items))
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < in.Clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := c; i < len(in.Items); i += in.Clients {
				began := time.Now()
				req, _ := http.NewRequest("POST", in.Base+in.Items[i].Path, bytes.NewBufferString(in.Items[i].Body))
				for k, v := range in.Headers {
					req.Header.Set(k, v)
				}
				resp, err := client.Do(req)
				if err != nil {
					statuses[i] = 599
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					statuses[i] = resp.StatusCode
				}
				latencies[i] = time.Since(began).Seconds()
			}
		}(c)
	}
	wg.Wait()
	wall := time.Since(start).Seconds()
	out, _ := json.Marshal(map[string]interface{}{"wall": wall, "latencies": latencies, "statuses": statuses})
	os.Stdout.Write(out)
}
"""
_loadgen = {}


def go_loadgen():
    """Path of the built Go load generator, or None when Go is not installed or the build fails."""
    if "path" not in _loadgen:
        _loadgen["path"] = None
        go = shutil.which("go")
        if go:
            build_dir = Path(tempfile.mkdtemp(prefix="bench-events-loadgen-"))
            (build_dir / "main.go").write_text(LOADGEN_GO)
            env = {**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOCACHE": str(build_dir / "cache"),
                   "GO111MODULE": "off"}  # fmt: skip
            result = subprocess.run(
                [go, "build", "-o", "loadgen", "main.go"], cwd=build_dir, env=env, capture_output=True, text=True
            )
            if result.returncode == 0:
                _loadgen["path"] = str(build_dir / "loadgen")
            else:
                print("go build of the load generator failed, using Python clients:", result.stderr[-500:])
    return _loadgen["path"]


def run_load(port, items, *, clients=16, processes=4, headers=None):
    """Send every (path, body) with `clients` concurrent keep-alive connections; (wall seconds, [(latency, status)])."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    loadgen = go_loadgen()
    if loadgen:
        spec = {
            "base": f"http://127.0.0.1:{port}",
            "headers": headers,
            "clients": clients,
            "items": [{"path": path, "body": body} for path, body in items],
        }
        result = subprocess.run([loadgen], input=json.dumps(spec), capture_output=True, text=True, check=True)
        data = json.loads(result.stdout)
        return data["wall"], list(zip(data["latencies"], data["statuses"], strict=True))
    per_client = [items[n::clients] for n in range(clients)]
    per_process = [per_client[n::processes] for n in range(processes)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        start = time.perf_counter()
        parts = pool.map(_client_process, [(port, chunks, headers) for chunks in per_process])
        wall = time.perf_counter() - start
    return wall, [item for part in parts for item in part]


# --- phases ------------------------------------------------------------------------------------------------------
def setup_django(site_dir):
    os.environ.update(portal_env(site_dir))
    sys.path.insert(0, str(site_dir))
    import django

    django.setup()


def make_configs(names, **fields):
    from autoscaling.models import AutoscalingConfig
    from templates_app.models import VMTemplate

    template, _created = VMTemplate.objects.get_or_create(name="bench-template", defaults={"status": "ready"})
    values = {"enabled": True, "max_instances": 10, "cooldown_seconds": 3600, "monitored_instances": ["127.0.0.1:9100"]}
    values.update(fields)
    AutoscalingConfig.objects.bulk_create(
        AutoscalingConfig(service_name=name, template=template, **values) for name in names
    )


def start_cluster(env):
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env={**env, "Q_WORKERS": "2"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def burst(port, env, *, services, distinct_per_service, repeats, alone=False):
    """The webhook's rate is measured with the task cluster running, so the decider's work (behind the answers)
    shares the machine; the burst ends when every notification is decided."""
    from events.models import AlertNotification, ScaleOutEvent

    names = [f"svc-{n:03d}" for n in range(services)]
    make_configs(names)
    distinct = [
        (name, json.dumps(firing_notification(name, fingerprint=f"{s:04x}{k:012x}")))
        for s, name in enumerate(names)
        for k in range(distinct_per_service)
    ]
    items = [(name, body) for name, body in distinct for _copy in range(1 + repeats)]
    random.Random(5).shuffle(items)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    from django.db import connection

    connection.close()  # the load generator forks

    # The bare endpoint first (same bodies, same gunicorn), then the webhook.
    before = cpu_seconds()
    bare_wall, bare = run_load(port, [(f"/bench/bare/{name}", body) for name, body in items], headers=auth)
    bare_cpu = {group: used - before[group] for group, used in cpu_seconds().items()}
    # The webhook starts from an empty table too (a DELETE would leave it 10,000 dead rows and their vacuum).
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE events_alertnotification CASCADE")
    connection.close()
    cluster = None if alone else start_cluster(env)
    try:
        time.sleep(4)  # cluster start-up
        before = cpu_seconds()
        wall, results = run_load(port, [(f"/api/webhook/autoscale/{name}", body) for name, body in items], headers=auth)
        ended = time.monotonic()
        while not alone and AlertNotification.objects.filter(decided_at__isnull=True).exists():
            if time.monotonic() - ended > 600:
                break
            time.sleep(0.05)
        drain = time.monotonic() - ended
        waiting = AlertNotification.objects.filter(decided_at__isnull=True).count()
        cpu = {group: used - before[group] for group, used in cpu_seconds().items()}
    finally:
        if cluster is not None:
            stop(cluster)

    statuses = {}
    for _latency, status in results:
        statuses[status] = statuses.get(status, 0) + 1
    events = ScaleOutEvent.objects.count()
    latencies = [latency for latency, _status in results]
    bare_latencies = [latency for latency, _status in bare]
    rate, bare_rate = len(items) / wall, len(items) / bare_wall
    return {
        "requests": len(items),
        "statuses": statuses,
        "all_2xx": all(200 <= status < 300 for status in statuses),
        "events": events,
        "expected_events": services,
        "rate": rate,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "bare_rate": bare_rate,
        "bare_p50": percentile(bare_latencies, 50),
        "bare_p99": percentile(bare_latencies, 99),
        "ratio": rate / bare_rate,
        "drain": drain,
        "waiting": waiting,
        "decided_rate": len(items) / (wall + drain),
        "cpu": cpu,
        "bare_cpu": bare_cpu,
    }


def trigger_latency(port, site_dir, *, samples, gap):
    """Notification sent -> the Jenkins stand-in receives buildWithParameters, with a qcluster running."""
    from integrations.jenkins import JenkinsClient
    from lab.components.jenkins import JenkinsStandinControl

    lab = Lab(Path(tempfile.mkdtemp(prefix="bench-events-lab-")))
    try:
        info = lab.ensure("jenkins")
        control = JenkinsStandinControl(info["control_url"])
        control.set_build_behaviour(duration=0.05, queue_delay=0.0)
        client = JenkinsClient(info["url"], info["user"], info["token"])
        names = [f"lat-{n:03d}" for n in range(samples)]
        make_configs(names)
        xml = (
            "<?xml version='1.1' encoding='UTF-8'?><flow-definition><properties>"
            "<hudson.model.ParametersDefinitionProperty><parameterDefinitions>"
            "<hudson.model.StringParameterDefinition><name>EVENT_ID</name></hudson.model.StringParameterDefinition>"
            "</parameterDefinitions></hudson.model.ParametersDefinitionProperty></properties></flow-definition>"
        )
        for name in names:
            client.create_or_update_job(f"vmautoscale-{name}", xml)
        control.reset()
        env = portal_env(
            site_dir,
            {"JENKINS_URL": info["url"], "JENKINS_USER": info["user"], "JENKINS_TOKEN": info["token"]},
        )
        log = open(site_dir / "trigger-cluster.log", "wb")
        cluster = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env={**env, "LOG_LEVEL": "INFO"}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            time.sleep(3)  # cluster start-up
            sent = {}
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            for name in names:
                body = json.dumps(firing_notification(name, fingerprint="feedfacecafe0001"))
                sent[name] = time.time()
                conn.request("POST", f"/api/webhook/autoscale/{name}", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                assert response.status == 202, response.status
                time.sleep(gap)
            deadline = time.monotonic() + 30
            while True:
                # Only these services' builds (the burst's events, triggered by its own cluster against no Jenkins,
                # may still be retried here).
                calls = [
                    call
                    for call in control.calls(path_contains="/buildWithParameters", method="POST")
                    if call["path"].split("/job/", 1)[1].split("/", 1)[0].removeprefix("vmautoscale-") in sent
                ]
                if len(calls) >= len(names) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        finally:
            os.killpg(cluster.pid, signal.SIGTERM)
            try:
                cluster.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(cluster.pid, signal.SIGKILL)
                cluster.wait()
        latencies = []
        for call in calls:
            job = call["path"].split("/job/", 1)[1].split("/", 1)[0]
            name = job.removeprefix("vmautoscale-")
            if name in sent:
                latencies.append(call["time"] - sent.pop(name))
        log.close()
        if sent:
            from events.models import AlertNotification

            print(f"  missing: {sorted(sent)}; cluster log {site_dir / 'trigger-cluster.log'}")
            for row in AlertNotification.objects.filter(service_name__in=sent).values(
                "pk", "service_name", "received_at", "decided_at"
            ):
                print(f"    {row}")
        return {
            "samples": len(latencies),
            "missing": len(sent),
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "max": max(latencies) if latencies else float("nan"),
        }
    finally:
        lab.stop()


def many_events(port, *, total):
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone
    from knox.models import AuthToken

    from autoscaling.models import AutoscalingConfig
    from events.admin import ScaleOutEventAdmin
    from events.models import ScaleOutEvent

    configs = list(AutoscalingConfig.objects.filter(service_name__startswith="svc-"))
    statuses = ["succeeded"] * 7 + ["failed", "rolled_back", "cancelled"]
    now = timezone.now()
    rng = random.Random(7)
    start = time.perf_counter()
    batch = []
    for n in range(total):
        config = configs[n % len(configs)]
        status = statuses[rng.randrange(len(statuses))]
        created = now - timedelta(seconds=rng.randrange(90 * 86400))
        batch.append(
            ScaleOutEvent(
                config=config, service_name=config.service_name, status=status, vm_count=1,
                alert_name=f"ServiceCpuHigh_{config.service_name}", jenkins_job=f"vmautoscale-{config.service_name}",
                build_number=n + 1, vm_names=[f"{config.service_name}-{n:06d}"],
                vm_ips=[f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"], finished_at=created,
                build_log="Started\n" * 200,
            )
        )  # fmt: skip
        if len(batch) == 5000:
            ScaleOutEvent.objects.bulk_create(batch)
            batch = []
    if batch:
        ScaleOutEvent.objects.bulk_create(batch)
    # created_at is auto_now_add: spread it afterwards (one UPDATE), then vacuum.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE events_scaleoutevent SET created_at = finished_at - interval '5 minutes' "
            "WHERE finished_at IS NOT NULL"
        )
        # As autovacuum would soon after: the visibility map lets COUNT(*) read an index only.
        cursor.execute("VACUUM ANALYZE events_scaleoutevent")
    insert_seconds = time.perf_counter() - start

    User = get_user_model()
    admin = User.objects.create_superuser("bench-admin", "bench@127.0.0.1", ADMIN_PASSWORD)
    _, token = AuthToken.objects.create(user=admin)
    since = (now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    api_path = f"/api/autoscaling/events?service=svc-007&status=succeeded&created_after={since}"

    def timed_get(path, headers, count=40):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        times = []
        for _n in range(count):
            start = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, (path, response.status)
            times.append(time.perf_counter() - start)
        conn.close()
        return times

    api_times = timed_get(api_path, {"Authorization": f"Token {token}"})
    api_page2 = timed_get(api_path + "&page=2", {"Authorization": f"Token {token}"})

    session = admin_session(port)
    admin_filtered = "/admin/events/scaleoutevent/?service=svc-007&status__exact=succeeded"
    admin_plain = "/admin/events/scaleoutevent/"
    admin_search = "/admin/events/scaleoutevent/?q=127.0.4.2"
    admin_times = timed_get(admin_plain, {"Cookie": session})
    admin_filtered_times = timed_get(admin_filtered, {"Cookie": session})
    admin_search_times = timed_get(admin_search, {"Cookie": session}, count=10)

    # Query counts, in process, at two page sizes.
    client = Client()
    client.force_login(admin)

    def queries(path):
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        return len(captured.captured_queries)

    api_queries = {size: queries(f"/api/autoscaling/events?page_size={size}&status=succeeded") for size in (10, 100)}
    from django.contrib import admin as django_admin

    model_admin = django_admin.site._registry[ScaleOutEvent]
    assert isinstance(model_admin, ScaleOutEventAdmin)
    admin_queries = {}
    for size in (10, 100):
        model_admin.list_per_page = size
        admin_queries[size] = queries(admin_plain)
    model_admin.list_per_page = 50
    return {
        "total": ScaleOutEvent.objects.count(),
        "insert_seconds": insert_seconds,
        "api_p50": percentile(api_times, 50),
        "api_p99": percentile(api_times, 99),
        "api_page2_p50": percentile(api_page2, 50),
        "admin_p50": percentile(admin_times, 50),
        "admin_p99": percentile(admin_times, 99),
        "admin_filtered_p50": percentile(admin_filtered_times, 50),
        "admin_search_p50": percentile(admin_search_times, 50),
        "api_queries": api_queries,
        "admin_queries": admin_queries,
        "api_path": api_path,
    }


def admin_session(port):
    """Log in to the admin through gunicorn; returns the Cookie header value."""
    import re

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/admin/login/")
    response = conn.getresponse()
    page = response.read().decode()
    cookies = {}
    for header, value in response.getheaders():
        if header.lower() == "set-cookie":
            name, _eq, rest = value.partition("=")
            cookies[name] = rest.split(";", 1)[0]
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    body = f"csrfmiddlewaretoken={csrf}&username=bench-admin&password={ADMIN_PASSWORD}&next=/admin/"
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": cookie,
        "Referer": f"http://127.0.0.1:{port}/admin/login/",
    }
    conn.request("POST", "/admin/login/", body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    assert response.status == 302, response.status
    for header, value in response.getheaders():
        if header.lower() == "set-cookie":
            name, _eq, rest = value.partition("=")
            cookies[name] = rest.split(";", 1)[0]
    conn.close()
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller numbers (smoke test)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--no-history", action="store_true", help="skip the 100,000-event history")
    parser.add_argument(
        "--webhook-alone",
        action="store_true",
        help="a diagnosis: the burst with no task cluster running (nothing decided), then stop",
    )
    args = parser.parse_args()
    services, distinct, repeats = (100, 10, 9) if not args.quick else (20, 5, 4)
    samples = 40 if not args.quick else 10
    total_events = 100_000 if not args.quick else 10_000

    site_dir = Path(tempfile.mkdtemp(prefix="bench-events-site-"))
    (site_dir / "bench_events_site.py").write_text(SITE_SETTINGS)
    (site_dir / "bench_events_urls.py").write_text(SITE_URLS)
    recreate_database()
    env = portal_env(site_dir)
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if migrate.returncode != 0:
        raise SystemExit(migrate.stderr[-3000:])
    # The cache table (the decider's lock; make run and the deploy create it too).
    subprocess.run([sys.executable, "manage.py", "createcachetable"], cwd=ROOT, env=env, check=True)
    setup_django(site_dir)
    from django.db import connection

    with connection.cursor() as cursor:
        # No django-q schedule runs during the benchmark; an idle sweep would only add noise.
        cursor.execute("DELETE FROM django_q_schedule")

    gunicorn, port = start_gunicorn(env, workers=args.workers, threads=args.threads)
    print(
        f"gunicorn -w {args.workers} -k gthread --threads {args.threads}, PostgreSQL {DB_NAME}, 16 clients "
        f"({'Go' if go_loadgen() else 'Python'} load generator); "
        f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    try:
        result = burst(
            port, env, services=services, distinct_per_service=distinct, repeats=repeats, alone=args.webhook_alone
        )
        print(
            f"burst: {result['requests']} notifications ({services} services x {distinct} alerts, {repeats} repeats "
            f"each, shuffled): statuses {result['statuses']}, events {result['events']} "
            f"(expected {result['expected_events']})"
        )
        print(
            f"  webhook {result['rate']:.0f}/s, p50 {ms(result['p50'])}, p99 {ms(result['p99'])}; "
            f"bare insert {result['bare_rate']:.0f}/s, p50 {ms(result['bare_p50'])}, p99 {ms(result['bare_p99'])}; "
            f"ratio {result['ratio']:.2f}"
        )
        if not args.webhook_alone:
            print(
                f"  decided behind the answers (task cluster, 2 workers, running during the burst): the last one "
                f"{result['drain']:.1f} s after the last answer, {result['waiting']} left waiting; answered and "
                f"decided {result['decided_rate']:.0f}/s (ratio {result['decided_rate'] / result['bare_rate']:.2f})"
            )
        print(
            "  CPU seconds (live processes): webhook and decider "
            + ", ".join(f"{group} {used:.1f}" for group, used in result["cpu"].items())
            + "; bare insert "
            + ", ".join(f"{group} {used:.1f}" for group, used in result["bare_cpu"].items())
        )
        ok = result["all_2xx"] and result["events"] == result["expected_events"] and not result["waiting"]

        if args.webhook_alone:
            print(f"  the webhook alone (no task cluster): {result['waiting']} notifications left waiting")
            ok = result["all_2xx"] and result["waiting"] == result["requests"]
        else:
            latency = trigger_latency(port, site_dir, samples=samples, gap=0.3)
            print(
                f"notification -> Jenkins buildWithParameters ({latency['samples']} samples, ORM broker, qcluster "
                f"2 workers): p50 {ms(latency['p50'])}, p99 {ms(latency['p99'])}, max {ms(latency['max'])}, "
                f"missing {latency['missing']}"
            )
            ok = ok and latency["missing"] == 0
        if not args.webhook_alone and not args.no_history:
            many = many_events(port, total=total_events)
            print(f"{many['total']} events stored (bulk insert {many['insert_seconds']:.1f} s)")
            print(
                f"  events API {many['api_path']}: p50 {ms(many['api_p50'])}, p99 {ms(many['api_p99'])}; "
                f"page 2 p50 {ms(many['api_page2_p50'])}; queries by page size {many['api_queries']}"
            )
            print(
                f"  admin event list: p50 {ms(many['admin_p50'])}, p99 {ms(many['admin_p99'])}; filtered p50 "
                f"{ms(many['admin_filtered_p50'])}; search by IP p50 {ms(many['admin_search_p50'])}; "
                f"queries by page size {many['admin_queries']}"
            )
            ok = ok and len(set(many["api_queries"].values())) == 1 and len(set(many["admin_queries"].values())) == 1
    finally:
        stop(gunicorn)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("OK" if ok else "FAILED: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
