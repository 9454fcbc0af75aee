"""URLs of the monitoring JSON endpoints, mounted at api/monitoring/ by the project."""

from django.urls import path

from dashboard.api import FiringAlertsView, ServiceMetricsView

urlpatterns = [
    path("services/<slug:service>/metrics", ServiceMetricsView.as_view(), name="monitoring-service-metrics"),
    path("alerts", FiringAlertsView.as_view(), name="monitoring-alerts"),
]
