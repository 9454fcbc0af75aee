"""The scale-out pipeline's endpoints, authenticated by the event's token: the IP pool (scripts/get-available-ip.py)
and the instances the event creates (recorded before the clone, then moved along).

All under the event's callback URL, /api/events/<event_id>/callback/{ip,instances}/...; the caller sends
`Authorization: Bearer <callback token>`, the token the portal gave that event's Jenkins build. A token opens only
its own event, and only while the event runs.
"""

from django.db import transaction
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from autoscaling import ipam
from common.errors import ErrorSerializer, PortalError
from events import callbacks
from events.api.views import callback_refused
from fleet import services as fleet_services
from fleet.models import ManagedInstance


def callback_event(request, event_id, *, allow_finished=False):
    """The event whose callback token the request carries (the events app's check: 401, 403 or 404 otherwise)."""
    scheme, _sep, token = request.headers.get("Authorization", "").partition(" ")
    try:
        return callbacks.event_callback_authenticate(
            event_id=event_id, token=token.strip() if scheme.lower() == "bearer" else "", allow_finished=allow_finished
        )
    except callbacks.CallbackRefused as exc:
        raise callback_refused(exc) from None


class AddressSerializer(serializers.Serializer):
    address = serializers.IPAddressField(protocol="IPv4")


class ConfirmSerializer(AddressSerializer):
    vm_name = serializers.CharField(max_length=80)


class SkipSerializer(AddressSerializer):
    note = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class ReleaseSerializer(serializers.Serializer):
    address = serializers.IPAddressField(
        protocol="IPv4", required=False, help_text=_("Omit to release every address of the event.")
    )


AllocationSerializer = inline_serializer(
    "PipelineIpAllocation",
    {
        "address": serializers.CharField(),
        "state": serializers.CharField(),
        "vm_name": serializers.CharField(),
        "pool": serializers.CharField(),
        "network": serializers.CharField(),
        "netmask": serializers.CharField(),
        "prefix_length": serializers.IntegerField(),
        "gateway": serializers.CharField(allow_null=True),
        "dns_servers": serializers.ListField(child=serializers.CharField()),
        "ping_check": serializers.BooleanField(),
    },
)

ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description=_("Missing or wrong callback token.")),
    409: OpenApiResponse(
        ErrorSerializer, description=_("Not possible now: pool exhausted, no pool, or not this event's address.")
    ),
}
INVALID = OpenApiResponse(ErrorSerializer, description=_("Invalid body."))


def allocation_data(allocation, pool):
    return {
        "address": allocation.address,
        "state": allocation.state,
        "vm_name": allocation.vm_name,
        "pool": pool.name,
        "network": pool.network,
        "netmask": pool.netmask,
        "prefix_length": pool.prefix_length,
        "gateway": pool.gateway,
        "dns_servers": list(pool.dns_servers or []),
        "ping_check": pool.ping_check,
    }


class CallbackTokenChallenge(BaseAuthentication):
    """Authenticates nobody (callback_event checks the token per event); makes DRF answer 401 with a challenge."""

    def authenticate(self, request):
        return None

    def authenticate_header(self, request):
        return "Bearer"


class CallbackTokenScheme(OpenApiAuthenticationExtension):
    target_class = "events.api.pipeline.CallbackTokenChallenge"
    name = "eventCallbackToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": str(_("The callback token the portal gave the event's Jenkins build (CALLBACK_TOKEN).")),
        }


# The one shape of the IPAM endpoints: validate the body, find the event and its pool, call IPAM, answer. A
# subclass names its `body_serializer` (or none), its answer's `success_status`, and `call`, which returns the
# answer's data; an IpamError answers 409 with its message and code. (No docstring: the schema would show it.)
class PipelineView(APIView):
    # The callback token is checked in `answer` (callback_event); no user session or API token applies here.
    authentication_classes = [CallbackTokenChallenge]
    permission_classes = [AllowAny]

    # Giving addresses back stays possible after the event ended (e.g. cancelled by an operator while the build ran),
    # so the pipeline's undo never leaves one reserved; taking or confirming one is not.
    allow_finished = False
    body_serializer = None
    success_status = status.HTTP_200_OK
    # Set by a `call` whose answer's status depends on what it found (a repeated record answers 200, not 201).
    answer_status = None

    def call(self, *, event, pool, data):
        raise NotImplementedError

    def refused(self, exc):
        """The answer to an IpamError (or the fleet's InstanceRefused): 409, unless a subclass knows better."""
        if exc.code == "not_found":
            raise PortalError(exc.message, code=exc.code, status=status.HTTP_404_NOT_FOUND) from None
        raise PortalError(exc.message, code=exc.code, status=status.HTTP_409_CONFLICT) from None

    def answer(self, request, event_id):
        data = {}
        if self.body_serializer is not None and request.method != "GET":
            body = self.body_serializer(data=request.data)
            body.is_valid(raise_exception=True)
            data = body.validated_data
        try:
            event = callback_event(request, event_id, allow_finished=self.allow_finished)
            pool = ipam.ip_pool_for_event(event=event)
            result = self.call(event=event, pool=pool, data=data)
        except (ipam.IpamError, fleet_services.InstanceRefused) as exc:
            result = self.refused(exc)
        return Response(result, status=self.answer_status or self.success_status)


