"""The monitoring dashboard pages of the admin: all enabled services, or one service, refreshed in place.

The page loads once; dashboard.js then fetches the body fragment every few seconds and swaps it in. Charts are
SVG drawn on the server (dashboard.charts), so the page needs nothing from the internet.
"""

from django.contrib import admin
from django.http import Http404
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from dashboard import monitoring
from dashboard.charts import WIDE_HEIGHT, WIDE_WIDTH, Line, Marker, line_chart_svg

REFRESH_SECONDS = 15
REFRESH_BOUNDS = (2, 600)


def _event_admin_url(event):
    try:
        return reverse("admin:events_scaleoutevent_change", args=[event.pk])
    except NoReverseMatch:
        return ""


def _markers(scaling_events):
    """The service's scale-outs and scale-ins as chart markers; the tooltip says which event and how it ended."""
    markers = []
    for event in scaling_events:
        sign = "−" if event.action == "scale_in" else "+"
        label = _("#%(event)s %(action)s %(sign)s%(vms)s VM (%(status)s)") % {
            "event": event.event_id,
            "action": event.action_label,
            "sign": sign,
            "vms": event.vm_count,
            "status": event.status_label,
        }
        failed = event.status in ("failed", "rolled_back", "cancelled")
        markers.append(Marker(ts=event.at, kind=event.action, label=label, event_id=event.event_id, failed=failed))
    return markers


def _chart(series, metrics, service):
    title = _("%(metric)s of %(service)s") % {"metric": series.label, "service": service}
    threshold_label = ""
    lines = []
    if series.threshold is not None:
        threshold_label = _("scale-out threshold %(value)s%%") % {"value": f"{series.threshold:g}"}
    if series.scale_in_threshold is not None:
        label = _("scale-in threshold %(value)s%%") % {"value": f"{series.scale_in_threshold:g}"}
        lines.append(Line(value=series.scale_in_threshold, label=label, kind="threshold-in"))
    # Safe: dashboard.charts builds the markup from numbers and escaped text only.
    return mark_safe(
        line_chart_svg(
            points=series.points,
            start=metrics.start,
            end=metrics.end,
            step=metrics.step,
            title=title,
            threshold=series.threshold,
            threshold_label=threshold_label,
            lines=lines,
            markers=_markers(metrics.scaling_events),
            no_data_label=_("No data from Prometheus for this range"),
            tz=timezone.get_current_timezone(),
        )
    )


def _fleet_chart(panel):
    """The fleet's size over the range (instances in service), between its minimum and maximum: from the portal's
    inventory, so it is drawn while Prometheus is down too."""
    config = panel.config
    lines = [
        Line(value=config.min_instances, label=_("min %(n)d") % {"n": config.min_instances}),
        Line(value=config.max_instances, label=_("max %(n)d") % {"n": config.max_instances}),
    ]
    return mark_safe(
        line_chart_svg(
            points=panel.fleet_size,
            start=panel.start,
            end=panel.end,
            step=panel.step,
            title=_("Instances in service of %(service)s") % {"service": config.service_name},
            lines=lines,
            markers=_markers(panel.scaling_events),
            no_data_label=_("No instance recorded in this range"),
            unit="",
            steps=True,
            width=WIDE_WIDTH,
            height=WIDE_HEIGHT,
            tz=timezone.get_current_timezone(),
        )
    )


def _body_context(request, service=None):
    problems = []
    configs = monitoring.dashboard_configs(service=service)
    if service and not configs:
        raise Http404(_("No autoscaling config for service %(service)s.") % {"service": service})
    # Without ?range= (or with a wrong one) the range that the services' history fills.
    fitted = monitoring.range_default(configs=configs)
    try:
        range_key = monitoring.range_parse(value=request.GET.get("range"), default=fitted)
    except monitoring.InvalidRange as exc:
        range_key = fitted
        problems.append(str(exc))
    dashboard = monitoring.dashboard_get(configs=configs, range_key=range_key, service=service)
    panels = []
    for panel in dashboard.panels:
        charts = []
        if panel.metrics:
            charts = [
                {"series": series, "svg": _chart(series, panel.metrics, panel.config.service_name)}
                for series in panel.metrics.series
            ]
        panels.append({"panel": panel, "charts": charts, "fleet_chart": _fleet_chart(panel)})
    events = [{"event": event, "admin_url": _event_admin_url(event)} for event in dashboard.events]
    return {
        "dashboard": dashboard,
        "panels": panels,
        "events": events,
        "input_problems": problems,
        "service": service,
        "range_key": range_key,
        "ranges": list(monitoring.RANGES),
        "generated_at": timezone.now(),
    }


def _refresh_seconds(request):
    """Seconds between refreshes: ?refresh=N (bounded) lets a wall display or a test choose."""
    try:
        seconds = int(request.GET.get("refresh", REFRESH_SECONDS))
    except ValueError:
        return REFRESH_SECONDS
    return min(max(seconds, REFRESH_BOUNDS[0]), REFRESH_BOUNDS[1])


def _page(request, service=None):
    context = {
        **admin.site.each_context(request),
        **_body_context(request, service=service),
        "title": (_("Monitoring: %(service)s") % {"service": service} if service else _("Monitoring dashboard")),
        "refresh_seconds": _refresh_seconds(request),
        "fragment_url": (
            reverse("monitoring-service-fragment", args=[service]) if service else reverse("monitoring-fragment")
        ),
    }
    return render(request, "dashboard/dashboard.html", context)


def dashboard(request):
    return _page(request)


def dashboard_service(request, service):
    return _page(request, service=service)


def dashboard_fragment(request, service=None):
    return render(request, "dashboard/dashboard_body.html", _body_context(request, service=service))
