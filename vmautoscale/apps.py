from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class VmautoscaleConfig(AppConfig):
    name = "vmautoscale"
    verbose_name = _("VM Autoscale")
