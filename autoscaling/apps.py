from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AutoscalingConfig(AppConfig):
    name = "autoscaling"
    verbose_name = _("Autoscaling")

    def ready(self):
        from access import audit
        from autoscaling import signals

        signals.connect_post_migrate(self)
        # Every change of a config or a pool in the audit trail; the provisioning pass's bookkeeping is not one.
        audit.register(
            self.get_model("AutoscalingConfig"),
            exclude_fields=["updated_at", "sync_state", "synced_at", "synced_digest", "sync_error"],
        )
        audit.register(self.get_model("IpPool"), exclude_fields=["updated_at"])
