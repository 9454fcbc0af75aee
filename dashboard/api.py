"""JSON behind the monitoring dashboard: a service's CPU and memory over a range, and the firing autoscale alerts."""

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from autoscaling.models import AutoscalingConfig, service_name_validator
from common.errors import ErrorSerializer, invalid
from dashboard import monitoring
from fleet.selectors import config_fleet_counts


class PointField(serializers.ListField):
    """[unix seconds, value]"""

    child = serializers.FloatField()


class MetricSeriesSerializer(serializers.Serializer):
    metric = serializers.CharField(help_text=_("cpu or memory"))
    label = serializers.CharField()
    expression = serializers.CharField(help_text=_("The PromQL queried (the alert rule's expression for its metric)."))
    threshold = serializers.FloatField(
        allow_null=True, help_text=_("Scale-out threshold, on the metric it applies to.")
    )
    scale_in_threshold = serializers.FloatField(
        allow_null=True, help_text=_("Scale-in threshold, on the metric it applies to, when the config scales in.")
    )
    latest = serializers.FloatField(allow_null=True)
    points = serializers.ListField(child=PointField(), help_text=_("[unix seconds, percent] pairs."))


class ScalingEventMarkerSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text=_("The event's id (/api/events/{id})."))
    action = serializers.CharField(help_text=_("scale_out or scale_in"))
    at = serializers.FloatField(help_text=_("When the event was created, in unix seconds."))
    vm_count = serializers.IntegerField()
    status = serializers.CharField()


class ServiceMetricsSerializer(serializers.Serializer):
    service = serializers.CharField()
    range = serializers.CharField()
    start = serializers.FloatField()
    end = serializers.FloatField()
    step = serializers.IntegerField(help_text=_("Seconds between points."))
    min_instances = serializers.IntegerField()
    max_instances = serializers.IntegerField()
    instances = serializers.IntegerField(help_text=_("Instances in service, from the service's inventory."))
    creating = serializers.IntegerField(help_text=_("Instances of the inventory being created."))
    series = MetricSeriesSerializer(many=True)
    fleet_size = serializers.ListField(
        child=PointField(),
        help_text=_(
            "[unix seconds, instances in service] pairs from the inventory's history: the count from each time on "
            "(a step series), the range's start and end included."
        ),
    )
    scaling_events = ScalingEventMarkerSerializer(
        many=True, help_text=_("The service's scale-outs and scale-ins created within the range, oldest first.")
    )


class FiringAlertSerializer(serializers.Serializer):
    name = serializers.CharField()
    service = serializers.CharField()
    severity = serializers.CharField()
    summary = serializers.CharField()
    value = serializers.CharField()
    starts_at = serializers.DateTimeField(allow_null=True)
    fingerprint = serializers.CharField()
    labels = serializers.DictField(child=serializers.CharField())


_ERROR = ErrorSerializer
_RANGE_ERROR = inline_serializer(
    "MonitoringRangeError",
    fields={
        "detail": serializers.CharField(),
        "code": serializers.CharField(),
        "errors": serializers.DictField(child=serializers.ListField(child=serializers.CharField())),
        "allowed": serializers.ListField(child=serializers.CharField()),
    },
)


MONITORING_READ = {"get": ["autoscaling.view_autoscalingconfig"]}


class ServiceMetricsView(APIView):
    permission_map = MONITORING_READ
    view_name = _("Service metrics")  # the browsable API page (common/api_names.py)

    @extend_schema(
        operation_id="monitoring_service_metrics",
        summary=_("CPU and memory of a service over a range"),
        parameters=[
            OpenApiParameter(
                "range",
                OpenApiTypes.STR,
                OpenApiParameter.QUERY,
                enum=list(monitoring.RANGES),
                description=_(
                    "How far back from now. Default: the shortest range that holds the service's history since its "
                    "config was created (at most 24h), so the charts are not mostly empty."
                ),
            )
        ],
        responses={
            200: ServiceMetricsSerializer,
            400: OpenApiResponse(_RANGE_ERROR, description=_("Unknown range; the body lists the allowed values.")),
            404: OpenApiResponse(_ERROR, description=_("No autoscaling config for this service.")),
            502: OpenApiResponse(_ERROR, description=_("Prometheus cannot be reached or failed; the body says why.")),
        },
        tags=["monitoring"],
    )
    def get(self, request, service):
        try:
            range_key = monitoring.range_parse(value=request.query_params.get("range"), default=None)
        except monitoring.InvalidRange as exc:
            raise invalid({"range": [str(exc)]}, extra={"allowed": list(monitoring.RANGES)}) from None
        config = get_object_or_404(AutoscalingConfig, service_name=service)
        range_key = range_key or monitoring.range_default(configs=[config])
        # An IntegrationError (Prometheus unreachable or failing) answers 502 through the API's exception handler.
        metrics = monitoring.service_metrics_get(config=config, range_key=range_key)
        fleet = config_fleet_counts(config=config)
        data = {
            "service": metrics.service,
            "range": metrics.range,
            "start": metrics.start,
            "end": metrics.end,
            "step": metrics.step,
            "min_instances": config.min_instances,
            "max_instances": config.max_instances,
            "instances": fleet.in_service,
            "creating": fleet.creating,
            "series": [
                {
                    "metric": s.metric,
                    "label": s.label,
                    "expression": s.expression,
                    "threshold": s.threshold,
                    "scale_in_threshold": s.scale_in_threshold,
                    "latest": s.latest,
                    "points": [list(p) for p in s.points],
                }
                for s in metrics.series
            ],
            "fleet_size": [list(p) for p in metrics.fleet_size],
            "scaling_events": [
                {"id": e.event_id, "action": e.action, "at": e.at, "vm_count": e.vm_count, "status": e.status}
                for e in metrics.scaling_events
            ],
        }
        return Response(ServiceMetricsSerializer(data).data)


class FiringAlertsView(APIView):
    permission_map = MONITORING_READ
    view_name = _("Firing alerts")  # the browsable API page (common/api_names.py)

    @extend_schema(
        operation_id="monitoring_alerts",
        summary=_("The portal's autoscale alerts active in Alertmanager"),
        parameters=[
            OpenApiParameter("service", OpenApiTypes.STR, OpenApiParameter.QUERY, description=_("Only this one."))
        ],
        responses={
            200: FiringAlertSerializer(many=True),
            400: OpenApiResponse(_ERROR, description=_("The service parameter is not a service name.")),
            502: OpenApiResponse(_ERROR, description=_("Alertmanager cannot be reached or failed; the body says why.")),
        },
        tags=["monitoring"],
    )
    def get(self, request):
        service = request.query_params.get("service") or None
        if service:
            try:
                service_name_validator(service)
            except ValidationError as exc:
                raise invalid({"service": exc.messages}) from None
        alerts = monitoring.alerts_firing_list(service=service)
        return Response(FiringAlertSerializer(alerts, many=True).data)
