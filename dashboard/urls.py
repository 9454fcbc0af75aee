"""URLs of the monitoring dashboard, mounted at admin/monitoring/ (before the admin's own URLs) by the project."""

from django.contrib import admin
from django.contrib.auth.decorators import permission_required
from django.urls import path

from dashboard import views


def page(view):
    """An admin page for staff whose role may read configs (every role), as the monitoring API asks."""
    return admin.site.admin_view(permission_required("autoscaling.view_autoscalingconfig", raise_exception=True)(view))


urlpatterns = [
    path("", page(views.dashboard), name="monitoring-dashboard"),
    path("fragment", page(views.dashboard_fragment), name="monitoring-fragment"),
    path(
        "services/<slug:service>/",
        page(views.dashboard_service),
        name="monitoring-service",
    ),
    path(
        "services/<slug:service>/fragment",
        page(views.dashboard_fragment),
        name="monitoring-service-fragment",
    ),
]
