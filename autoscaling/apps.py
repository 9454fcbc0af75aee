from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AutoscalingConfig(AppConfig):
    name = "autoscaling"
    verbose_name = _("Autoscaling")

    def ready(self):
        from autoscaling import signals

        signals.connect_post_migrate(self)
