"""IP pool endpoints for the scale-out pipeline (scripts/get-available-ip.py), authenticated by the event's token.

All under the event's callback URL, /api/events/<event_id>/callback/ip/...; the caller sends
`Authorization: Bearer <callback token>`, the token the portal gave that event's Jenkins build. A token opens only
its own event, and only while the event runs.
"""

from django.db import transaction
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from autoscaling import ipam
from events import callbacks


def callback_event(request, event_id, *, allow_finished=False):
    """The event whose callback token the request carries (the events app's check: 401, 403 or 404 otherwise)."""
    scheme, _sep, token = request.headers.get("Authorization", "").partition(" ")
    try:
        return callbacks.event_callback_authenticate(
            event_id=event_id, token=token.strip() if scheme.lower() == "bearer" else "", allow_finished=allow_finished
        )
    except callbacks.CallbackRefused as exc:
        raise CallbackRefusedError(exc.message, exc.status_code) from None


class CallbackRefusedError(exceptions.APIException):
    def __init__(self, detail, status_code):
        super().__init__(detail)
        self.status_code = status_code


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
    401: OpenApiResponse(description=_("Missing or wrong callback token.")),
    409: OpenApiResponse(description=_("Not possible now: pool exhausted, no pool, or not this event's address.")),
}


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


def ipam_conflict(exc):
    return Response({"detail": exc.message, "code": exc.code}, status=status.HTTP_409_CONFLICT)


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


class PipelineView(APIView):
    # The callback token is checked in each handler (callback_event); no user session or API token applies here.
    authentication_classes = [CallbackTokenChallenge]
    permission_classes = [AllowAny]

    # Giving addresses back stays possible after the event ended (e.g. cancelled by an operator while the build ran),
    # so the pipeline's undo never leaves one reserved; taking or confirming one is not.
    allow_finished = False

    def event_and_pool(self, request, event_id):
        event = callback_event(request, event_id, allow_finished=self.allow_finished)
        return event, ipam.ip_pool_for_event(event=event)


class IpListView(PipelineView):
    @extend_schema(
        tags=["pipeline callbacks"],
        summary=_("The event's IP allocations"),
        responses={200: AllocationSerializer, **ERRORS},
    )
    def get(self, request, event_id):
        try:
            event, pool = self.event_and_pool(request, event_id)
        except ipam.IpamError as exc:
            return ipam_conflict(exc)
        rows = pool.allocations.filter(event=event).order_by("reserved_at", "id")
        return Response({"results": [allocation_data(a, pool) for a in rows]})


class IpReserveView(PipelineView):
    @extend_schema(
        tags=["pipeline callbacks"],
        summary=_("Reserve the next free address of the event's pool"),
        request=None,
        responses={201: AllocationSerializer, **ERRORS},
    )
    def post(self, request, event_id):
        try:
            event, pool = self.event_and_pool(request, event_id)
            with transaction.atomic():
                allocation = ipam.ip_reserve(pool=pool, event=event)
        except ipam.IpamError as exc:
            return ipam_conflict(exc)
        return Response(allocation_data(allocation, pool), status=status.HTTP_201_CREATED)


class IpConfirmView(PipelineView):
    @extend_schema(
        tags=["pipeline callbacks"],
        summary=_("Mark a reserved address as in use by a VM"),
        request=ConfirmSerializer,
        responses={200: AllocationSerializer, 400: OpenApiResponse(description=_("Invalid body.")), **ERRORS},
    )
    def post(self, request, event_id):
        body = ConfirmSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            event, pool = self.event_and_pool(request, event_id)
            allocation = ipam.ip_confirm(
                pool=pool, address=body.validated_data["address"], event=event, vm_name=body.validated_data["vm_name"]
            )
        except ipam.IpamError as exc:
            return ipam_conflict(exc)
        return Response(allocation_data(allocation, pool))


class IpSkipView(PipelineView):
    @extend_schema(
        tags=["pipeline callbacks"],
        summary=_("Record that a reserved address answered a ping (it is skipped)"),
        request=SkipSerializer,
        responses={200: AllocationSerializer, 400: OpenApiResponse(description=_("Invalid body.")), **ERRORS},
    )
    def post(self, request, event_id):
        body = SkipSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            event, pool = self.event_and_pool(request, event_id)
            allocation = ipam.ip_mark_skipped(
                pool=pool, address=body.validated_data["address"], event=event, note=body.validated_data["note"]
            )
        except ipam.IpamError as exc:
            return ipam_conflict(exc)
        return Response(allocation_data(allocation, pool))


class IpReleaseView(PipelineView):
    allow_finished = True

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
        body = ReleaseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            event, pool = self.event_and_pool(request, event_id)
            released = ipam.ip_release(pool=pool, event=event, address=body.validated_data.get("address"))
        except ipam.IpamError as exc:
            if exc.code == "not_reserved":
                # Releasing an address that is not (or no longer) this event's is a no-op for the pipeline's undo.
                return Response({"released": [], "detail": exc.message})
            return ipam_conflict(exc)
        return Response({"released": [a.address for a in released]})
