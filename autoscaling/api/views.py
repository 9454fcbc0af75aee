"""API doors of the autoscaling app: validate the shape, call a service, answer. No decisions here."""

import contextlib

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from access import roles
from autoscaling import replay_service, safety_services, services
from autoscaling.api import serializers
from autoscaling.models import AutoscalingConfig, IpPool, ProvisioningRun
from common.errors import ErrorSerializer, PortalError, invalid


@contextlib.contextmanager
def service_errors():
    """A service's refusal of the current state answers 409 (its validation errors answer 400 by themselves)."""
    try:
        yield
    except services.ConflictError as exc:
        raise PortalError(exc.message, code="conflict", status=status.HTTP_409_CONFLICT) from None


CONFLICT = OpenApiResponse(ErrorSerializer, description=_("Refused in the current state (the message says why)."))
INVALID = OpenApiResponse(ErrorSerializer, description=_("Invalid input: field -> reasons."))
UNAVAILABLE = OpenApiResponse(ErrorSerializer, description=_("Prometheus could not be read (the message says why)."))


@extend_schema_view(
    list=extend_schema(summary=_("List autoscaling configs"), tags=["autoscaling"]),
    retrieve=extend_schema(summary=_("Get an autoscaling config"), tags=["autoscaling"]),
    create=extend_schema(summary=_("Create an autoscaling config"), tags=["autoscaling"]),
    update=extend_schema(summary=_("Replace an autoscaling config"), tags=["autoscaling"]),
    partial_update=extend_schema(summary=_("Change fields of an autoscaling config"), tags=["autoscaling"]),
    destroy=extend_schema(
        summary=_("Delete an autoscaling config (its rule, route and job go with the next pass)"),
        tags=["autoscaling"],
        responses={204: None, 409: CONFLICT},
    ),
)
class AutoscalingConfigViewSet(viewsets.ModelViewSet):
    serializer_class = serializers.AutoscalingConfigSerializer
    queryset = AutoscalingConfig.objects.select_related("template", "ip_pool", "breaker__reset_by").prefetch_related(
        "suspensions__suspended_by"
    )
    filterset_fields = ["enabled", "metric", "sync_state", "template", "ip_pool"]
    search_fields = ["service_name", "description", "f5_pool"]
    ordering_fields = ["service_name", "created_at", "updated_at", "synced_at", "sync_state"]
    ordering = ["service_name"]
    # A replay reads and saves nothing: whoever may see the config may replay it, edited values included.
    permission_map = {
        "enable": [roles.CONFIG_ENABLE],
        "disable": [roles.CONFIG_ENABLE],
        "suspend": [roles.SCALING_SUSPEND],
        "resume": [roles.SCALING_SUSPEND],
        "resume_breaker": [roles.SCALING_SUSPEND],
        "replay": ["autoscaling.view_autoscalingconfig"],
    }

    def perform_create(self, serializer):
        with service_errors():
            serializer.instance = services.config_create(data=serializer.validated_data, user=self.request.user)

    def perform_update(self, serializer):
        with service_errors():
            serializer.instance = services.config_update(
                config=serializer.instance, data=serializer.validated_data, user=self.request.user
            )

    def perform_destroy(self, instance):
        with service_errors():
            services.config_delete(config=instance, user=self.request.user)

    @extend_schema(
        summary=_("Enable autoscaling of the service (provisions its rule, route, targets and job)"),
        request=None,
        responses={200: serializers.AutoscalingConfigSerializer, 400: INVALID},
        tags=["autoscaling"],
    )
    @action(detail=True, methods=["post"], name=_("Enable the config"))
    def enable(self, request, pk=None):
        config = self.get_object()
        with service_errors():
            config = services.config_enable(config=config, user=request.user)
        return Response(self.get_serializer(config).data)

    @extend_schema(
        summary=_("Disable autoscaling of the service (removes its rule, route and targets; disables its job)"),
        request=None,
        responses={200: serializers.AutoscalingConfigSerializer},
        tags=["autoscaling"],
    )
    @action(detail=True, methods=["post"], name=_("Disable the config"))
    def disable(self, request, pk=None):
        config = self.get_object()
        with service_errors():
            config = services.config_disable(config=config, user=request.user)
        return Response(self.get_serializer(config).data)

    def _fresh(self, config):
        return Response(self.get_serializer(self.get_queryset().get(pk=config.pk)).data)

    @extend_schema(
        summary=_("Suspend scaling processes of the service (scale-out, scale-in, replace, alert intake)"),
        request=serializers.SuspendRequestSerializer,
        responses={200: serializers.AutoscalingConfigSerializer, 400: INVALID},
        tags=["autoscaling"],
    )
    @action(detail=True, methods=["post"], name=_("Suspend processes"))
    def suspend(self, request, pk=None):
        config = self.get_object()
        body = serializers.SuspendRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        safety_services.config_processes_suspend(
            config=config,
            processes=body.validated_data.get("processes"),
            reason=body.validated_data["reason"],
            user=request.user,
        )
        return self._fresh(config)

    @extend_schema(
        summary=_("Resume suspended scaling processes of the service"),
        request=serializers.ResumeRequestSerializer,
        responses={200: serializers.AutoscalingConfigSerializer, 400: INVALID},
        tags=["autoscaling"],
    )
    @action(detail=True, methods=["post"], name=_("Resume processes"))
    def resume(self, request, pk=None):
        config = self.get_object()
        body = serializers.ResumeRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        safety_services.config_processes_resume(
            config=config, processes=body.validated_data.get("processes"), user=request.user
        )
        return self._fresh(config)

    @extend_schema(
        summary=_("Resume the service's circuit breaker now (its count of failed scale-outs starts again from 0)"),
        request=None,
        responses={200: serializers.AutoscalingConfigSerializer},
        tags=["autoscaling"],
    )
    @action(detail=True, methods=["post"], url_path="resume-breaker", name=_("Resume the circuit breaker"))
    def resume_breaker(self, request, pk=None):
        config = self.get_object()
        safety_services.config_breaker_resume(config=config, user=request.user)
        return self._fresh(config)

    @extend_schema(
        summary=_("What a pass pushes for this config: rule, route and Jenkins job (secrets masked)"),
        responses={200: serializers.ConfigPreviewSerializer},
        tags=["autoscaling"],
    )
    @action(detail=True, methods=["get"], name=_("Preview what is pushed"))
    def preview(self, request, pk=None):
        config = self.get_object()
        return Response(serializers.ConfigPreviewSerializer(services.config_previews(config=config)).data)

    @extend_schema(
        methods=["GET"],
        summary=_("Replay the saved policy over the service's recorded metric"),
        parameters=[
            OpenApiParameter("period", str, enum=list(replay_service.PERIODS), description=_("How far back.")),
            OpenApiParameter("step", float, description=_("Seconds between the replayed points.")),
        ],
        responses={200: serializers.ReplaySerializer, 400: INVALID, 502: UNAVAILABLE},
        tags=["autoscaling"],
    )
    @extend_schema(
        methods=["POST"],
        summary=_("Replay the saved policy and edited values on the same period, and compare them"),
        request=serializers.ReplayRequestSerializer,
        responses={200: serializers.ReplaySerializer, 400: INVALID, 502: UNAVAILABLE},
        tags=["autoscaling"],
    )
    @action(detail=True, methods=["get", "post"], name=_("Replay the policy"))
    def replay(self, request, pk=None):
        config = self.get_object()
        source = request.query_params if request.method == "GET" else request.data
        form = serializers.ReplayRequestSerializer(data=source)
        form.is_valid(raise_exception=True)
        overrides = form.validated_data.get("policy") or None
        if overrides:
            try:  # before Prometheus is asked, and named as the request names them
                replay_service.policy_values(config=config, overrides=overrides)
            except DjangoValidationError as exc:
                raise invalid({"policy": exc.message_dict}) from None
        report = replay_service.config_replay(
            config=config,
            period=form.validated_data["period"],
            step=form.validated_data.get("step"),
            overrides=overrides,
        )
        return Response(replay_service.report_data(report))


