from auditlog.models import AbstractLogEntry
from django.db import models
from django.utils.translation import gettext_lazy as _


class AuditEntry(AbstractLogEntry):
    """One change of an audited object (before and after), or one operator action, with who, when and how.

    django-auditlog writes the entries of the models registered with `access.audit.register`; `access.audit`
    stamps each with the door it came through. Entries are never edited: the admin and the API only read them.
    """

    class Action(AbstractLogEntry.Action):
        OPERATION = 4
        choices = (*AbstractLogEntry.Action.choices, (OPERATION, _("operator action")))

    class Door(models.TextChoices):
        ADMIN = "admin", _("admin")
        API = "api", _("API")
        PIPELINE = "pipeline", _("pipeline callback")
        COMMAND = "command", _("management command")
        SYSTEM = "system", _("system (tasks, schedules, webhook)")

    action = models.PositiveSmallIntegerField(_("action"), choices=Action.choices, db_index=True)
    door = models.CharField(_("door"), max_length=16, choices=Door.choices, default=Door.SYSTEM, db_index=True)
    door_detail = models.CharField(
        _("request or command"), max_length=200, blank=True, help_text=_("e.g. POST /api/... or manage.py ...")
    )
    operation = models.CharField(
        _("operation"),
        max_length=40,
        blank=True,
        db_index=True,
        help_text=_("The operator action that made the change (enable, disable, sync, ...); empty for an edit."),
    )

    class Meta(AbstractLogEntry.Meta):
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit trail")
        indexes = [models.Index(fields=["content_type", "object_pk"], name="access_audit_object")]
