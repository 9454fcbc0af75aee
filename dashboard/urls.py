"""URLs of the monitoring dashboard, mounted at admin/monitoring/ (before the admin's own URLs) by the project."""

from django.contrib import admin
from django.urls import path

from dashboard import views

urlpatterns = [
    path("", admin.site.admin_view(views.dashboard), name="monitoring-dashboard"),
    path("fragment", admin.site.admin_view(views.dashboard_fragment), name="monitoring-fragment"),
    path(
        "services/<slug:service>/",
        admin.site.admin_view(views.dashboard_service),
        name="monitoring-service",
    ),
    path(
        "services/<slug:service>/fragment",
        admin.site.admin_view(views.dashboard_fragment),
        name="monitoring-service-fragment",
    ),
]
