"""A custom PromQL expression checked by Prometheus' own parser when a config is saved.

The rule file on the host holds every enabled service's rule, and promtool refuses the whole file for one bad
expression: checked per service at save time, one config's mistake never blocks the other services' push.
"""

import logging

from django.utils.translation import gettext as _

from common.clients import prometheus_client
from integrations.errors import IntegrationError

logger = logging.getLogger(__name__)
CHECK_TIMEOUT = 5.0


def promql_parse_error(expression, threshold):
    """A message when Prometheus cannot parse the alert expression the rule would hold, `(expression) > threshold`;
    None when it parses, or when Prometheus cannot be asked (the pass still validates the file with promtool)."""
    threshold = threshold if isinstance(threshold, int | float) else 0
    try:
        error = prometheus_client(timeout=CHECK_TIMEOUT).parse_error(f"({expression.strip()}) > {threshold:g}")
    except IntegrationError as exc:
        logger.warning("the custom PromQL expression was not checked: %s", exc)
        return None
    if error is None:
        return None
    return _("Prometheus cannot parse the expression: %(error)s") % {"error": error}
