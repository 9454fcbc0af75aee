"""Benchmark of the scale-in pipeline (issue 14): the time of each scale-in stage, the connection drain apart.

    .venv/bin/python benchmarks/bench_scale_in.py [--runs 5] [--connections 20] [--decay 20]

Starts its own lab and portal (as benchmarks/bench_pipeline.py does). Each run scales the service out by one VM (the
baseline: the same Jenkinsfile's scale-out, measured in the same run), gives the new F5 member `--connections`
current connections that end at `--decay` per second once it is disabled (the F5 stand-in), then scales in that
instance through the portal's trigger. Reports, median (min-max): each scale-in Jenkins stage (its step command and
reports), the drain as the step measured it (disable -> no connection left) apart, and the whole builds ("minus
drain": minus the f5_drain step as the portal recorded it).
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_pipeline import STAGE_LINE, fmt, portal_and_lab, run_event  # noqa: E402  (this script's directory)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--decay", type=float, default=20.0, help="connections ending per second once disabled")
    args = parser.parse_args()

    with portal_and_lab("bench-scale-in-") as (lab, control, config):
        from events.models import EventAction, ScaleOutEvent
        from fleet.models import ManagedInstance
        from lab.components.f5 import F5StandinControl

        f5 = F5StandinControl(lab.info("f5")["control_url"])
        stage_times, drains, scale_outs, scale_ins, without_drain = {}, [], [], [], []
        for _run in range(args.runs):
            added = ScaleOutEvent.objects.create(config=config, service_name="bench")
            scale_outs.append(run_event(added, control)["duration_ms"] / 1000)
            instance = ManagedInstance.objects.get(created_by_event=added)
            f5.set_member_connections(config.f5_pool, instance.f5_member, args.connections, decay_per_second=args.decay)
            event = ScaleOutEvent.objects.create(
                config=config, service_name="bench", action=ScaleOutEvent.Action.SCALE_IN
            )
            ManagedInstance.objects.filter(pk=instance.pk).update(removed_by_event=event)
            build = run_event(event, control)
            scale_ins.append(build["duration_ms"] / 1000)
            run_stages = {title: float(seconds) for title, _result, seconds in STAGE_LINE.findall(build["console"])}
            for title, seconds in run_stages.items():
                stage_times.setdefault(title, []).append(seconds)
            drain = EventAction.objects.get(event=event, step=EventAction.Step.F5_DRAIN)
            drains.append(drain.details["drain_seconds"])
            # The drain step as the portal recorded it (its stage runs the other F5 steps too).
            without_drain.append(scale_ins[-1] - drain.duration_seconds)

        print(
            f"Scale-in benchmark: {args.runs} runs of scale-out + scale-in of one VM (vCenter simulator; F5 stand-in: "
            f"{args.connections} connections ending at {args.decay:g}/s once the member is disabled)"
        )
        print("\nScale-in Jenkins stage (command with its reports), median (min-max):")
        for title, values in stage_times.items():
            print(f"  {title:28} {fmt(values)}")
        print("\nThe drain, apart:")
        print(f"  {'polling until 0 left':22} {fmt(drains)}   (f5_drain's drain_seconds: its first poll to the last)")
        print("\nWhole builds:")
        print(f"  {'scale-in':22} {fmt(scale_ins)}")
        print(f"  {'scale-in minus drain':22} {fmt(without_drain)}")
        print(f"  {'scale-out (baseline)':22} {fmt(scale_outs)}")


if __name__ == "__main__":
    main()
