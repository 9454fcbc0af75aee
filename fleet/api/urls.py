from django.urls import path

from fleet.api import views

urlpatterns = [
    path("autoscaling/instances", views.ManagedInstanceListView.as_view(), name="instance-list"),
    path("autoscaling/instances/<int:pk>", views.ManagedInstanceDetailView.as_view(), name="instance-detail"),
    path("autoscaling/instances/<int:pk>/protect", views.InstanceProtectView.as_view(), name="instance-protect"),
    path("autoscaling/instances/<int:pk>/unprotect", views.InstanceUnprotectView.as_view(), name="instance-unprotect"),
]
