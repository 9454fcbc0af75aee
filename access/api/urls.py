from rest_framework.routers import SimpleRouter

from access.api import views

router = SimpleRouter(trailing_slash=False)
router.register("audit/entries", views.AuditEntryViewSet, basename="audit-entry")

urlpatterns = router.urls
