"""API doors of the fleet: the inventory, read-only (the pipeline's callbacks, adoption and the reconcile write it),
and an operator's protection from scale-in. Removing an instance is a scale-in decision: events/api."""

from django.db.models import Prefetch
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from access import roles
from fleet import services
from fleet.api import filters, serializers
from fleet.models import InstanceChange, ManagedInstance


class InstancePagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200


class ManagedInstanceListView(generics.ListAPIView):
    pagination_class = InstancePagination
    serializer_class = serializers.ManagedInstanceSerializer
    filterset_class = filters.ManagedInstanceFilter
    ordering_fields = ["created_at", "id", "state", "vm_name"]
    ordering = ["-created_at", "-id"]
    search_fields = ["vm_name", "ip_address", "monitor_target"]
    # The page's queries do not grow with its size: the service comes with the row.
    queryset = ManagedInstance.objects.select_related("config")

    @extend_schema(tags=["fleet"], summary=_("The instances of every service (the inventory), newest first"))
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ManagedInstanceDetailView(generics.RetrieveAPIView):
    serializer_class = serializers.ManagedInstanceDetailSerializer
    queryset = ManagedInstance.objects.select_related("config").prefetch_related(
        Prefetch("history", queryset=InstanceChange.objects.order_by("at", "pk"))
    )

    @extend_schema(tags=["fleet"], summary=_("One instance, with its history"))
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class _InstanceProtectView(generics.GenericAPIView):
    protected = True
    permission_map = {"post": [roles.INSTANCE_PROTECT]}
    serializer_class = serializers.ManagedInstanceDetailSerializer
    queryset = ManagedInstanceDetailView.queryset

    def post(self, request, pk):
        instance = self.get_object()  # 404 for an unknown id
        services.instance_protect(instance_id=instance.pk, protected=self.protected, user=request.user)
        return Response(self.get_serializer(self.get_queryset().get(pk=instance.pk)).data)


class InstanceProtectView(_InstanceProtectView):
    @extend_schema(
        request=None,
        tags=["fleet"],
        summary=_("Protect an instance from scale-in"),
        description=_("A protected instance is never chosen for scale-in. Recorded in its history; safe to repeat."),
    )
    def post(self, request, pk):
        return super().post(request, pk)


class InstanceUnprotectView(_InstanceProtectView):
    protected = False

    @extend_schema(
        request=None,
        tags=["fleet"],
        summary=_("Lift an instance's protection from scale-in"),
        description=_("Scale-in may choose it again (adopted instances start protected). Safe to repeat."),
    )
    def post(self, request, pk):
        return super().post(request, pk)
