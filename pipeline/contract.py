"""The Jenkins contract, written once: the job of a service and the parameters of its builds.

The portal renders each service's job from it (autoscaling/rendering.py: the job's parameter definitions and the
Generic Webhook Trigger's variables) and triggers builds with it (the trigger's `event_jenkins_parameters`); the
pipeline's step commands read the same names from their environment (Jenkins exports every build parameter).
jenkins/Jenkinsfile.autoscale declares no `parameters {}` of its own: a declarative `parameters` directive would
replace the job's definitions, and with them the per-service defaults the portal renders, on the first build.

Standard library only: the portal imports it, and so does the pipeline on a Jenkins agent without Django.
"""

from dataclasses import dataclass, field

JOB_PREFIX = "vmautoscale-"


def job_name(service_name):
    """The Jenkins job of a service."""
    return f"{JOB_PREFIX}{service_name}"


@dataclass(frozen=True)
class Parameter:
    name: str
    description: str
    secret: bool = False  # a password parameter: Jenkins masks it, and the job never stores a default
    default: str = ""  # when the portal has no value

    @property
    def key(self):
        """The keyword `build_parameters` takes it by."""
        return self.name.lower()


# The Generic Webhook Trigger of each job (the seed lists it) reads only this variable from a request's JSON body, and
# its token is this Jenkins "Secret text" credential (never a token written into config.xml). Every other parameter
# (the callback, the placement) keeps the job's default: a caller can start a service's job, nothing more.
TRIGGER_VARIABLES = ("SERVICE_NAME",)
TRIGGER_CREDENTIAL_ID = "vmautoscale-trigger"

PARAMETERS = (
    Parameter("EVENT_ID", "Scale-out event id in the portal."),
    Parameter("SERVICE_NAME", "Service to scale out."),
    Parameter("CALLBACK_URL", "Portal URL the pipeline reports each step to."),
    Parameter("CALLBACK_TOKEN", "Token valid for this event only; given by the portal with each build.", secret=True),
    Parameter("VM_COUNT", "Number of VMs to add.", default="1"),
    Parameter("TEMPLATE_NAME", "vCenter template to clone."),
    Parameter("VM_NAME_PATTERN", "Name of new VMs; {service} and {n} are filled in.", default="{service}-{n:03d}"),
    Parameter("DATACENTER", "Datacenter of new VMs."),
    Parameter("CLUSTER", "Cluster of new VMs."),
    Parameter("RESOURCE_POOL", "Resource pool of new VMs."),
    Parameter("FOLDER", "VM folder of new VMs."),
    Parameter("DATASTORE", "Datastore of new VMs."),
    Parameter("NETWORK", "Network (port group) of new VMs."),
    Parameter("IP_POOL_ID", "Portal IP pool the new VMs take their address from."),
    Parameter("F5_POOL", "F5 pool the new VMs join."),
    Parameter("F5_PARTITION", "F5 partition of the pool.", default="Common"),
    Parameter("F5_MEMBER_PORT", "Port of the new pool members.", default="80"),
    Parameter("ACTION", "scale_out (add VM_COUNT VMs) or scale_in (remove INSTANCE_IDS).", default="scale_out"),
    Parameter("INSTANCE_IDS", "Scale-in: the portal instance ids to remove, comma-separated."),
    Parameter("DRAIN_TIMEOUT", "Scale-in: seconds to wait for the F5 member's connections to end.", default="300"),
)
ACTIONS = ("scale_out", "scale_in")
PARAMETER_NAMES = tuple(parameter.name for parameter in PARAMETERS)

# What the step commands read besides the build parameters: set on the agent (or its Jenkins node), bound by
# `withCredentials`, or set by Jenkins itself. docs/pipeline.md describes each.
AGENT_VARIABLES = (
    "PORTAL_HOME",
    "PORTAL_PYTHON",
    "PORTAL_URL",
    "PORTAL_TIMEOUT",
    "PORTAL_DOWN_WAIT",
    "PIPELINE_STATE",
    "VCENTER_URL",
    "VCENTER_USER",
    "VCENTER_PASSWORD",
    "VCENTER_VERIFY_TLS",
    "VCENTER_TIMEOUT",
    "F5_URL",
    "F5_USER",
    "F5_PASSWORD",
    "F5_VERIFY_TLS",
    "F5_TIMEOUT",
    "VM_TASK_TIMEOUT",
    "GUEST_IP_TIMEOUT",
    "F5_HEALTH_TIMEOUT",
    "SHUTDOWN_TIMEOUT",
    "POLL_INTERVAL",
    "PING_COMMAND",
    "BUILD_NUMBER",
    "BUILD_URL",
)


def build_parameters(**values):
    """Parameter name -> value (a string) for every parameter of the contract, from keywords named by its `key`
    (event_id=..., callback_token=...); None or "" becomes the parameter's default. Every parameter must be given,
    and nothing else: a parameter added here without a value everywhere fails loudly instead of going missing."""
    keys = {parameter.key for parameter in PARAMETERS}
    missing, unknown = sorted(keys - set(values)), sorted(set(values) - keys)
    if missing or unknown:
        raise TypeError(f"build_parameters: missing {missing}, unknown {unknown}")
    return {
        parameter.name: parameter.default if values[parameter.key] in (None, "") else str(values[parameter.key])
        for parameter in PARAMETERS
    }


# --- step messages -----------------------------------------------------------------------------------------------
def gettext_noop(message):
    """Marks a step message id for the portal's catalog (makemessages scans pipeline/ for it); the portal translates
    it when the message is shown, in the reader's language. The pipeline itself has no Django and no catalog."""
    return message


@dataclass(frozen=True)
class StepMessage:
    """A step's message as the pipeline reports it: its English text, and its id and parameters for the portal."""

    msgid: str
    params: dict = field(default_factory=dict)

    def __str__(self):
        # Without parameters the id is the text itself (it may be a text from vCenter with a % in it).
        return self.msgid % self.params if self.params else self.msgid


def message_fields(message, name="message"):
    """The callback body's fields `name`, `name_msgid` and `name_params` (events/api) for a StepMessage, or `name`
    only for a plain text (an error from vCenter, F5, ...). A parameter that is a StepMessage itself is sent as
    {"msgid", "params"} (common/messages.py shows it in the reader's language too)."""
    if isinstance(message, StepMessage):
        return {name: str(message), f"{name}_msgid": message.msgid, f"{name}_params": _params(message.params)}
    return {name: str(message or "")}


def _params(params):
    return {
        key: {"msgid": value.msgid, "params": _params(value.params)} if isinstance(value, StepMessage) else value
        for key, value in params.items()
    }


def reserved_message(addresses, skipped):
    """The ip_allocate step's message."""
    if skipped:
        return StepMessage(
            gettext_noop("Reserved %(addresses)s (skipped %(skipped)s: answered ping)."),
            {"addresses": ", ".join(addresses), "skipped": ", ".join(skipped)},
        )
    return StepMessage(gettext_noop("Reserved %(addresses)s."), {"addresses": ", ".join(addresses)})
