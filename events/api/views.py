"""API doors of the events app: validate, call a service, answer. No decisions here."""

import re

from django.db.models import Prefetch
from django.http import HttpResponse, JsonResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from access import roles
from common.errors import PortalError, invalid
from common.pagination import HistoryPagination
from common.parsers import StrictJSONParser
from events import callbacks, intake, selectors
from events.api import filters, serializers
from events.models import AlertNotification, ScaleOutEvent, ScalingDecision
from fleet.models import ManagedInstance
from integrations.errors import IntegrationError

SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def _bearer(request):
    scheme, _sep, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def callback_refused(exc):
    """A callback the events app refuses (401 with the bearer challenge, 403, 404 or 409)."""
    codes = {401: "not_authenticated", 403: "permission_denied", 404: "not_found", 409: "conflict"}
    headers = {"WWW-Authenticate": 'Bearer realm="vmautoscale-callback"'} if exc.status_code == 401 else None
    return PortalError(exc.message, code=codes.get(exc.status_code, "refused"), status=exc.status_code, headers=headers)


# The webhook is the portal's hottest path: one validator instance for every request builds its (nested) fields
# once instead of deep-copying them per request (0.5 ms -> 0.1 ms). Validation keeps no state on the instance.
WEBHOOK_PAYLOAD = serializers.AlertmanagerWebhookSerializer()


