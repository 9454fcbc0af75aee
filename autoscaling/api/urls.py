from django.urls import path
from rest_framework.routers import SimpleRouter

from autoscaling.api import views

router = SimpleRouter(trailing_slash=False)
router.register("autoscaling/configs", views.AutoscalingConfigViewSet, basename="autoscaling-config")
router.register("autoscaling/ip-pools", views.IpPoolViewSet, basename="ip-pool")
router.register("autoscaling/provisioning-runs", views.ProvisioningRunViewSet, basename="provisioning-run")

urlpatterns = [
    path("autoscaling/sync", views.SyncView.as_view(), name="autoscaling-sync"),
    *router.urls,
]
