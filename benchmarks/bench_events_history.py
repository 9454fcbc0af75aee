"""Benchmark of the event history at 1,000,000 events (issue 19): the events API, the admin list and the searches.

    .venv/bin/python benchmarks/bench_events_history.py                    # PostgreSQL, scratch db vmas_bench_evhist
    .venv/bin/python benchmarks/bench_events_history.py --database sqlite  # SQLite in a temp dir
    .venv/bin/python benchmarks/bench_events_history.py --events 100000    # a smaller history

Fills the history with SQL (INSERT ... SELECT over a generated series, bench_history.py's generator): N events of
200 services spread over the last year, each with 3 pipeline steps, its notification and its decision, one VM name
and one IP (mostly succeeded, 10 % failed, 4 % rolled back; a third scale-ins, a seventh manual). Then, in the same
run and process, each measured 30 times after 3 warm-ups, alternating with its baseline (p50 and p95; the old
search, a scan, 5 times after one):
1. a filtered page of the events API (one service and status; then a status alone, 100,000 matching) against the
   same request with the old paginator (an exact COUNT), against the rows as read before (every column, then DRF's
   path over the declared fields) and against a bare primary-key page of the same size;
2. the admin event list (unfiltered and filtered by status) against the old paginator and against the rows as
   they were built before (Django's result_list tag, the service filter's links one by one in admin/filter.html's
   loop, user and config joined);
3. the search by IP and by VM name (the API's ?vm= and the admin's search box) against the old search (the JSON
   lists cast to text, LIKE '%term%' over every row);
4. the queries of an API page of 10 and of 100 events, and of an admin page of 10 and of 100;
5. on PostgreSQL, the query plan of the searches (the GIN index event_vms_gin).
Loopback only; the scratch database is dropped afterwards, unless --keep: then --reuse measures on it again
without filling (if it holds --events events), so a change is re-measured in minutes instead of the 9 of the fill:

    .venv/bin/python benchmarks/bench_events_history.py --keep     # fill once, keep vmas_bench_evhist
    .venv/bin/python benchmarks/bench_events_history.py --reuse    # measure again on it (and keep it)
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_history import insert_select, postgres, series_and_clock, steps_and_decisions  # noqa: E402

PG_NAME = "vmas_bench_evhist"
SERVICES = 200
RUNS, WARMUPS = 30, 3


def fill(n, configs):
    from django.db import connection, transaction

    from events.models import AlertNotification, EventAction, ScaleOutEvent, ScalingDecision

    pg = connection.vendor == "postgresql"
    series, at = series_and_clock(n, pg)
    if pg:

        def text(expr):
            return f"({expr})::text"

        def pad(expr, width):
            return f"lpad(({expr})::text, {width}, '0')"

        def array(expr):
            return f"jsonb_build_array({expr})"
    else:

        def text(expr):
            return f"CAST({expr} AS TEXT)"

        def pad(expr, width):
            return f"substr('{'0' * width}' || ({expr}), -{width}, {width})"

        def array(expr):
            return f"json_array({expr})"

    first = min(config.pk for config in configs)
    service = f"'svc-' || {pad(f's.i % {SERVICES}', 3)}"
    spacing = 366 * 86400 // (n + 1)
    base = f"s.i * {spacing}"
    vm_name = f"{service} || '-' || {pad('s.i', 7)}"
    vm_ip = (
        f"'10.' || {text('(s.i / 65536) % 256')} || '.' || {text('(s.i / 256) % 256')} || '.' || {text('s.i % 256')}"
    )
    status = "CASE WHEN s.i % 10 = 0 THEN 'failed' WHEN s.i % 25 = 1 THEN 'rolled_back' ELSE 'succeeded' END"
    with transaction.atomic():
        if pg:
            # The rows agree by construction: skip the deferred foreign-key checks (minutes at COMMIT for 6M rows).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL session_replication_role = replica")
        insert_select(
            AlertNotification,
            {
                "id": "s.i",
                "service_name": service,
                "config_id": f"{first} + s.i % {SERVICES}",
                "status": "'firing'",
                "group_key": "'g'",
                "payload": "'{}'",
                "received_at": at(base),
            },
            series,
        )
        insert_select(
            ScaleOutEvent,
            {
                "id": "s.i",
                "config_id": f"{first} + s.i % {SERVICES}",
                "service_name": service,
                "action": "CASE WHEN s.i % 3 = 0 THEN 'scale_in' ELSE 'scale_out' END",
                "status": status,
                "source": "CASE WHEN s.i % 7 = 0 THEN 'manual' ELSE 'alert' END",
                "alert_name": "'AutoscaleHighCpu'",
                "notification_id": "s.i",
                "jenkins_job": f"'vmautoscale-' || {service}",
                "build_number": "s.i",
                "trigger_attempts": "1",
                "vm_names": array(vm_name),
                "vm_ips": array(vm_ip),
                "created_at": at(base),
                "triggered_at": at(f"{base} + 1 + s.i % 7"),
                "started_at": at(f"{base} + 10"),
                "finished_at": at(f"{base} + 200 + s.i % 300"),
                "updated_at": at(f"{base} + 200 + s.i % 300"),
            },
            series,
        )
        steps_and_decisions(series, at, base, service=service, config_id=f"{first} + s.i % {SERVICES}")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        if pg:
            for model in (AlertNotification, ScaleOutEvent, EventAction, ScalingDecision):
                table = model._meta.db_table
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            connection.set_autocommit(True)
            cursor.execute("VACUUM ANALYZE")
        else:
            cursor.execute("ANALYZE")
    print(f"  vacuum/analyze: {time.perf_counter() - started:.1f} s", flush=True)


def postgres_has_history(n):
    """Whether the scratch database exists, migrated, with the bench user and exactly n events (a run with --keep)."""
    import psycopg

    try:
        with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={PG_NAME}") as conn:
            events = conn.execute("SELECT count(*) FROM events_scaleoutevent").fetchone()[0]
            users = conn.execute("SELECT count(*) FROM auth_user WHERE username = 'bench'").fetchone()[0]
    except psycopg.Error:
        return False
    return events == n and users == 1


def timed(call, runs=RUNS, warmups=WARMUPS, *, baseline=None):
    """(p50, p95, CPU p50) in ms: wall-clock time, and this process's CPU time (what a loaded machine's run queue
    adds to the wall clock is not in it; the database server's work is). With `baseline`, the two calls alternate
    (the machine's load drifts alike for both) and the answer is both figures."""
    calls = [call] if baseline is None else [call, baseline]
    for _ in range(warmups):
        for each in calls:
            each()
    times, cpu = [[] for _ in calls], [[] for _ in calls]
    for _ in range(runs):
        for k, each in enumerate(calls):
            started, started_cpu = time.perf_counter(), time.process_time()
            each()
            times[k].append((time.perf_counter() - started) * 1000)
            cpu[k].append((time.process_time() - started_cpu) * 1000)
    figures = []
    for wall, used in zip(times, cpu, strict=True):
        wall.sort()
        figures.append((statistics.median(wall), wall[max(0, round(len(wall) * 0.95) - 1)], statistics.median(used)))
    return figures[0] if baseline is None else figures


def pair(call, baseline):
    return timed(call, baseline=baseline)


def line(what, figures, baseline=None, base_what=""):
    p50, p95, cpu = figures
    text = f"{what:44} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  (CPU {cpu:5.1f} ms)"
    if baseline:
        text += f"  | {base_what}: p50 {baseline[0]:7.1f} ms, p95 {baseline[1]:7.1f} ms ({baseline[0] / p50:.1f} x)"
    print(text, flush=True)
    return p50


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (PostgreSQL)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure on the scratch database a run with --keep left, if it holds --events events (PostgreSQL; "
        "implies --keep)",
    )
    args = parser.parse_args()
    args.keep = args.keep or args.reuse
    run_dir = Path(tempfile.mkdtemp(prefix="bench-evhist-"))
    reused = False
    if args.database == "postgres":
        if args.reuse:
            reused = postgres_has_history(args.events)
        if not reused:
            postgres(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
            postgres(f"CREATE DATABASE {PG_NAME}")
        database_url = f"postgres://postgres@127.0.0.1:5432/{PG_NAME}"
    else:
        database_url = f"sqlite:///{run_dir / 'db.sqlite3'}"
    os.environ.update(DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE="vmautoscale.settings", LOG_LEVEL="WARNING")
    ok = True
    try:
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.core.paginator import Paginator
        from django.db import connection
        from django.db.models import Q, TextField
        from django.db.models.functions import Cast
        from django.test import Client
        from django.test.utils import CaptureQueriesContext, setup_test_environment
        from rest_framework.pagination import PageNumberPagination

        setup_test_environment()
        call_command("migrate", verbosity=0)
        from autoscaling.models import AutoscalingConfig
        from events.admin import ScaleOutEventAdmin
        from events.api import views
        from events.api.serializers import ScaleOutEventSerializer
        from events.models import ScaleOutEvent
        from events.selectors import EventHasVm
        from templates_app.models import VMTemplate

        if reused:
            user = get_user_model().objects.get(username="bench")
            filled = "reused (filled by an earlier run with --keep)"
        else:
            template = VMTemplate.objects.create(name="bench-template")
            configs = AutoscalingConfig.objects.bulk_create(
                AutoscalingConfig(service_name=f"svc-{n:03d}", template=template) for n in range(SERVICES)
            )
            user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password-1")
            started = time.perf_counter()
            fill(args.events, configs)
            filled = f"filled in {time.perf_counter() - started:.1f} s"
        print(
            f"database {args.database}; {args.events:,} events of {SERVICES} services with 3 steps, a notification "
            f"and a decision each, {filled}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
            flush=True,
        )
        client = Client()
        client.force_login(user)

        def get(url):
            def call():
                response = client.get(url)
                assert response.status_code == 200, (url, response.status_code, response.content[:300])
                return response

            return call

        class OldPagination(PageNumberPagination):
            page_size_query_param = "page_size"
            max_page_size = 200

        def old_api(url):
            def call():
                views.ScaleOutEventListView.pagination_class = OldPagination
                try:
                    return get(url)()
                finally:
                    views.ScaleOutEventListView.pagination_class = new_pagination

            return call

        new_pagination = views.ScaleOutEventListView.pagination_class
        new_paginator = ScaleOutEventAdmin.paginator

        def old_admin(url):
            def call():
                ScaleOutEventAdmin.paginator = Paginator
                try:
                    return get(url)()
                finally:
                    ScaleOutEventAdmin.paginator = new_paginator

            return call

        # The rows before the CPU work of issue 19, put back for the length of one request. The API: every column
        # and the whole user read, then DRF's path over the declared fields for each event. The admin list: Django's
        # result_list tag, the service filter's links built one by one and its template's loop, the user and
        # config joined.
        from django.contrib import admin as django_admin
        from rest_framework import serializers as drf

        from events.admin import ServiceListFilter

        fast_rows, fast_choices = ScaleOutEventSerializer.to_representation, ServiceListFilter.choices
        fast_filter = ServiceListFilter.template
        lean_queryset = ScaleOutEventAdmin.get_queryset

        def full_queryset(model_admin, request):
            queryset = django_admin.ModelAdmin.get_queryset(model_admin, request)
            return queryset.select_related("requested_by", "config").defer("build_log", "alert_labels")

        lean_rows = views._event_queryset

        def every_column():
            return ScaleOutEvent.objects.select_related("requested_by").defer("build_log", "alert_labels")

        def drf_rows(url):
            def call():
                ScaleOutEventSerializer.to_representation = drf.ModelSerializer.to_representation
                views._event_queryset = every_column
                try:
                    return get(url)()
                finally:
                    ScaleOutEventSerializer.to_representation = fast_rows
                    views._event_queryset = lean_rows

            return call

        def django_rows(url):
            def call():
                ScaleOutEventAdmin.change_list_template = "admin/change_list.html"
                ServiceListFilter.choices = django_admin.SimpleListFilter.choices
                ServiceListFilter.template = "admin/filter.html"
                ScaleOutEventAdmin.get_queryset = full_queryset
                try:
                    return get(url)()
                finally:
                    ScaleOutEventAdmin.change_list_template = None
                    ServiceListFilter.choices = fast_choices
                    ServiceListFilter.template = fast_filter
                    ScaleOutEventAdmin.get_queryset = lean_queryset

            return call

        def bare_page(size):
            def call():
                rows = list(ScaleOutEvent.objects.defer("build_log", "alert_labels").order_by("-id")[:size])
                return ScaleOutEventSerializer(rows, many=True).data

            return call

        def old_search(term):
            # The admin's search before (events/admin.py): the JSON lists cast to text, a substring over every row.
            def call():
                rows = ScaleOutEvent.objects.annotate(
                    vm_names_text=Cast("vm_names", TextField()), vm_ips_text=Cast("vm_ips", TextField())
                ).filter(
                    Q(service_name__icontains=term) | Q(vm_names_text__icontains=term) | Q(vm_ips_text__icontains=term)
                )
                return list(rows.defer("build_log", "alert_labels")[:50])

            return call

        api = "/api/autoscaling/events"
        admin = "/admin/events/scaleoutevent/"
        n = args.events
        ip = f"10.{(n // 2 // 65536) % 256}.{(n // 2 // 256) % 256}.{n // 2 % 256}"
        name = f"svc-{(n // 3) % SERVICES:03d}-{n // 3:07d}"
        results = {}

        print("\n0. The floor: a request that finds nothing (session, user, one index probe; no rows)", flush=True)
        results["api_floor"] = line("API ?vm=nowhere", timed(get(f"{api}?vm=nowhere")))
        results["admin_floor"] = line("admin ?q=nowhere", timed(get(f"{admin}?q=nowhere")))

        print("\n1. The events API, pages of 50", flush=True)
        url = f"{api}?service=svc-007&status=succeeded&page_size=50"
        results["api_filtered"] = line(
            "?service=svc-007&status=succeeded", *pair(get(url), old_api(url)), "old paginator"
        )
        line("   the same, against the rows before", *pair(get(url), drf_rows(url)), "every column, DRF's rows")
        line("   (a bare primary-key page of 50, serialized)", timed(bare_page(50)))
        url = f"{api}?status=failed&page_size=50"
        results["api_status"] = line(f"?status=failed ({n // 10:,} matching)", *pair(get(url), old_api(url)), "old")
        url = f"{api}?page_size=50"
        results["api_all"] = line("no filter", *pair(get(url), old_api(url)), "old paginator")
        deep = max(1, n // SERVICES // 50 // 5)
        url = f"{api}?service=svc-007&created_after=2000-01-01T00:00:00Z&ordering=-created_at&page={deep}&page_size=50"
        line(f"?service=svc-007&created_after=...&page={deep}", *pair(get(url), old_api(url)), "old paginator")

        print("\n2. The admin event list (50 a page)", flush=True)
        results["admin_all"] = line("unfiltered", *pair(get(admin), old_admin(admin)), "old paginator")
        line("   the same, against the rows before", *pair(get(admin), django_rows(admin)), "Django's rows")
        url = f"{admin}?status__exact=failed"
        results["admin_status"] = line("?status__exact=failed", *pair(get(url), old_admin(url)), "old")
        line("   the same, against the rows before", *pair(get(url), django_rows(url)), "Django's rows")
        url = f"{admin}?service=svc-042&source__exact=manual"
        line("?service=svc-042&source__exact=manual", *pair(get(url), old_admin(url)), "old paginator")

        print("\n3. Search by IP and by VM name", flush=True)
        old_ip, old_name = timed(old_search(ip), 5, 1), timed(old_search(name), 5, 1)
        results["api_ip"] = line(f"API ?vm={ip}", timed(get(f"{api}?vm={ip}")), old_ip, "old search query")
        results["api_name"] = line(f"API ?vm={name}", timed(get(f"{api}?vm={name}")), old_name, "old search")
        results["admin_ip"] = line(f"admin ?q={ip}", timed(get(f"{admin}?q={ip}")), old_ip, "old")
        results["admin_name"] = line(f"admin ?q={name}", timed(get(f"{admin}?q={name}")), old_name, "old search")
        for term in (ip, name):
            found = client.get(f"{api}?vm={term}").json()
            hit = found["count"] == 1 and term in found["results"][0]["vm_ips"] + found["results"][0]["vm_names"]
            print(f"   ?vm={term} finds its one event: {hit}")
            ok = ok and hit

        print("\n   The answers are the same as before:", flush=True)
        token = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]*"')
        for what, url, before in (
            ("API page", f"{api}?service=svc-007&status=succeeded&page_size=50", drf_rows),
            ("admin list", admin, django_rows),
            ("admin list ?status__exact=failed", f"{admin}?status__exact=failed", django_rows),
            ("admin list ?service=svc-042&o=-2.1", f"{admin}?service=svc-042&o=-2.1", django_rows),
        ):
            same = token.sub(b"", get(url)().content) == token.sub(b"", before(url)().content)
            print(f"   {what}: {same}")
            ok = ok and same

        print("\n4. Queries per page", flush=True)
        counts = {}
        for size in (10, 100):
            with CaptureQueriesContext(connection) as queries:
                get(f"{api}?status=failed&page_size={size}")()
            counts[f"api {size}"] = len(queries)
            ScaleOutEventAdmin.list_per_page = size
            with CaptureQueriesContext(connection) as queries:
                get(f"{admin}?status__exact=failed")()
            counts[f"admin {size}"] = len(queries)
        ScaleOutEventAdmin.list_per_page = 50
        print("   " + ", ".join(f"{what}: {count}" for what, count in counts.items()))
        flat = counts["api 10"] == counts["api 100"] and counts["admin 10"] == counts["admin 100"]
        print(f"   the same for 10 and 100 rows: {flat}")
        ok = ok and flat

        if connection.vendor == "postgresql":
            print("\n5. Query plans", flush=True)
            for term in (ip, name):
                sql, params = (
                    ScaleOutEvent.objects.filter(EventHasVm(term)).order_by("-created_at")[:50].query.sql_with_params()
                )
                with connection.cursor() as cursor:
                    cursor.execute("EXPLAIN " + sql, params)
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                uses = "event_vms_gin" in plan
                print(f"   search {term}: uses event_vms_gin: {uses}")
                ok = ok and uses

        print()
        goals = [
            ("filtered API page p50 < 20 ms", results["api_filtered"] < 20),
            ("admin event list p50 < 150 ms", max(results["admin_all"], results["admin_status"]) < 150),
        ]
        for what, met in goals:
            print(f"goal {what}: {'met' if met else 'NOT met'}")
            ok = ok and met
        print(
            f"above the floor of the same run: filtered API page +{results['api_filtered'] - results['api_floor']:.1f} "
            f"ms, admin list +{results['admin_all'] - results['admin_floor']:.1f} ms (load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )
    finally:
        if args.database == "postgres" and not args.keep:
            from django.db import connections

            connections.close_all()
            postgres(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
    print("OK" if ok else "FAILED: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
