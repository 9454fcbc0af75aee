"""The audit trail, read-only: GET /api/audit/entries (filters) and /api/audit/entries/<id>."""

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.pagination import PageNumberPagination

from access.api import filters, serializers
from access.models import AuditEntry


class AuditPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


@extend_schema_view(
    list=extend_schema(summary=_("The audit trail, newest first (filter by actor, door, action, model, time)"),
                       tags=["audit"]),
    retrieve=extend_schema(summary=_("One audit entry"), tags=["audit"]),
)  # fmt: skip
class AuditEntryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = serializers.AuditEntrySerializer
    queryset = AuditEntry.objects.select_related("actor", "content_type")
    filterset_class = filters.AuditEntryFilter
    pagination_class = AuditPagination
    search_fields = ["object_repr", "door_detail"]
    ordering_fields = ["timestamp", "id"]
    ordering = ["-timestamp", "-id"]