class IpListView(PipelineView):
    @extend_schema(
        tags=["pipeline callbacks"],
        summary=_("The event's IP allocations"),
        responses={200: AllocationSerializer, **ERRORS},
    )
    def get(self, request, event_id):
        return self.answer(request, event_id)

    def call(self, *, event, pool, data):
        rows = pool.allocations.filter(event=event).order_by("reserved_at", "id")
        return {"results": [allocation_data(a, pool) for a in rows]}


class IpReserveView(PipelineView):
    success_status = status.HTTP_201_CREATED

    @extend_schema(
        tags=["pipeline callbacks"],
        summary=_("Reserve the next free address of the event's pool"),
        request=None,
        responses={201: AllocationSerializer, **ERRORS},
    )
    def post(self, request, event_id):
        return self.answer(request, event_id)

    def call(self, *, event, pool, data):
        with transaction.atomic():
            allocation = ipam.ip_reserve(pool=pool, event=event)
        return allocation_data(allocation, pool)


class IpConfirmView(PipelineView):
    body_serializer = ConfirmSerializer

    @extend_schema(
        tags=["pipeline callbacks"],
        summary=_("Mark a reserved address as in use by a VM"),
        request=ConfirmSerializer,
        responses={200: AllocationSerializer, 400: INVALID, **ERRORS},
    )
    def post(self, request, event_id):
        return self.answer(request, event_id)

    def call(self, *, event, pool, data):
        allocation = ipam.ip_confirm(pool=pool, address=data["address"], event=event, vm_name=data["vm_name"])
        return allocation_data(allocation, pool)


class IpSkipView(PipelineView):
    body_serializer = SkipSerializer

    @extend_schema(
        tags=["pipeline callbacks"],
        summary=_("Record that a reserved address answered a ping (it is skipped)"),
        request=SkipSerializer,
        responses={200: AllocationSerializer, 400: INVALID, **ERRORS},
    )
    def post(self, request, event_id):
        return self.answer(request, event_id)

    def call(self, *, event, pool, data):
        allocation = ipam.ip_mark_skipped(pool=pool, address=data["address"], event=event, note=data["note"])
        return allocation_data(allocation, pool)


class IpReleaseView(PipelineView):
    allow_finished = True
    body_serializer = ReleaseSerializer

    @extend_schema(
        tags=["pipeline callbacks"],
        summary=_("Release one address of the event, or all of them (idempotent)"),
        request=ReleaseSerializer,
        responses={
            200: inline_serializer(
                "PipelineIpRelease", {"released": serializers.ListField(child=serializers.CharField())}
            ),
            **ERRORS,
        },
    )
    def post(self, request, event_id):
        return self.answer(request, event_id)

    def call(self, *, event, pool, data):
        if event.action == event.Action.SCALE_IN:
            # A scale-in holds no address of its own: it gives back those of the instances it removes, only those.
            return {"released": fleet_services.event_instances_ip_release(event=event, address=data.get("address"))}
        released = ipam.ip_release(pool=pool, event=event, address=data.get("address"))
        return {"released": [a.address for a in released]}

    def refused(self, exc):
        if exc.code == "not_reserved":
            # Releasing an address that is not (or no longer) this event's is a no-op for the pipeline's undo.
            return {"released": [], "detail": exc.message}
        return super().refused(exc)


# --- the instances the event creates ---------------------------------------------------------------------------
class InstanceRecordSerializer(serializers.Serializer):
    address = serializers.IPAddressField(
        protocol="IPv4", help_text=_("The address reserved for the VM (the instance's IP allocation).")
    )


PIPELINE_INSTANCE_STATES = [
    (s.value, s.label) for s in dict.fromkeys([*fleet_services.PIPELINE_STATES, *fleet_services.SCALE_IN_STATES])
]


class InstanceReportSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=PIPELINE_INSTANCE_STATES,
        required=False,
        help_text=_("Omit to report facts only."),
    )
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    vm_name = serializers.CharField(max_length=80, required=False)
    vcenter_uuid = serializers.CharField(max_length=64, required=False)
    f5_member = serializers.CharField(max_length=80, required=False)
    leftover = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        help_text=_("Scale-in: what a failure after the VM was destroyed left behind."),
    )


