"""The API's permission check: every view asks for permissions, which the user's role (group) must hold.

`PortalPermission` is the API's default permission class. A user must be authenticated, active and staff;
then the view's permissions apply:
- a view may name them per action (a viewset's action name, e.g. "enable") or per HTTP method ("get", "post")
  in `permission_map`;
- otherwise a view with a model (its queryset) asks for the model's permission, as Django's admin does: view
  for reads, add for POST, change for PUT and PATCH, delete for DELETE (reads included, unlike DRF's
  DjangoModelPermissions);
- anything else is refused: a new view that says nothing answers 403 until it names its permissions.
A method the view does not have answers 405 (to staff; 403 to anyone else).
"""

from rest_framework.permissions import SAFE_METHODS, BasePermission

METHOD_KINDS = {"GET": "view", "HEAD": "view", "OPTIONS": "view", "POST": "add", "PUT": "change",
                "PATCH": "change", "DELETE": "delete"}  # fmt: skip
STANDARD_ACTIONS = {"list", "retrieve", "create", "update", "partial_update", "destroy", "metadata", None}


def staff_user(user):
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def _model_of(view):
    queryset = getattr(view, "queryset", None)
    if queryset is None:
        try:
            queryset = view.get_queryset()
        except (AttributeError, AssertionError):
            return None
    return queryset.model


def required_permissions(request, view):
    """The permissions the request needs ("app_label.codename"), or None when the view names none (refused)."""
    mapping = getattr(view, "permission_map", None) or {}
    action = getattr(view, "action", None)
    if action is not None and action in mapping:
        return list(mapping[action])
    method = request.method.lower()
    if method in mapping:
        return list(mapping[method])
    if action not in STANDARD_ACTIONS and request.method not in SAFE_METHODS:
        return None  # an extra action that changes something must say which permission it needs
    model = _model_of(view)
    kind = METHOD_KINDS.get(request.method)
    if model is None or kind is None:
        return None
    return [f"{model._meta.app_label}.{kind}_{model._meta.model_name}"]


class PortalPermission(BasePermission):
    def has_permission(self, request, view):
        if not staff_user(request.user):
            return False
        if request.method not in view.allowed_methods:
            return True  # nothing to run: the view answers 405
        perms = required_permissions(request, view)
        return perms is not None and request.user.has_perms(perms)
