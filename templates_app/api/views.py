from dataclasses import asdict

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import PermissionDenied
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from access import roles
from common.errors import ErrorSerializer, PortalError
from templates_app import services
from templates_app.api.serializers import (
    TemplateCreateSerializer,
    TemplateSerializer,
    VirtualMachineQuerySerializer,
    VirtualMachineSerializer,
)
from templates_app.models import VMTemplate

VCENTER_ERROR = OpenApiResponse(ErrorSerializer, description=_("vCenter unreachable or refused the request"))


@extend_schema_view(
    list=extend_schema(summary=_("List templates"), description=_("Filter by ?status=, search by ?search= (name).")),
    retrieve=extend_schema(
        summary=_("Template detail"),
        description=_(
            "One of the VM templates the portal knows: made from a vCenter VM by the portal or imported by a sync."
        ),
    ),
    create=extend_schema(
        summary=_("Turn a vCenter VM into a template"),
        description=_("Validates, then converts in the background: answers 202 with the template (status converting)."),
        request=TemplateCreateSerializer,
        responses={202: TemplateSerializer, 400: OpenApiResponse(description=_("invalid input")), 502: VCENTER_ERROR},
    ),
    destroy=extend_schema(
        summary=_("Delete a template"),
        description=_("Deletes the portal's template; with delete_in_vcenter, the vCenter template too."),
        parameters=[OpenApiParameter("delete_in_vcenter", bool, description=_("Also delete the template in vCenter."))],
        responses={
            204: None,
            409: OpenApiResponse(description=_("in use by an autoscaling config, or still converting")),
            502: VCENTER_ERROR,
        },
    ),
)
class TemplateViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """VM templates the portal knows: made from vCenter VMs by the portal or imported by a sync."""

    queryset = VMTemplate.objects.select_related("created_by").prefetch_related("configs")
    serializer_class = TemplateSerializer
    filterset_fields = ["status", "method"]
    search_fields = ["name"]
    ordering_fields = ["name", "status", "created_at", "updated_at"]
    ordering = ["name"]

    def create(self, request, *args, **kwargs):
        params = TemplateCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        template = services.template_create(**params.validated_data, user=request.user)
        return Response(TemplateSerializer(template).data, status=status.HTTP_202_ACCEPTED)

    def destroy(self, request, *args, **kwargs):
        template = self.get_object()
        flag = request.query_params.get("delete_in_vcenter", "false").strip().lower()
        if flag not in ("true", "false", "1", "0", "yes", "no"):
            raise serializers.ValidationError({"delete_in_vcenter": _("Use true or false.")})
        in_vcenter = flag in ("true", "1", "yes")
        if in_vcenter and not request.user.has_perm(roles.TEMPLATE_DELETE_IN_VCENTER):
            raise PermissionDenied(_("Deleting a template in vCenter is for administrators."))
        try:
            services.template_delete(template=template, delete_in_vcenter=in_vcenter, user=request.user)
        except services.TemplateInUseError as exc:
            raise PortalError(exc.message, code="template_in_use", status=status.HTTP_409_CONFLICT) from None
        except services.TemplateBusyError as exc:
            raise PortalError(exc.message, code="template_busy", status=status.HTTP_409_CONFLICT) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class VirtualMachinePagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 5000


class VirtualMachineListView(GenericAPIView):
    """VMs in vCenter, read live (one PropertyCollector round trip). Templates are left out unless asked for."""

    view_name = _("vCenter VMs")  # the browsable API page (common/api_names.py)

    serializer_class = VirtualMachineSerializer
    pagination_class = VirtualMachinePagination
    filter_backends = []
    permission_map = {"get": ["templates_app.view_vmtemplate"]}

    @extend_schema(
        summary=_("List vCenter VMs"),
        description=_(
            "VMs in vCenter, read live (one PropertyCollector round trip). Templates are left out unless asked for."
        ),
        parameters=[VirtualMachineQuerySerializer],
        responses={200: VirtualMachineSerializer(many=True), 502: VCENTER_ERROR},
    )
    def get(self, request):
        query = VirtualMachineQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        vms = services.vcenter_vms_list(**query.validated_data)
        page = self.paginate_queryset(vms)
        # The dataclasses already have the serializer's shape; asdict keeps a 1,000-VM page fast.
        return self.get_paginated_response([asdict(vm) for vm in page])
