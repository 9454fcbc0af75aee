from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TemplatesAppConfig(AppConfig):
    name = "templates_app"
    verbose_name = _("VM templates")

    def ready(self):
        from access import audit

        # Every change of a template in the audit trail; a sync that only refreshes the time writes none.
        audit.register(self.get_model("VMTemplate"), exclude_fields=["updated_at", "synced_at"])
