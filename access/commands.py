"""The base of the portal's management commands: their changes are audited as the command door."""

import getpass

from django.core.management.base import BaseCommand

from access import audit


def _os_user():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "?"


class AuditedCommand(BaseCommand):
    def execute(self, *args, **options):
        name = self.__class__.__module__.rsplit(".", 1)[-1]
        detail = f"manage.py {name} (OS user {_os_user()})"
        with audit.door(audit.Door.COMMAND, detail=detail):
            return super().execute(*args, **options)
