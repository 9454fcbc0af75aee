"""What the admin's replay page shows of a ReplayReport: the charts (the dashboard's SVG charts: the recorded metric
with the thresholds and the would-be events, the replayed fleet against the recorded one) and the rows of figures.
Presentation only: the figures come from autoscaling/replay_service.py."""

import math
from datetime import UTC, datetime

from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from autoscaling import replay, replay_service
from dashboard.charts import WIDE_HEIGHT, WIDE_WIDTH, Line, Marker, line_chart_svg

# A chart has about 1,300 px: more points than this draw nothing more.
CHART_POINTS = 1200
EVENTS_SHOWN = 100


def thin(points, *, steps=False, limit=CHART_POINTS):
    """At most about `limit` points of a series for a chart. A step series keeps every change (and the last
    point); a line keeps each bucket's highest value, so a short peak above the threshold still shows."""
    if len(points) <= limit:
        return list(points)
    if steps:
        kept = [points[0]]
        for point in points[1:]:
            if point[1] != kept[-1][1]:
                kept.append(point)
        if kept[-1] != points[-1]:
            kept.append(points[-1])
        return kept
    size = math.ceil(len(points) / limit)
    kept = []
    for i in range(0, len(points), size):
        bucket = [p for p in points[i : i + size] if math.isfinite(p[1])]
        kept.append(max(bucket, key=lambda p: p[1]) if bucket else (points[i][0], math.nan))
    return kept


def _markers(result):
    return [
        Marker(
            ts=event.at,
            kind="scale_out" if event.direction == replay.OUT else "scale_in",
            label=replay_service.event_reason(event),
        )
        for event in result.events
    ]


def metric_chart(report, config):
    """The recorded metric, its thresholds and the would-be events of the policy looked at (the edited one when
    there is one)."""
    recorded = report.recorded
    run = report.edited or report.current
    lines = []
    if run.rule.scale_in_threshold is not None:
        lines.append(
            Line(
                run.rule.scale_in_threshold,
                _("scale in < %(value)s %%") % {"value": f"{run.rule.scale_in_threshold:g}"},
                "threshold-in",
            )
        )
    return mark_safe(
        line_chart_svg(
            points=thin(recorded.points),
            start=recorded.start,
            end=recorded.end,
            step=recorded.step * max(len(recorded.points) / CHART_POINTS, 1),
            title=_("Recorded metric and the would-be events"),
            threshold=run.rule.threshold,
            threshold_label=_("scale out > %(value)s %%") % {"value": f"{run.rule.threshold:g}"},
            lines=lines,
            markers=_markers(run.result),
            no_data_label=_("No data"),
            width=WIDE_WIDTH,
            height=WIDE_HEIGHT + 60,
        )
    )


def fleet_chart(report, run, title):
    recorded = report.recorded
    return mark_safe(
        line_chart_svg(
            points=thin(run.result.fleet, steps=True),
            second=thin(run.result.recorded_fleet, steps=True),
            second_label=_("recorded fleet (dashed)"),
            start=recorded.start,
            end=recorded.end,
            step=recorded.step,
            title=title,
            unit="",
            steps=True,
            lines=[
                Line(run.values["min_instances"], _("min %(count)d") % {"count": run.values["min_instances"]}),
                Line(run.values["max_instances"], _("max %(count)d") % {"count": run.values["max_instances"]}),
            ],
            markers=_markers(run.result),
            no_data_label=_("No data"),
            width=WIDE_WIDTH,
            height=WIDE_HEIGHT,
        )
    )


def runs(report, config):
    """One row per policy replayed (the saved one, then the edited one), with its fleet chart and events."""
    rows = []
    for key, run, label in (
        ("current", report.current, _("Saved policy")),
        ("edited", report.edited, _("Edited values (not saved)")),
    ):
        if run is None:
            continue
        result = run.result
        rows.append(
            {
                "key": key,
                "label": label,
                "scale_outs": result.scale_outs,
                "scale_ins": result.scale_ins,
                "vm_hours": result.vm_hours,
                "minutes_above": result.minutes_above,
                "chart": fleet_chart(
                    report, run, _("%(policy)s: replayed fleet and the recorded one") % {"policy": label}
                ),
                "events": [
                    {
                        "at": datetime.fromtimestamp(event.at, UTC),
                        "direction": event.direction,
                        "count": event.count,
                        "reason": replay_service.event_reason(event),
                    }
                    for event in result.events[:EVENTS_SHOWN]
                ],  # fmt: skip
                "more_events": max(len(result.events) - EVENTS_SHOWN, 0),
            }
        )
    return rows