@extend_schema_view(
    list=extend_schema(summary=_("List IP pools with their free and used counts"), tags=["ip-pools"]),
    retrieve=extend_schema(summary=_("Get an IP pool with its free and used counts"), tags=["ip-pools"]),
    create=extend_schema(summary=_("Create an IP pool"), tags=["ip-pools"]),
    update=extend_schema(summary=_("Replace an IP pool"), tags=["ip-pools"]),
    partial_update=extend_schema(summary=_("Change fields of an IP pool"), tags=["ip-pools"]),
    destroy=extend_schema(
        summary=_("Delete an IP pool (refused while a config uses it)"),
        tags=["ip-pools"],
        responses={204: None, 409: CONFLICT},
    ),
)
class IpPoolViewSet(viewsets.ModelViewSet):
    serializer_class = serializers.IpPoolSerializer
    queryset = IpPool.objects.with_counts()
    search_fields = ["name", "network", "description"]
    ordering_fields = ["name", "created_at"]
    ordering = ["name"]
    permission_map = {"allocations": ["autoscaling.view_ipallocation"]}

    def perform_create(self, serializer):
        with service_errors():
            serializer.instance = services.ip_pool_create(data=serializer.validated_data, user=self.request.user)

    def perform_update(self, serializer):
        with service_errors():
            serializer.instance = services.ip_pool_update(
                pool=serializer.instance, data=serializer.validated_data, user=self.request.user
            )

    def perform_destroy(self, instance):
        with service_errors():
            services.ip_pool_delete(pool=instance, user=self.request.user)

    @extend_schema(
        summary=_("Addresses of the pool handed out so far"),
        responses={200: serializers.IpAllocationSerializer(many=True)},
        tags=["ip-pools"],
    )
    @action(detail=True, methods=["get"], name=_("IP allocations"))
    def allocations(self, request, pk=None):
        pool = self.get_object()
        page = self.paginate_queryset(pool.allocations.order_by("address"))
        data = serializers.IpAllocationSerializer(page, many=True).data
        return self.get_paginated_response(data)


@extend_schema_view(
    list=extend_schema(summary=_("Provisioning passes, newest first"), tags=["autoscaling"]),
    retrieve=extend_schema(summary=_("One provisioning pass: changes, reloads, error"), tags=["autoscaling"]),
)
class ProvisioningRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = serializers.ProvisioningRunSerializer
    queryset = ProvisioningRun.objects.all()
    filterset_fields = ["status", "check_only"]
    ordering_fields = ["requested_at", "id"]
    ordering = ["-id"]


class SyncView(APIView):
    permission_map = {"post": [roles.PROVISIONING_SYNC]}
    view_name = _("Provisioning sync")  # the browsable API page (common/api_names.py)

    @extend_schema(
        summary=_("Ask for a provisioning pass now (coalesced with one already waiting)"),
        request=None,
        responses={202: serializers.SyncRequestSerializer},
        tags=["autoscaling"],
    )
    def post(self, request):
        queued, run = services.provisioning_sync(reason="API sync", user=request.user)
        data = {"queued": queued, "run": run.pk if run else None}
        return Response(serializers.SyncRequestSerializer(data).data, status=status.HTTP_202_ACCEPTED)
