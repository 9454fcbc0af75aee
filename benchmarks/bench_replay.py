"""Benchmark of the replay (issue 18): 30 days of 1-minute data for one service, replayed in under 10 s, the
Prometheus fetch timed apart.

    .venv/bin/python benchmarks/bench_replay.py

Backfills 30 days of 1-minute samples of one service's two VMs (a daily curve with busy hours above the threshold)
into a Prometheus of its own (`promtool tsdb create-blocks-from openmetrics`, tests/replay_support.py), then:
1. the fetch: the range queries of the average and of the VM count (43,201 points each, in pieces of 10,000), as
   autoscaling.replay_service.recorded_fetch asks them;
2. the replay: autoscaling.replay.replay over those points, one autoscaling.policy.decide per point (median of 3);
3. the baseline, in the same run: the same number of decide() calls with fixed inputs (what the decisions alone
   cost), and a comparison (the saved policy and an edited one, as the admin's button runs it).
Needs no database: the config is an unsaved model instance. Loopback only.
"""

import math
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DAYS = 30
STEP = 60
GOAL_SECONDS = 10.0
SERVICE = "bench-replay"


def series(end):
    """A day's curve (25 % at night, 85 % at the busiest hour) with some noise-free wobble, every minute."""
    start = end - DAYS * 86400
    points = []
    for i in range(DAYS * 1440 + 1):
        ts = start + i * STEP
        hour = (ts % 86400) / 3600
        value = 55 - 30 * math.cos((hour - 2) / 24 * 2 * math.pi) + 5 * math.sin(i / 7)
        points.append((ts, value))
    return points


def main():
    run_dir = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    os.environ.update(
        DATABASE_URL=f"sqlite:///{run_dir / 'db.sqlite3'}",
        DJANGO_SETTINGS_MODULE="vmautoscale.settings",
        LOG_LEVEL="WARNING",
    )
    import django

    django.setup()
    from django.test.utils import override_settings

    from autoscaling import policy, replay_service
    from autoscaling.models import AutoscalingConfig
    from events.intake import config_policy
    from integrations.prometheus import PrometheusClient
    from tests.replay_support import backfilled_prometheus, cpu_expression, openmetrics

    end = time.time() // STEP * STEP
    points = series(end)
    started = time.perf_counter()
    text = openmetrics(service=SERVICE, per_vm={"vm-a": points, "vm-b": points})
    with backfilled_prometheus(text) as url:
        print(f"backfill + Prometheus start: {time.perf_counter() - started:.1f} s ({len(points)} points per VM)")
        config = AutoscalingConfig(
            service_name=SERVICE,
            enabled=True,
            metric="cpu",
            promql_expression=cpu_expression(SERVICE),
            threshold=70,
            duration_seconds=120,
            min_instances=2,
            max_instances=6,
            scale_out_step=1,
            cooldown_seconds=300,
            scale_in_threshold=30,
            scale_in_duration_seconds=600,
            scale_in_cooldown_seconds=300,
            scale_in_step=1,
        )
        with override_settings(PROMETHEUS_URL=url), PrometheusClient(url, timeout=60) as client:
            seconds, step = replay_service.period_parse(period="30d")
            fetches = []
            for _ in range(3):
                recorded = replay_service.recorded_fetch(
                    config=config, seconds=seconds, step=step, now=end, client=client
                )
                fetches.append(recorded.fetch_seconds)
        print(f"fetch (2 range queries, {len(recorded.points)} + {len(recorded.counts)} points): "
              f"{statistics.median(fetches):.2f} s median of 3 ({min(fetches):.2f}-{max(fetches):.2f})")  # fmt: skip

        runs = []
        for _ in range(3):
            run = replay_service.replay_run(
                config=config, recorded=recorded, provisioning_seconds=300, drain_seconds=120, protected=0
            )
            runs.append(run.seconds)
        result = run.result
        replay_seconds = statistics.median(runs)
        print(
            f"replay ({result.decisions} decide() calls): {replay_seconds:.2f} s median of 3 "
            f"({min(runs):.2f}-{max(runs):.2f}); {replay_seconds / result.decisions * 1e6:.1f} us per step; "
            f"{result.scale_outs} scale-outs, {result.scale_ins} scale-ins, {result.vm_hours:.0f} VM-hours"
        )

        pol = config_policy(config)
        fleet = policy.Fleet(in_service=2)
        now = datetime.fromtimestamp(end, UTC)
        started = time.perf_counter()
        for _ in range(result.decisions):
            policy.decide(
                policy=pol, fleet=fleet, signal=policy.Signal.none(), last_action_at=None, active_event_id=None, now=now
            )
        baseline = time.perf_counter() - started
        print(f"baseline: {result.decisions} decide() calls with fixed inputs: {baseline:.2f} s")

        edited = replay_service.policy_values(config=config, overrides={"threshold": 60, "cooldown_seconds": 600})
        started = time.perf_counter()
        current = replay_service.replay_run(
            config=config, recorded=recorded, provisioning_seconds=300, drain_seconds=120
        )
        other = replay_service.replay_run(config=edited, recorded=recorded, provisioning_seconds=300, drain_seconds=120)
        compare = time.perf_counter() - started
        sentence = replay_service.comparison_text(current.result, other.result)
        print(f"comparison (both policies): {compare:.2f} s: {sentence}")
    total = statistics.median(fetches) + replay_seconds
    verdict = "OK" if total < GOAL_SECONDS else "SLOWER THAN THE GOAL"
    print(f"fetch + replay: {total:.2f} s (goal: under {GOAL_SECONDS:.0f} s): {verdict}")


if __name__ == "__main__":
    main()
