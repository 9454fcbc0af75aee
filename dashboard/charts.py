"""Server-side SVG line charts for the monitoring dashboard.

Drawn on the server so the page needs no JavaScript library and no CDN, and so a test can read the chart as text.
Pure functions: points in, markup out.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

# Drawn at about the size the page shows it (two charts side by side at 1,400 px), so 11 px text stays 11 px.
WIDTH = 660
HEIGHT = 280
WIDE_WIDTH = 1330  # a chart across the whole panel (the fleet's size), lower
WIDE_HEIGHT = 200
PAD_LEFT = 48
PAD_RIGHT = 14
PAD_TOP = 18
PAD_BOTTOM = 28
X_TICKS = 6
# Colours are attributes too, so a chart reads right even where the stylesheet did not load (CSS may override).
SERIES_COLOR = "#2f7ed8"
THRESHOLD_COLOR = "#d9534f"
SCALE_IN_COLOR = "#2e7d32"
BOUND_COLOR = "#8a8a8a"
SECOND_COLOR = "#8e44ad"
MARKER_COLORS = {"scale_out": "#e67e22", "scale_in": "#16a085"}
PLOT_STYLE = 'fill="none" stroke="#ccc"'
GRID_STYLE = 'stroke="#eee"'
AXIS_STYLE = 'font-size="11" fill="#666"'
SERIES_STYLE = f'fill="none" stroke="{SERIES_COLOR}" stroke-width="2" stroke-linejoin="round"'
AREA_STYLE = f'fill="{SERIES_COLOR}" fill-opacity="0.12" stroke="none"'
THRESHOLD_STYLE = f'stroke="{THRESHOLD_COLOR}" stroke-width="1.4" stroke-dasharray="6 4"'
SCALE_IN_STYLE = f'stroke="{SCALE_IN_COLOR}" stroke-width="1.4" stroke-dasharray="6 4"'
BOUND_STYLE = f'stroke="{BOUND_COLOR}" stroke-width="1" stroke-dasharray="2 3"'


@dataclass(frozen=True)
class Marker:
    """A scaling event on the time axis: `kind` "scale_out" or "scale_in", `label` its tooltip."""

    ts: float
    kind: str
    label: str
    event_id: int | None = None
    failed: bool = False  # the event failed or was rolled back: drawn dashed and paler


@dataclass(frozen=True)
class Line:
    """A horizontal line: the scale-in threshold ("threshold-in") or a bound of the fleet ("bound")."""

    value: float
    label: str
    kind: str = "bound"


def _time_label(ts, span_seconds, tz):
    moment = datetime.fromtimestamp(ts, tz or UTC)
    if span_seconds > 2 * 86400:
        return moment.strftime("%m-%d %H:%M")
    return moment.strftime("%H:%M")


def _segments(points, gap_seconds):
    """Split points where the series has a hole (a scrape gap or a target that was down)."""
    segment = []
    previous = None
    for ts, value in points:
        if not math.isfinite(value):
            previous = None
            if segment:
                yield segment
            segment = []
            continue
        if previous is not None and ts - previous > gap_seconds and segment:
            yield segment
            segment = []
        segment.append((ts, value))
        previous = ts
    if segment:
        yield segment


def line_chart_svg(
    *,
    points,
    start,
    end,
    step,
    title,
    threshold=None,
    threshold_label="",
    lines=(),
    markers=(),
    no_data_label="No data",
    unit="%",
    steps=False,
    width=WIDTH,
    height=HEIGHT,
    tz=None,
    second=(),
    second_label="",
):
    """An SVG line chart of (unix ts, value) points between start and end (unix seconds), y axis from 0.

    Percentages (unit "%"): the y axis runs to 100 unless a value or a line is higher. Counts (unit ""): whole
    numbers, to one above the highest value or line, and `steps` draws the series as a step line (a fleet's size
    changes at an instant). The scale-out threshold, when given, is a dashed red line; `lines` adds others (the
    scale-in threshold, the fleet's bounds); `markers` are vertical lines where the service scaled out or in.
    Gaps longer than two steps break the line (not a step line: its value holds until the next change).
    `second`: another series drawn the same way, dashed and in another colour, named by `second_label` (a replay's
    recorded fleet beside the replayed one).
    """
    plot_w = width - PAD_LEFT - PAD_RIGHT
    plot_h = height - PAD_TOP - PAD_BOTTOM
    span = max(end - start, 1)
    finite = [v for _, v in [*points, *second] if math.isfinite(v)]
    levels = [*finite, *([threshold] if threshold is not None else []), *(line.value for line in lines)]
    if unit == "%":
        top = max([100.0, *levels])
        if top > 100:
            top = math.ceil(top / 25) * 25
        ticks = [top * i / 4 for i in range(5)]
    else:
        top = max([1.0, *levels]) + 1
        every = max(1, math.ceil(top / 5))
        top = math.ceil(top / every) * every
        ticks = [float(v) for v in range(0, int(top) + 1, every)]

    def x(ts):
        return PAD_LEFT + (ts - start) / span * plot_w

    def y(value):
        return PAD_TOP + plot_h - (value / top) * plot_h

    right = PAD_LEFT + plot_w
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label={quoteattr(title)}>',
        f"<title>{escape(title)}</title>",
        f'<rect class="plot" x="{PAD_LEFT}" y="{PAD_TOP}" width="{plot_w}" height="{plot_h}" {PLOT_STYLE}/>',
    ]
    for value in ticks:
        yy = y(value)
        parts.append(f'<line class="grid" x1="{PAD_LEFT}" y1="{yy:.1f}" x2="{right}" y2="{yy:.1f}" {GRID_STYLE}/>')
        parts.append(
            f'<text class="axis" x="{PAD_LEFT - 4}" y="{yy + 4:.1f}" text-anchor="end" {AXIS_STYLE}>'
            f"{value:g}{escape(unit)}</text>"
        )
    for i in range(X_TICKS + 1):
        ts = start + span * i / X_TICKS
        anchor = "start" if i == 0 else "end" if i == X_TICKS else "middle"
        parts.append(
            f'<text class="axis" x="{x(ts):.1f}" y="{height - 8}" text-anchor="{anchor}" {AXIS_STYLE}>'
            f"{escape(_time_label(ts, span, tz))}</text>"
        )

    drawn = 0
    path = []
    area = []
    bottom = y(0)
    segments = [sorted(p for p in points if math.isfinite(p[1]))] if steps else _segments(sorted(points), 2 * step)
    for segment in segments:
        if not segment:
            continue
        if steps:
            coords = [(x(segment[0][0]), y(segment[0][1]))]
            for (_ts0, v0), (ts1, v1) in zip(segment, segment[1:], strict=False):
                coords += [(x(ts1), y(v0)), (x(ts1), y(v1))]
        else:
            coords = [(x(ts), y(v)) for ts, v in segment]
        line = " L".join(f"{cx:.1f} {cy:.1f}" for cx, cy in coords)
        path.append("M" + line)
        area.append(f"M{coords[0][0]:.1f} {bottom:.1f} L{line} L{coords[-1][0]:.1f} {bottom:.1f} Z")
        drawn += len(segment)
    if drawn:
        last_ts, last_value = [p for p in sorted(points) if math.isfinite(p[1])][-1]
        parts.append(f'<path class="series-area" d="{" ".join(area)}" {AREA_STYLE}/>')
        parts.append(f'<path class="series" data-points="{drawn}" d="{" ".join(path)}" {SERIES_STYLE}/>')
        parts.append(
            f'<circle class="series-last" cx="{x(last_ts):.1f}" cy="{y(last_value):.1f}" r="2.5" '
            f'fill="{SERIES_COLOR}"/>'
        )
    else:
        parts.append(
            f'<text class="no-data" x="{PAD_LEFT + plot_w / 2:.1f}" y="{PAD_TOP + plot_h / 2:.1f}" '
            f'text-anchor="middle" font-size="12" fill="#888">{escape(no_data_label)}</text>'
        )
    if second:
        parts.append(_second_series(second, x=x, y=y, steps=steps, gap=2 * step, label=second_label))
    horizontal = [Line(threshold, threshold_label, "threshold")] if threshold is not None else []
    for line in [*horizontal, *lines]:
        style, color = {
            "threshold": (THRESHOLD_STYLE, THRESHOLD_COLOR),
            "threshold-in": (SCALE_IN_STYLE, SCALE_IN_COLOR),
        }.get(line.kind, (BOUND_STYLE, BOUND_COLOR))
        ty = y(line.value)
        # Below the line when it runs along the top of the plot, so the label stays inside.
        label_y = ty - 5 if ty - PAD_TOP > 14 else ty + 13
        parts.append(
            f'<line class="{line.kind}" data-value="{line.value:g}" x1="{PAD_LEFT}" y1="{ty:.1f}" '
            f'x2="{right}" y2="{ty:.1f}" {style}/>'
        )
        parts.append(
            f'<text class="{line.kind}-label" x="{right - 4}" y="{label_y:.1f}" text-anchor="end" '
            f'font-size="11" fill="{color}">{escape(line.label)}</text>'
        )
    for marker in markers:
        if not start <= marker.ts <= end:
            continue
        mx = x(marker.ts)
        color = MARKER_COLORS.get(marker.kind, BOUND_COLOR)
        # A triangle at the top, pointing up for a scale-out and down for a scale-in.
        tip, base = (PAD_TOP, PAD_TOP + 8) if marker.kind != "scale_in" else (PAD_TOP + 8, PAD_TOP)
        event = f' data-event="{marker.event_id}"' if marker.event_id is not None else ""
        failed = " marker-failed" if marker.failed else ""
        dash = ' stroke-dasharray="3 3"' if marker.failed else ""
        opacity = 0.45 if marker.failed else 0.85
        parts.append(
            f'<g class="marker marker-{escape(marker.kind)}{failed}"{event} data-ts="{marker.ts:.0f}">'
            f"<title>{escape(marker.label)}</title>"
            f'<line x1="{mx:.1f}" y1="{PAD_TOP}" x2="{mx:.1f}" y2="{PAD_TOP + plot_h}" stroke="{color}" '
            f'stroke-width="1.4" stroke-opacity="{opacity}"{dash}/>'
            f'<path d="M{mx - 5:.1f} {base} L{mx + 5:.1f} {base} L{mx:.1f} {tip} Z" fill="{color}" '
            f'fill-opacity="{opacity}"/></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _second_series(points, *, x, y, steps, gap, label):
    """The second series' path (no area) and its name at the top left."""
    finite = sorted(p for p in points if math.isfinite(p[1]))
    segments = [finite] if steps else list(_segments(sorted(points), gap))
    path = []
    for segment in segments:
        if not segment:
            continue
        coords = [(x(segment[0][0]), y(segment[0][1]))]
        for (_ts0, v0), (ts1, v1) in zip(segment, segment[1:], strict=False):
            coords += [(x(ts1), y(v0)), (x(ts1), y(v1))] if steps else [(x(ts1), y(v1))]
        path.append("M" + " L".join(f"{cx:.1f} {cy:.1f}" for cx, cy in coords))
    return (
        f'<path class="series-second" d="{" ".join(path)}" fill="none" stroke="{SECOND_COLOR}" stroke-width="1.6" '
        f'stroke-dasharray="5 3"/>'
        f'<text class="series-second-label" x="{PAD_LEFT + 6}" y="{PAD_TOP + 12}" text-anchor="start" font-size="11" '
        f'fill="{SECOND_COLOR}">{escape(label)}</text>'
    )