# --- Alertmanager webhook ------------------------------------------------------------------------------------
class AlertmanagerWebhookView(APIView):
    """Alertmanager's webhook for one service (bearer token or basic auth, as the receiver is configured)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]  # Alertmanager reads JSON: no content negotiation on the hottest path
    throttle_classes = []

    @extend_schema(
        request=serializers.AlertmanagerWebhookSerializer,
        responses={
            202: serializers.WebhookResponseSerializer,
            400: OpenApiResponse(description=gettext_lazy("Malformed payload")),
            401: OpenApiResponse(description=gettext_lazy("Missing or wrong credentials")),
        },
        auth=[],
        tags=["webhook"],
        summary=gettext_lazy("Receive an Alertmanager notification"),
        description=gettext_lazy(
            "Alertmanager's webhook for one service (bearer token or basic auth): the notification is stored and the "
            "answer is 202 at once; its alerts are decided behind the answer, in arrival order, usually within a "
            "fraction of a second. The notification's page (url) shows when they were decided and the decisions."
        ),
    )
    def post(self, request, service):
        if not intake.webhook_authenticate(authorization=request.headers.get("Authorization", "")):
            raise PortalError(
                _("Missing or wrong webhook credentials."),
                code="not_authenticated",
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="vmautoscale"'},
            )
        if not SERVICE_NAME.match(service):
            raise PortalError(_("Invalid service name in the URL."), code="invalid", status=400)
        raw = request.data
        if not isinstance(raw, dict):
            raise PortalError(_("The body must be a JSON object."), code="invalid", status=400)
        payload = serializers.webhook_payload_accepted(raw) or WEBHOOK_PAYLOAD.run_validation(raw)
        notification = intake.alert_notification_receive(
            service_name=service, payload=payload, raw_payload=serializers.webhook_payload_to_store(raw)
        )
        # Built by hand and rendered without content negotiation: this is the hottest path of the portal.
        return JsonResponse(
            {
                "notification": notification.pk,
                "status": "accepted",
                "url": reverse("notification-detail", args=[notification.pk]),
            },
            status=202,
            json_dumps_params={"separators": (",", ":")},
        )


# --- events --------------------------------------------------------------------------------------------------
# What the list's rows read (serializers.ScaleOutEventSerializer.to_representation): not the build log, the alert's
# labels, the trigger's bookkeeping, nor the operator's account beyond the name.
EVENT_LIST_COLUMNS = [
    "id",
    "service_name",
    "config_id",
    "action",
    "status",
    "source",
    "requested_by__username",
    "reason",
    "reason_msgid",
    "reason_params",
    "vm_count",
    "alert_name",
    "alert_starts_at",
    "jenkins_job",
    "build_number",
    "build_url",
    "vm_names",
    "vm_ips",
    "error",
    "error_msgid",
    "error_params",
    "failed_step",
    "created_at",
    "triggered_at",
    "started_at",
    "finished_at",
]


def _event_queryset():
    # The page's queries do not grow with its size: a column the rows read and this leaves out would (the tests).
    return ScaleOutEvent.objects.select_related("requested_by").only(*EVENT_LIST_COLUMNS)


class ScaleOutEventListView(generics.ListAPIView):
    pagination_class = HistoryPagination
    serializer_class = serializers.ScaleOutEventSerializer
    filterset_class = filters.ScaleOutEventFilter
    ordering_fields = ["created_at", "finished_at", "id", "service_name", "status"]
    ordering = ["-created_at", "-id"]
    search_fields = ["service_name", "alert_name", "=build_number"]
    permission_map = {"post": [roles.SCALE_OUT]}

    def get_queryset(self):
        return _event_queryset()

    @extend_schema(tags=["events"], summary=gettext_lazy("List scale-out events"))
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=serializers.ManualScaleOutSerializer,
        responses={
            201: serializers.ScaleOutEventDetailSerializer,
            400: OpenApiResponse(description=gettext_lazy("Bad input or unknown service")),
            409: serializers.DecisionRefusedSerializer,
        },
        tags=["events"],
        summary=gettext_lazy("Request a manual scale-out"),
        description=gettext_lazy("An operator's manual scale-out; it goes through the same decisions as an alert."),
    )
    def post(self, request):
        serializer = serializers.ManualScaleOutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        decision = intake.scale_out_request(user=request.user, **serializer.validated_data)
        if decision.outcome == ScalingDecision.Outcome.UNKNOWN_SERVICE:
            raise invalid({"service_name": [decision.reason_text]}, extra={"decision": decision.pk})
        return _event_created(decision)


def _event_created(decision):
    """201 with the event an operator's request created, or 409 with the decision's reason when it did not act
    (code "dry_run" when the config is in dry-run: it would have acted, nothing was triggered)."""
    if decision.event_id is None:
        would_be = decision.dry_run and decision.outcome in ScalingDecision.ACTIONS
        raise PortalError(
            decision.reason_text,
            code="dry_run" if would_be else "not_scaled",
            status=409,
            extra={"outcome": decision.outcome, "decision": decision.pk},
        )
    event = ScaleOutEvent.objects.prefetch_related("actions").get(pk=decision.event_id)
    return Response(serializers.ScaleOutEventDetailSerializer(event).data, status=201)


class InstanceRemoveView(APIView):
    permission_map = {"post": [roles.SCALE_IN]}

    @extend_schema(
        request=serializers.InstanceRemoveSerializer,
        responses={
            201: serializers.ScaleOutEventDetailSerializer,
            404: OpenApiResponse(description="No such instance"),
            409: serializers.DecisionRefusedSerializer,
        },
        tags=["fleet"],
        summary=gettext_lazy("Remove one instance (a manual scale-in)"),
        description=gettext_lazy(
            "An operator's removal of one instance: a manual scale-in event for it, through the same pipeline as any "
            "scale-in (drain, shut down, destroy, release the IP). 409 with the reason when it would cross the "
            "minimum, or the instance is not in service or already being removed."
        ),
    )
    def post(self, request, pk):
        serializer = serializers.InstanceRemoveSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            decision = intake.instance_remove_request(instance_id=pk, user=request.user, **serializer.validated_data)
        except ManagedInstance.DoesNotExist:
            raise PortalError(
                _("No instance #%(instance)d.") % {"instance": pk}, code="not_found", status=404
            ) from None
        return _event_created(decision)


class ScaleOutEventDetailView(generics.RetrieveAPIView):
    serializer_class = serializers.ScaleOutEventDetailSerializer
    queryset = ScaleOutEvent.objects.select_related("requested_by").prefetch_related("actions")

    @extend_schema(tags=["events"], summary=gettext_lazy("Scale-out event detail"))
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class AlertNotificationListView(generics.ListAPIView):
    pagination_class = HistoryPagination
    serializer_class = serializers.AlertNotificationSerializer
    filterset_class = filters.AlertNotificationFilter
    ordering_fields = ["received_at", "id"]
    ordering = ["-received_at", "-id"]
    search_fields = ["service_name", "group_key"]
    queryset = AlertNotification.objects.defer("payload").prefetch_related(
        Prefetch("decisions", queryset=ScalingDecision.objects.order_by("id"))
    )

    @extend_schema(tags=["events"], summary=gettext_lazy("List alert notifications"))
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class AlertNotificationDetailView(generics.RetrieveAPIView):
    serializer_class = serializers.AlertNotificationDetailSerializer
    queryset = AlertNotification.objects.prefetch_related(
        Prefetch("decisions", queryset=ScalingDecision.objects.order_by("id"))
    )

    @extend_schema(tags=["events"], summary=gettext_lazy("Alert notification detail"))
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ScalingDecisionListView(generics.ListAPIView):
    pagination_class = HistoryPagination
    serializer_class = serializers.ScalingDecisionSerializer
    filterset_class = filters.ScalingDecisionFilter
    ordering_fields = ["decided_at", "id"]
    ordering = ["-decided_at", "-id"]
    search_fields = ["service_name", "alert_name", "reason"]
    queryset = ScalingDecision.objects.all()

    @extend_schema(tags=["events"], summary=gettext_lazy("List scaling decisions"))
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


# --- pipeline callbacks --------------------------------------------------------------------------------------
# The contract with jenkins/Jenkinsfile.autoscale (CALLBACK_URL = PORTAL_URL + /api/events/<id>/callback):
#   POST $CALLBACK_URL/status  {"status": "running"|"succeeded"|"failed"|"rolled_back", "message", "failed_step",
#                               "vm_names": [..], "vm_ips": [..], "build_number", "build_url"}  (only status needed)
#   POST $CALLBACK_URL/step    {"step": "<EventAction.Step>", "status": "running"|"succeeded"|"failed"|"skipped",
#                               "message", "details": {..}}
# with `Authorization: Bearer $CALLBACK_TOKEN` and a JSON body. 200 {"event", "status", "changed"[, "step",
# "step_status"]}; a repeat answers changed=false. 400 bad body, 401 no token, 403 another event's token or a
# finished event (steps), 404 no event, 409 an impossible change (the reason in "detail").
class _CallbackView(APIView):
    """Called by the pipeline with `Authorization: Bearer <the event's callback token>`."""

    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [StrictJSONParser]
    input_serializer = None

    def post(self, request, event_id):
        try:
            callbacks.event_callback_authenticate(
                event_id=event_id, token=_bearer(request), allow_finished=self.allow_finished
            )
        except callbacks.CallbackRefused as exc:
            raise callback_refused(exc) from None
        serializer = self.input_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            result = self.report(event_id, serializer.validated_data)
        except callbacks.CallbackRefused as exc:
            raise callback_refused(exc) from None
        body = {"event": result.event.pk, "status": result.event.status, "changed": result.changed}
        if result.action is not None:
            body.update(step=result.action.step, step_status=result.action.status)
        return Response(body)


class StatusCallbackView(_CallbackView):
    input_serializer = serializers.StatusCallbackSerializer
    # An exact repeat of the final status is answered "no change" (a retried curl must not fail the pipeline).
    allow_finished = True

    @extend_schema(
        request=serializers.StatusCallbackSerializer,
        responses={200: serializers.CallbackResponseSerializer},
        auth=[],
        tags=["pipeline callbacks"],
        summary=gettext_lazy("Report the event's status"),
        description=gettext_lazy("The pipeline sets the event's status (running, succeeded, failed, rolled_back)."),
    )
    def post(self, request, event_id):
        return super().post(request, event_id)

    def report(self, event_id, data):
        return callbacks.event_status_report(event_id=event_id, **data)


class StepCallbackView(_CallbackView):
    input_serializer = serializers.StepCallbackSerializer
    allow_finished = False

    @extend_schema(
        request=serializers.StepCallbackSerializer,
        responses={200: serializers.CallbackResponseSerializer},
        auth=[],
        tags=["pipeline callbacks"],
        summary=gettext_lazy("Report a step"),
        description=gettext_lazy("The pipeline reports one step starting or finishing."),
    )
    def post(self, request, event_id):
        return super().post(request, event_id)

    def report(self, event_id, data):
        return callbacks.event_step_report(event_id=event_id, **data)


# --- Jenkins build history -----------------------------------------------------------------------------------
def _jenkins_error(exc):
    if exc.code == "not_found":
        return PortalError(exc.message, code="not_found", status=404)
    return PortalError(
        _("Jenkins could not be reached: %(why)s") % {"why": exc},
        code=exc.code or "jenkins_error",
        status=502,
        extra={"system": exc.system, "retryable": not exc.permanent},
    )


def _check_job(job_name):
    if not JOB_NAME.match(job_name):
        raise ValidationError({"jobName": [_("Use letters, digits, dots, hyphens and underscores.")]})


JENKINS_READ = {"get": ["events.view_scaleoutevent"]}


class JenkinsBuildListView(APIView):
    permission_map = JENKINS_READ
    view_name = gettext_lazy("Jenkins builds")  # the browsable API page (common/api_names.py)

    @extend_schema(
        parameters=[OpenApiParameter("limit", OpenApiTypes.INT, description=gettext_lazy("1-100, default 20"))],
        responses={200: serializers.JenkinsBuildSerializer(many=True), 404: None, 502: None},
        tags=["jenkins"],
        summary=gettext_lazy("List a job's builds"),
    )
    def get(self, request, job_name):
        _check_job(job_name)
        raw = request.query_params.get("limit", "20")
        if not raw.isdigit() or not 1 <= int(raw) <= 100:
            raise ValidationError({"limit": [_("Use a whole number from 1 to 100.")]})
        try:
            return Response(selectors.jenkins_builds_list(job_name=job_name, limit=int(raw)))
        except IntegrationError as exc:
            raise _jenkins_error(exc) from None


class JenkinsBuildDetailView(APIView):
    permission_map = JENKINS_READ
    view_name = gettext_lazy("Jenkins build")  # the browsable API page (common/api_names.py)

    @extend_schema(
        responses={200: serializers.JenkinsBuildSerializer, 404: None, 502: None},
        tags=["jenkins"],
        summary=gettext_lazy("Jenkins build detail"),
    )
    def get(self, request, job_name, number):
        _check_job(job_name)
        try:
            return Response(selectors.jenkins_build_get(job_name=job_name, number=number))
        except IntegrationError as exc:
            raise _jenkins_error(exc) from None


class JenkinsBuildLogView(APIView):
    permission_map = JENKINS_READ
    view_name = gettext_lazy("Jenkins build log")  # the browsable API page (common/api_names.py)

    @extend_schema(
        responses={(200, "text/plain"): OpenApiTypes.STR, 404: None, 502: None},
        tags=["jenkins"],
        summary=gettext_lazy("A build's console log"),
    )
    def get(self, request, job_name, number):
        _check_job(job_name)
        try:
            text = selectors.jenkins_build_log_get(job_name=job_name, number=number)
        except IntegrationError as exc:
            raise _jenkins_error(exc) from None
        return HttpResponse(text, content_type="text/plain; charset=utf-8")
