from django.http import JsonResponse
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from vmautoscale.health import health

# The API root's entries: key -> URL name of the endpoint (every list endpoint, the docs and the schema).
API_ROOT = {
    "templates": "template-list",
    "template_vms": "template-vm-list",
    "autoscaling_configs": "autoscaling-config-list",
    "ip_pools": "ip-pool-list",
    "provisioning_runs": "provisioning-run-list",
    "provisioning_sync": "autoscaling-sync",
    "scale_out_events": "event-list",
    "alert_notifications": "notification-list",
    "scaling_decisions": "decision-list",
    "firing_alerts": "monitoring-alerts",
    "audit_entries": "audit-entry-list",
    "docs": "swagger-ui",
    "redoc": "redoc",
    "schema": "schema",
}


def healthz(request):
    """200 when the database answers and a task cluster is running, 503 otherwise; the body says which."""
    state = health()
    return JsonResponse(state, status=200 if state["ok"] else 503)


class ApiRootView(APIView):
    """The portal's REST API: every endpoint below; the full reference is at docs."""

    # Only addresses, the same for everyone: the endpoints themselves need a log-in.
    permission_classes = [AllowAny]

    def get_view_name(self):
        return _("VM Autoscale portal API")

    @extend_schema(exclude=True)
    def get(self, request, format=None):
        return Response({key: reverse(name, request=request, format=format) for key, name in API_ROOT.items()})
