"""The one error shape of the API, the one error type the doors raise, and the one DRF exception handler.

Every error under /api/ answers `application/json` in one shape:

    {"detail": "<one line for a human>", "code": "<machine code>", "errors": {"<field>": ["<reason>", ...]}}

`errors` names the refused fields of a 400, nested fields joined with dots ("alerts.0.labels.service"), and is
{} for every other error. A few errors add context members next to these three, each documented with its
endpoint (a refused scale-out's `decision` and `outcome`; an external system's `system` and `retryable`).

Django-level errors under /api/ (no such path, an oversized body, a crash) answer the same shape through
`handler400` / `handler403` / `handler404` / `handler500` and `api_not_found`; elsewhere (the admin) Django's own
pages stay. Knows no app: the apps turn their own refusals into PortalError in their doors.
"""

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, resolve
from django.utils.translation import gettext as _
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from integrations.errors import IntegrationError

API_PREFIX = "/api/"


class PortalError(Exception):
    """A refusal a door answers as it is: `message` for a human, `code` for a program, the HTTP `status`.

    `fields` maps field names to reasons (a 400), `headers` adds response headers (a 401's challenge),
    `extra` adds documented context members to the body.
    """

    def __init__(self, message, *, code, status, fields=None, headers=None, extra=None):
        super().__init__(message)
        self.message = str(message)
        self.code = code
        self.status = status
        self.fields = flatten_errors(fields or {})
        self.headers = headers or {}
        self.extra = extra or {}

    def __str__(self):
        return self.message


class ErrorSerializer(serializers.Serializer):
    """The one error shape, for the API schema."""

    detail = serializers.CharField()
    code = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


def error_body(detail, *, code, errors=None, extra=None):
    return {"detail": str(detail), "code": code, "errors": errors or {}, **(extra or {})}


def flatten_errors(detail, prefix=""):
    """DRF's nested error detail as {"a.0.b": ["reason", ...]}: plain strings only, never a repr."""
    flat = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            flat.update(flatten_errors(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    items = detail if isinstance(detail, list | tuple) else [detail]
    messages = []
    for index, item in enumerate(items):
        if isinstance(item, dict | list | tuple):
            flat.update(flatten_errors(item, f"{prefix}.{index}" if prefix else str(index)))
        else:
            messages.append(str(item))
    if messages:
        key = prefix or api_settings.NON_FIELD_ERRORS_KEY
        flat[key] = [*flat.get(key, []), *messages]
    return flat


def invalid(errors, *, extra=None):
    """A 400 for field -> reasons: the one-line detail names the first refused field."""
    fields = flatten_errors(errors)
    if not fields:
        return PortalError(_("Invalid input."), code="invalid", status=400, extra=extra)
    field, messages = next(iter(fields.items()))
    if field == api_settings.NON_FIELD_ERRORS_KEY:
        detail = messages[0]
    else:
        detail = _("Invalid %(field)s: %(reason)s") % {"field": field, "reason": messages[0]}
    return PortalError(detail, code="invalid", status=400, fields=fields, extra=extra)


def portal_error(exc):
    """The PortalError an exception answers as, or None when it is not an answer (a bug: Django's 500)."""
    if isinstance(exc, PortalError):
        return exc
    if isinstance(exc, IntegrationError):
        return PortalError(
            exc.message,
            code=exc.code or f"{exc.system}_error",
            status=502,
            extra={"system": exc.system, "retryable": not exc.permanent},
        )
    if isinstance(exc, exceptions.ValidationError):
        return invalid(exc.detail)
    if isinstance(exc, DjangoValidationError):  # a model's or service's refusal
        if not hasattr(exc, "error_dict"):
            return invalid(exc.messages)
        return invalid({api_settings.NON_FIELD_ERRORS_KEY if k == NON_FIELD_ERRORS else k: v for k, v in exc})
    if isinstance(exc, RequestDataTooBig):
        return too_large()
    if isinstance(exc, Http404):
        return PortalError(exc.args[0] if exc.args else _("Not found."), code="not_found", status=404)
    if isinstance(exc, PermissionDenied):
        return PortalError(
            exc.args[0] if exc.args else exceptions.PermissionDenied.default_detail,
            code="permission_denied",
            status=403,
        )
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        detail = exc.detail
        if isinstance(detail, list | dict):  # an APIException given a list or dict: flatten like a 400
            fields = flatten_errors(detail)
            first = next(iter(fields.values()), [str(exc.default_detail)])[0]
            return PortalError(first, code=exc.default_code, status=exc.status_code, fields=fields, headers=headers)
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        return PortalError(detail, code=code, status=exc.status_code, headers=headers)
    return None


def too_large():
    return PortalError(_("The request body is too large."), code="request_too_large", status=413)


def exception_handler(exc, context):
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: every error of every DRF view in the one shape."""
    error = portal_error(exc)
    if error is None:
        return None
    set_rollback()
    body = error_body(error.message, code=error.code, errors=error.fields, extra=error.extra)
    return Response(body, status=error.status, headers=error.headers)


def json_error(error):
    """The one shape outside DRF (Django's error handlers, the /api/ catch-all)."""
    body = error_body(error.message, code=error.code, errors=error.fields, extra=error.extra)
    response = JsonResponse(body, status=error.status, json_dumps_params={"ensure_ascii": False})
    for name, value in error.headers.items():
        response[name] = value
    return response


def is_api(request):
    return request.path_info.startswith(API_PREFIX)


@csrf_exempt  # a 404 is the answer to any method; the CSRF page would be HTML
def api_not_found(request, *args, **kwargs):
    """The last /api/ route: a path no endpoint has (or the slash-less path of one that ends with a slash)."""
    if settings.APPEND_SLASH and not request.path_info.endswith("/"):
        # CommonMiddleware cannot see that /api/schema means /api/schema/: this route matches both.
        try:
            match = resolve(request.path_info + "/", getattr(request, "urlconf", None))
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
    error = PortalError(_("No such API endpoint: %(path)s") % {"path": request.path}, code="not_found", status=404)
    return json_error(error)


def handler400(request, exception=None):
    if not is_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return json_error(too_large())
    return json_error(PortalError(_("Bad request."), code="bad_request", status=400))


def handler403(request, exception=None):
    if not is_api(request):
        return defaults.permission_denied(request, exception)
    return json_error(portal_error(exception or PermissionDenied()))


def handler404(request, exception=None):
    if not is_api(request):
        return defaults.page_not_found(request, exception)
    return api_not_found(request)


def handler500(request):
    if not is_api(request):
        return defaults.server_error(request)
    return json_error(
        PortalError(_("The portal failed to answer; the error is in its log."), code="server_error", status=500)
    )