def instance_report_check(event, attrs):
    """Which states and facts an event may report depends on its action (scale-out or scale-in): 400 otherwise."""
    scale_in = event.action == event.Action.SCALE_IN
    states = fleet_services.SCALE_IN_STATES if scale_in else fleet_services.PIPELINE_STATES
    facts = fleet_services.SCALE_IN_FACTS if scale_in else fleet_services.PIPELINE_FACTS
    errors = {}
    if "state" in attrs and attrs["state"] not in states:
        errors["state"] = [
            _("A %(action)s cannot report %(state)s; it reports %(states)s.")
            % {"action": event.get_action_display(), "state": attrs["state"], "states": ", ".join(states)}
        ]
    for name in set(attrs) - {"state", "reason"} - set(facts):
        errors[name] = [_("A %(action)s does not report this.") % {"action": event.get_action_display()}]
    if errors:
        raise serializers.ValidationError(errors)


PipelineInstanceSerializer = inline_serializer(
    "PipelineInstance",
    {
        "id": serializers.IntegerField(),
        "state": serializers.CharField(),
        "ip_address": serializers.CharField(allow_null=True),
        "vm_name": serializers.CharField(),
        "vcenter_uuid": serializers.CharField(),
        "f5_member": serializers.CharField(),
        "leftover": serializers.CharField(),
    },
)
INSTANCE_ERRORS = {
    **ERRORS,
    404: OpenApiResponse(ErrorSerializer, description=_("No such event, or not an instance of this event.")),
    409: OpenApiResponse(
        ErrorSerializer,
        description=_(
            "Not possible now: the address is not the event's, the event recorded all its VMs, or the "
            "instance cannot take that state."
        ),
    ),
}


def instance_data(instance):
    return {
        "id": instance.pk,
        "state": instance.state,
        "ip_address": instance.ip_address,
        "vm_name": instance.vm_name,
        "vcenter_uuid": instance.vcenter_uuid,
        "f5_member": instance.f5_member,
        "leftover": instance.leftover,
    }


class InstanceRecordView(PipelineView):
    body_serializer = InstanceRecordSerializer
    success_status = status.HTTP_201_CREATED

    @extend_schema(
        operation_id="events_callback_instance_record",
        tags=["pipeline callbacks"],
        summary=_("Record the instance of a VM about to be cloned (idempotent per address)"),
        description=_(
            "Before the clone: the answer's id goes into the VM's ownership marker. Asking again for the "
            "same address answers 200 with the same instance."
        ),
        request=InstanceRecordSerializer,
        responses={201: PipelineInstanceSerializer, 200: PipelineInstanceSerializer, 400: INVALID, **INSTANCE_ERRORS},
    )
    def post(self, request, event_id):
        return self.answer(request, event_id)

    @extend_schema(
        operation_id="events_callback_instance_list",
        tags=["pipeline callbacks"],
        summary=_("The event's instances: those it creates, or (a scale-in) those it removes"),
        request=None,
        responses={
            200: inline_serializer(
                "PipelineInstanceList", {"results": serializers.ListField(child=PipelineInstanceSerializer)}
            ),
            **ERRORS,
        },
    )
    def get(self, request, event_id):
        return self.answer(request, event_id)

    def call(self, *, event, pool, data):
        if self.request.method == "GET":
            self.answer_status = status.HTTP_200_OK
            return {"results": [instance_data(i) for i in fleet_services.event_instances(event=event)]}
        allocation = ipam.ip_allocation_held(pool=pool, address=data["address"], event=event)
        instance, created = fleet_services.instance_record(event=event, allocation=allocation)
        self.answer_status = None if created else status.HTTP_200_OK
        return instance_data(instance)


class InstanceReportView(PipelineView):
    body_serializer = InstanceReportSerializer

    @extend_schema(
        operation_id="events_callback_instance_report",
        tags=["pipeline callbacks"],
        summary=_("Report an instance's facts and progress (provisioning after the clone, in service when healthy)"),
        request=InstanceReportSerializer,
        responses={200: PipelineInstanceSerializer, 400: INVALID, **INSTANCE_ERRORS},
    )
    def post(self, request, event_id, instance_id):
        return self.answer(request, event_id)

    def call(self, *, event, pool, data):
        instance_report_check(event, data)
        data = dict(data)
        new = data.pop("state", None)
        reason = data.pop("reason", "") or _("Reported by the pipeline.")
        instance = fleet_services.instance_report(
            event=event,
            instance_id=self.kwargs["instance_id"],
            state=new and ManagedInstance.State(new),
            reason=reason,
            **data,
        )
        return instance_data(instance)
