"""django-q entry points of the templates app: load by id, call a service. Each is safe to run twice."""

from templates_app import services


def template_convert(template_id):
    """Convert a template's source VM in vCenter and record ready/failed on the row."""
    services.template_convert(template_id=template_id)


def templates_sync():
    """Refresh templates from vCenter (for a schedule); returns the summary line."""
    return services.templates_sync().summary()
