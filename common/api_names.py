"""The names of the browsable API's pages (its title, heading and breadcrumbs), in the reader's language.

DRF names a page after its view class ("Scale Out Event List"), in English whatever the language. Set as
REST_FRAMEWORK["VIEW_NAME_FUNCTION"]: a view's own `view_name` (a lazy translation) or an extra action's `name`
wins; a view of a model is
named after the model's verbose names, which are translated (the list: plural; one object: singular).
"""

from django.utils.text import capfirst
from rest_framework.views import get_view_name as drf_view_name


def view_name(view):
    own = getattr(view, "view_name", None) or getattr(view, "name", None)  # a view's own, or an extra action's
    if own:
        return str(own)
    model = _model(view)
    if model is None:
        return drf_view_name(view)
    one = getattr(view, "suffix", None) == "Instance" or (
        getattr(view, "suffix", None) is None
        and (getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", "pk"))
        in (getattr(view, "kwargs", None) or {})
    )
    meta = model._meta
    return str(capfirst(meta.verbose_name if one else meta.verbose_name_plural))


def _model(view):
    queryset = getattr(view, "queryset", None)
    if queryset is not None:
        return queryset.model
    serializer = getattr(view, "serializer_class", None)
    return getattr(getattr(serializer, "Meta", None), "model", None)
