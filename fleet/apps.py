from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = _("Fleet")

    def ready(self):
        from access import audit
        from autoscaling import hooks
        from fleet import services

        hooks.config_saved.connect(services.config_saved_receive, dispatch_uid="fleet_config_saved")
        # Saves and deletes through the model; fleet.services records its conditional UPDATEs itself.
        audit.register(self.get_model("ManagedInstance"), exclude_fields=["updated_at", "last_seen_at"])
