"""Reads of the events app: the event history's searches, Jenkins build history (secrets masked)."""

import json

from django.db.models import BooleanField, Expression, F, Q

from autoscaling.models import AutoscalingConfig
from common.clients import jenkins_client


# --- the event history ----------------------------------------------------------------------------------------
class EventHasVm(Expression):
    """True for the events whose VM names or VM IPs hold `value` exactly.

    PostgreSQL: `(vm_names || vm_ips) @> '["value"]'`, the expression of the GIN index event_vms_gin (migration
    0012), so a search reads the index, not the million rows. SQLite: the same answer from json_each (no index)."""

    conditional = True
    output_field = BooleanField()

    def __init__(self, value):
        super().__init__()
        self.value = str(value)
        self.names, self.ips = F("vm_names"), F("vm_ips")

    def get_source_expressions(self):
        return [self.names, self.ips]

    def set_source_expressions(self, exprs):
        self.names, self.ips = exprs

    def as_sql(self, compiler, connection):
        names, names_params = compiler.compile(self.names)
        ips, ips_params = compiler.compile(self.ips)
        return (
            f"(EXISTS (SELECT 1 FROM json_each({names}) WHERE json_each.value = %s)"
            f" OR EXISTS (SELECT 1 FROM json_each({ips}) WHERE json_each.value = %s))",
            [*names_params, self.value, *ips_params, self.value],
        )

    def as_postgresql(self, compiler, connection):
        names, names_params = compiler.compile(self.names)
        ips, ips_params = compiler.compile(self.ips)
        return f"(({names} || {ips}) @> %s::jsonb)", [*names_params, *ips_params, json.dumps([self.value])]


def event_search_condition(term):
    """The events an operator's search term finds, each branch served by an index: a VM name or IP (exactly), a
    service (any config whose name contains the term: read from the small configs table, then the events by their
    indexed service name), a build number or an event id ("41" or "#41")."""
    term = term.replace("\x00", "").strip()
    if not term:
        return Q()
    services = list(
        AutoscalingConfig.objects.filter(service_name__icontains=term).values_list("service_name", flat=True)
    )
    # Only the names of configs: an unknown name would cost the planner a guess of a service's share of the events.
    condition = (EventHasVm(term) | Q(service_name__in=services)) if services else Q(EventHasVm(term))
    number = term.removeprefix("#")
    if number.isascii() and number.isdigit() and len(number) <= 18:
        condition |= Q(build_number=int(number)) | Q(pk=int(number))
    return condition


# --- Jenkins build history (read-only) ----------------------------------------------------------------------
SECRET_PARAMETER_WORDS = ("TOKEN", "PASSWORD", "SECRET", "KEY")


def jenkins_build_public(build):
    """A build as a plain dict for the API, with secret parameters (the callback token) masked."""
    parameters = {
        name: ("********" if any(word in name.upper() for word in SECRET_PARAMETER_WORDS) else value)
        for name, value in (build.parameters or {}).items()
    }
    return {
        "job_name": build.job_name,
        "number": build.number,
        "result": build.result,
        "building": build.building,
        "duration_ms": build.duration_ms,
        "timestamp": build.timestamp,
        "url": build.url,
        "parameters": parameters,
        "queue_id": build.queue_id,
    }


def jenkins_builds_list(*, job_name, limit):
    return [jenkins_build_public(build) for build in jenkins_client().builds(job_name, limit)]


def jenkins_build_get(*, job_name, number):
    return jenkins_build_public(jenkins_client().build(job_name, number))


def jenkins_build_log_get(*, job_name, number):
    return jenkins_client().build_log(job_name, number)
