from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = _("Fleet")

    def ready(self):
        from autoscaling import hooks
        from fleet import services

        hooks.config_saved.connect(services.config_saved_receive, dispatch_uid="fleet_config_saved")
