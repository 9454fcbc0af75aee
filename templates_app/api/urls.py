from django.urls import path

from templates_app.api.views import TemplateViewSet, VirtualMachineListView

template_list = TemplateViewSet.as_view({"get": "list", "post": "create"})
template_detail = TemplateViewSet.as_view({"get": "retrieve", "delete": "destroy"})

urlpatterns = [
    path("templates", template_list, name="template-list"),
    path("templates/vms", VirtualMachineListView.as_view(), name="template-vm-list"),
    path("templates/<int:pk>", template_detail, name="template-detail"),
]
