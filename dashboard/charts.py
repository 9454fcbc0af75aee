"""Server-side SVG line charts for the monitoring dashboard.

Drawn on the server so the page needs no JavaScript library and no CDN, and so a test can read the chart as text.
Pure functions: points in, markup out.
"""

import math
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

WIDTH = 640
HEIGHT = 220
PAD_LEFT = 44
PAD_RIGHT = 12
PAD_TOP = 14
PAD_BOTTOM = 26
X_TICKS = 6
# Colours are attributes too, so a chart reads right even where the stylesheet did not load (CSS may override).
SERIES_COLOR = "#2f7ed8"
THRESHOLD_COLOR = "#d9534f"
PLOT_STYLE = 'fill="none" stroke="#ccc"'
GRID_STYLE = 'stroke="#eee"'
AXIS_STYLE = 'font-size="10" fill="#666"'
SERIES_STYLE = f'fill="none" stroke="{SERIES_COLOR}" stroke-width="1.6" stroke-linejoin="round"'
THRESHOLD_STYLE = f'stroke="{THRESHOLD_COLOR}" stroke-width="1.2" stroke-dasharray="6 4"'


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
    no_data_label="No data",
    unit="%",
    tz=None,
):
    """An SVG line chart of (unix ts, value) points between start and end (unix seconds), y axis from 0.

    The y axis runs to 100 for percentages unless a value or the threshold is higher. The threshold, when given,
    is a dashed horizontal line. Gaps longer than two steps break the line.
    """
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    span = max(end - start, 1)
    finite = [v for _, v in points if math.isfinite(v)]
    top = max([100.0, *(v for v in finite), *([threshold] if threshold is not None else [])])
    if top > 100:
        top = math.ceil(top / 25) * 25

    def x(ts):
        return PAD_LEFT + (ts - start) / span * plot_w

    def y(value):
        return PAD_TOP + plot_h - (value / top) * plot_h

    right = PAD_LEFT + plot_w
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label={quoteattr(title)}>',
        f"<title>{escape(title)}</title>",
        f'<rect class="plot" x="{PAD_LEFT}" y="{PAD_TOP}" width="{plot_w}" height="{plot_h}" {PLOT_STYLE}/>',
    ]
    for i in range(5):
        value = top * i / 4
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
            f'<text class="axis" x="{x(ts):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}" {AXIS_STYLE}>'
            f"{escape(_time_label(ts, span, tz))}</text>"
        )

    drawn = 0
    path = []
    for segment in _segments(sorted(points), gap_seconds=2 * step):
        path.append("M" + " L".join(f"{x(ts):.1f} {y(v):.1f}" for ts, v in segment))
        drawn += len(segment)
    if drawn:
        last_ts, last_value = [p for p in sorted(points) if math.isfinite(p[1])][-1]
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
    if threshold is not None:
        ty = y(threshold)
        parts.append(
            f'<line class="threshold" data-value="{threshold:g}" x1="{PAD_LEFT}" y1="{ty:.1f}" '
            f'x2="{right}" y2="{ty:.1f}" {THRESHOLD_STYLE}/>'
        )
        parts.append(
            f'<text class="threshold-label" x="{right - 4}" y="{ty - 4:.1f}" text-anchor="end" '
            f'font-size="10" fill="{THRESHOLD_COLOR}">{escape(threshold_label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
