from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from vmautoscale.metrics import metrics_view
from vmautoscale.views import healthz

urlpatterns = [
    path("admin/monitoring/", include("dashboard.urls")),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api/", include("templates_app.api.urls")),
    path("api/", include("autoscaling.api.urls")),
    path("api/", include("events.api.urls")),
    path("api/monitoring/", include("dashboard.api_urls")),
    path("i18n/", include("django.conf.urls.i18n")),
]
