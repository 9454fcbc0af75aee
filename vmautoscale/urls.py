from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path, re_path
from django.utils.translation import gettext_lazy as _
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from common import errors
from vmautoscale.metrics import metrics_view
from vmautoscale.views import ApiRootView, healthz

# The product's name in the admin's header, page titles and index (not "Django administration").
admin.site.site_header = _("VM Autoscale portal")
admin.site.site_title = _("VM Autoscale portal")
admin.site.index_title = _("Portal administration")
# List pages get the full width (1,400 px shows every column): the index and the breadcrumbs lead everywhere.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    path("admin/monitoring/", include("dashboard.urls")),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api/", ApiRootView.as_view(), name="api-root"),
    path("api/", include("templates_app.api.urls")),
    path("api/", include("autoscaling.api.urls")),
    path("api/", include("events.api.urls")),
    path("api/", include("fleet.api.urls")),
    path("api/monitoring/", include("dashboard.api_urls")),
    path("api/", include("access.api.urls")),
    # Last under /api/: a path no endpoint has answers the API's JSON 404, not Django's page (also with DEBUG).
    re_path(r"^api/", errors.api_not_found),
    path("i18n/", include("django.conf.urls.i18n")),
]
# `make run` serves with gunicorn, not runserver: with DEBUG on, Django serves the static files itself (an empty list
# otherwise; production has nginx for them).
urlpatterns += staticfiles_urlpatterns()

# Django-level errors under /api/ answer the API's JSON shape; the admin keeps Django's pages.
handler400 = errors.handler400
handler403 = errors.handler403
handler404 = errors.handler404
handler500 = errors.handler500
