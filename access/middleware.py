"""Says through which door a request's changes come: the admin, the API or a pipeline callback."""

import re

from access import audit

CALLBACK = re.compile(r"^/api/events/\d+/callback/")


def door_of(request):
    path = request.path_info
    if path.startswith("/admin/"):
        return audit.Door.ADMIN
    if CALLBACK.match(path):
        return audit.Door.PIPELINE
    if path.startswith("/api/webhook/"):
        return audit.Door.SYSTEM
    if path.startswith("/api/"):
        return audit.Door.API
    return audit.Door.SYSTEM


class AuditDoorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        detail = f"{request.method} {request.path_info}"
        if request.method == "POST" and request.path_info.startswith("/admin/"):
            # An admin action is posted to the change list; its name says what was pressed.
            action = request.POST.get("action", "")
            if action:
                detail = f"{detail} action={action}"
        with audit.door(door_of(request), detail=detail, request=request):
            return self.get_response(request)
