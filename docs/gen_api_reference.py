"""Regenerate the endpoint and schema sections of docs/api-reference.md from the OpenAPI schema.

    .venv/bin/python docs/gen_api_reference.py          # rewrite the generated part in place
    .venv/bin/python docs/gen_api_reference.py --check  # exit 1 when the file differs from what would be written

Everything between the BEGIN/END GENERATED markers comes from the schema (drf-spectacular, generated in English)
plus the per-endpoint notes below; the rest of the file is written by hand. tests/test_docs_api.py checks that
every endpoint (method + path) of the schema is documented and that the document lists no other.
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "api-reference.md"
BEGIN = "<!-- BEGIN GENERATED ENDPOINTS (docs/gen_api_reference.py) -->"
END = "<!-- END GENERATED ENDPOINTS -->"
METHODS = ("get", "post", "put", "patch", "delete")

OPERATOR = "operator (session, `Token`, or basic)"
AUTH_LABELS = {
    "cookieAuth": "session",
    "knoxApiToken": "`Authorization: Token ...`",
    "basicAuth": "basic",
    "eventCallbackToken": "the event's callback token (`Authorization: Bearer $CALLBACK_TOKEN`)",
}

# Tag order and headings.
TAGS = [
    ("templates", "Templates"),
    ("autoscaling", "Autoscaling configs and provisioning"),
    ("ip-pools", "IP pools"),
    ("webhook", "Alertmanager webhook"),
    ("events", "Scale-out events, notifications and decisions"),
    ("pipeline callbacks", "Pipeline callbacks"),
    ("jenkins", "Jenkins build history"),
    ("monitoring", "Monitoring"),
    ("audit", "Audit trail"),
]

# What the schema does not say: behaviour, errors and their messages (seen in the code and in the lab).
NOTES = {
    "GET /api/autoscaling/configs/{id}/replay": (
        "Replays the saved policy over the service's recorded metric (`?period=1h|6h|24h|7d|30d`, default `7d`; "
        "`?step=` seconds, default the rules' evaluation interval read from Prometheus, or period / 43,200 when "
        "that is longer) through the same `decide()` the live loop calls: "
        "a new VM counts after the service's median provisioning time (its succeeded scale-outs; 300 s when none), "
        "a removed one after its drain, the load spreads over the VMs in service. `current` has the would-be "
        "events with their reasons (in the reader's language, and as `reason_msgid` / `reason_params`), the "
        "replayed fleet and load at every step, `vm_hours` and `minutes_above`; `recorded` what happened. A "
        "disabled config replays as if enabled. Saves nothing. 400 for a bad period or step; 502 with "
        "`system: 'prometheus'` when Prometheus cannot be read."
    ),
    "POST /api/autoscaling/configs/{id}/replay": (
        'The same with a JSON body `{"period": "7d", "step": 60, "policy": {"threshold": 60, '
        '"cooldown_seconds": 120}}`: the edited policy values are validated as the config\'s (400 names them '
        "`policy.<field>`; only policy fields, not the metric) and replayed on the same series as the saved policy; "
        '`edited` holds that run and `comparison` the sentence ("Would have scaled out 14 times instead of 3, '
        '..., +41.0 VM-hours, 12 minutes above the threshold instead of 95."). Nothing is saved: a viewer may '
        "call it."
    ),
    "POST /api/templates": (
        "Answers **202** at once with the template in status `converting`; a background task converts it and the "
        "template becomes `ready` or `failed` (with `last_error`). 400 names the field: no such VM in vCenter, the "
        "VM is already a template (sync it instead), a powered-on VM with `method=mark` and `power_off_allowed` "
        "false, a name already used in the portal or in vCenter. 502 when vCenter cannot be reached or refuses "
        "(the error's `code`, `system: 'vcenter'` and `retryable`)."
    ),
    "DELETE /api/templates/{id}": (
        "`?delete_in_vcenter=true` also deletes it in vCenter. **409** while an autoscaling config uses it "
        "(`Template T is used by the autoscaling config(s) C: point them at another template first.`) or while "
        "it is still converting."
    ),
    "GET /api/templates/vms": (
        "Read live from vCenter in one PropertyCollector round trip; `?name=` matches part of the name (any "
        "case), `?power_state=poweredOn|poweredOff|suspended`, `?include_templates=true`; `page_size` up to "
        "5000. 502 when vCenter cannot be reached."
    ),
    "POST /api/autoscaling/configs": (
        "Validation answers 400 with every refused field and its reasons in one answer (field errors, unknown "
        "fields, cross-field rules, the template and the pool together): `max_instances` below `min_instances`, "
        "threshold outside 1-100, a template that is not `ready`, a pool with fewer addresses than "
        "`max_instances`, an enabled config without `f5_pool`, a `vm_name_pattern` with anything but `{service}` "
        "and `{n}` (a width of at most 8, e.g. `{n:03d}`), a custom PromQL expression that contains a comparison "
        "or that Prometheus cannot parse, a monitored instance outside `MONITORED_NETWORKS` (or a host name "
        "outside `MONITORED_DOMAINS`), a service name that is not a lowercase slug, a `scale_in_threshold` so "
        "close to the `threshold` that removing a VM at the scale-in level would push the average over the "
        "scale-out level at some fleet size between min and max (the flap guard: `Too close to the scale-out "
        "threshold: at the scale-in threshold of 45 % on 2 VMs, removing 1 leaves 90 % on 1, above the scale-out "
        "threshold of 80 %, so the service would scale in and out by turns. Use a scale-in threshold of at most "
        "40 %.`). `template` and `ip_pool` take an id or a name. `dry_run: true` decides and records every "
        "decision of the service but triggers nothing. Saving asks for a provisioning pass (see `sync_state`)."
    ),
    "PUT /api/autoscaling/configs/{id}": (
        "As POST. The `service_name` cannot change once the service has scale-out events (400)."
    ),
    "PATCH /api/autoscaling/configs/{id}": "As PUT, with only the fields you send.",
    "DELETE /api/autoscaling/configs/{id}": (
        "**409** when the service has scale-out events (they keep its history): disable it instead. Its rule, "
        "route, targets and Jenkins job go with the next provisioning pass."
    ),
    "POST /api/autoscaling/configs/{id}/enable": (
        "400 with the reasons when the config cannot be enabled (e.g. template not ready, no IP pool). The push "
        "to Prometheus, Alertmanager and Jenkins happens in the background: watch `sync_state`, `synced_at`, "
        "`sync_error`."
    ),
    "POST /api/autoscaling/configs/{id}/suspend": (
        "Body `{processes: [scale_out|scale_in|replace|intake, ...], reason}` (no `processes`: all four; 400 on "
        "an unknown one). A process already suspended keeps its first suspension. While suspended, decisions that "
        "need it are recorded as `suspended` with the operator, the time, the reason and what they would have "
        "done (`count`); a suspended `intake` still stores every notification. Answers the config, whose "
        "`suspensions` lists what is suspended. Permission `autoscaling.suspend_scaling` (operator)."
    ),
    "POST /api/autoscaling/configs/{id}/resume": (
        "Body `{processes: [...]}` (no `processes`: every suspended one). Answers the config."
    ),
    "POST /api/autoscaling/configs/{id}/resume-breaker": (
        "Closes the service's circuit breaker now: its count of consecutive failed scale-outs starts again from 0 "
        "(`breaker.resumed_at`, `breaker.resumed_by`). While open (`breaker.state: open`, after "
        "`SCALE_OUT_BREAKER_FAILURES` failures) scale-outs are recorded as `breaker_open` until a single trial "
        "scale-out at `breaker.retry_at`. Answers the config."
    ),
    "GET /api/audit/entries": (
        "Read-only. Filters: `actor` (user name), `door` (`admin`, `api`, `pipeline`, `command`, `system`), `action` "
        "(`create`, `update`, `delete`, `operation`), `operation` (`enable`, `disable`, `sync`, `reconcile`, "
        "`scale_out`, `protect`, ...), `model` (`app_label.model`, e.g. `autoscaling.autoscalingconfig`), "
        "`object_pk`, `since`, `until` (ISO 8601); `search` (object, request or command); `page_size` up to 500. "
        "`changes` maps each changed field to `[before, after]`."
    ),
    "POST /api/autoscaling/sync": (
        "Always 202. `queued: false` when a pass was already waiting (it serves this request too); `run` is the "
        "id to follow at `/api/autoscaling/provisioning-runs/{id}`."
    ),
    "POST /api/autoscaling/ip-pools": (
        "400 names the field: not a CIDR network or host bits set, an address outside the network or equal to "
        "its network/broadcast address, `last_address` before `first_address`, the gateway inside the range or "
        "outside the network, an excluded address outside the range."
    ),
    "DELETE /api/autoscaling/ip-pools/{id}": (
        "**409** while a config uses the pool (`The IP pool P is used by the configs C; give them another pool "
        "first.`) or while addresses are reserved or in use."
    ),
    "PUT /api/autoscaling/ip-pools/{id}": (
        "400 when addresses still allocated would fall outside the new range, or a config using the pool needs "
        "more addresses than the new range has."
    ),
    "POST /api/webhook/autoscale/{service}": (
        "Alertmanager's webhook (payload version 4). Authenticated by `Authorization: Bearer $WEBHOOK_TOKEN` (or "
        "basic auth with `WEBHOOK_BASIC_USER` / `WEBHOOK_BASIC_PASSWORD` when set): **401** `Missing or wrong "
        "webhook credentials.` and nothing stored otherwise. **400** with the reason on a malformed body "
        "(`{detail: 'Invalid <field>: <reason>', code: 'invalid', errors: {...}}`). Otherwise **202** as soon as "
        "the notification is stored: `{notification, status: 'accepted', url}`. The decider decides its alerts "
        "behind the answer, in arrival order (usually within a fraction of a second; `decided_at` on the "
        "notification's `url` says when), one decision per alert: `scale_out` or `scale_in` (with the `event` id), "
        "`duplicate`, `unknown_service`, `disabled`, `cooldown`, `at_max`, `already_scaling`, `at_min`, "
        "`warming_up`, `no_candidate`, `flap_hold`, `not_a_signal`, `resolved`, each with its reason (a dry-run "
        "config's would-be `scale_out` or `scale_in` has no `event`). An alert labelled "
        '`direction="in"` asks for a scale-in; any other (`direction="out"`, or no such label) for a scale-out.'
    ),
    "POST /api/autoscaling/events": (
        "An operator's manual scale-out (`{service_name, vm_count?, reason?}`); it goes through the same "
        "decisions as an alert. **201** with the event; **400** for an unknown service; **409** when the "
        "decision is not to scale, with the reason and the decision id, e.g. `{detail: 'In cooldown: the last "
        "scale-out began 12 s ago and the cooldown is 60 s (until ...)', code: 'not_scaled', errors: {}, outcome: "
        "'cooldown', decision: 4}`. For a dry-run config a decision to scale out answers **409** with `code: "
        "'dry_run'`, `outcome: 'scale_out'` and the would-be reason (`Dry run, nothing triggered: would scale out "
        "by 2 VM(s). ...`): recorded, nothing triggered."
    ),
    "GET /api/autoscaling/events": (
        "Filters: `service`, `status` (repeatable), `source`, `created_after`, `created_before` (ISO 8601), "
        "`build_number`, `vm` (an exact VM name or IP address: the events that created or removed it, served by "
        "an index); `search` (service, alert name, exact build number: a substring search that reads every row, "
        "slow on a long history); `ordering` (`created_at`, `finished_at`, `id`, `service_name`, `status`, `-` for "
        "descending); `page_size` up to 200. `count` is exact up to 10,000 matching events (`count_exact: true`); "
        "beyond that it is the database's estimate (`count_exact: false`, PostgreSQL), so a page number near the "
        "estimated end may answer 404: narrow the filter (`service`, `created_after`) for exact counts."
    ),
    "GET /api/autoscaling/events/{id}": (
        "With the step timeline (`actions`, each with start, finish and duration), the Jenkins info (job, queue "
        "item, build number and URL, `log_api`) and the stored build log (its tail, `build_log_truncated`)."
    ),
    "GET /api/autoscaling/decisions": (
        "Why a service did or did not scale. Filters: `service`, `outcome` (repeatable), `notification`, "
        "`event`, `decided_after`, `decided_before`, `dry_run` (`true`: a dry-run config's decisions, each "
        "marked `dry_run`; its would-be actions say `Dry run, nothing triggered: would ...` and have no `event`)."
    ),
    "POST /api/events/{event_id}/callback/status": (
        "Sets the event's status: `running`, `succeeded`, `failed`, `rolled_back`. Authenticated by the event's "
        "callback token: **401** without it, **403** with another event's token, **404** no such event, **409** an "
        "impossible change (`Event status cannot change from succeeded to running.`). A repeat of the same final "
        "status answers 200 with `changed: false`."
    ),
    "POST /api/events/{event_id}/callback/step": (
        "Records one step starting (`running`) or finishing (`succeeded`, `failed`, `skipped`). **403** once the "
        "event has finished; **409** for an impossible step change; a repeated callback is recorded once "
        "(`changed: false`)."
    ),
    "POST /api/events/{event_id}/callback/ip/reserve": (
        "**201** with the address and the pool's network facts; **409** `{detail, code: 'pool_exhausted'}` when "
        "no address is free, or when the config has no pool."
    ),
    "POST /api/events/{event_id}/callback/ip/release": (
        "`{}` releases every address of the event. Still accepted after the event finished, so the pipeline's "
        "undo never leaves an address reserved; releasing again is a no-op. A scale-in's token releases the "
        "addresses of the instances the event removes (`{}`: all of them), and answers **409** `not_removed` for any "
        "other address."
    ),
    "GET /api/events/{event_id}/callback/instances": (
        "A scale-out's instances (those it creates) or a scale-in's (those it removes), with what the pipeline needs "
        "to find them: VM name, vCenter instance UUID, address, F5 member; `leftover` is what a failed scale-in "
        "left behind."
    ),
    "GET /api/jenkins/jobs/{job_name}/builds": (
        "`?limit=` 1-100 (default 20; 400 otherwise). **404** when Jenkins has no such job, **502** `Jenkins could "
        "not be reached: ...` when it cannot be reached. The callback token parameter is masked."
    ),
    "GET /api/jenkins/jobs/{job_name}/builds/{number}": "404 when Jenkins has no such job or build; 502 as above.",
    "GET /api/jenkins/jobs/{job_name}/builds/{number}/log": (
        "The console text (`text/plain`). 404 / 502 as above. For an event, the portal also stores the log when "
        "the event ends (see the event's `build_log`)."
    ),
    "GET /api/monitoring/services/{service}/metrics": (
        "`?range=15m|30m|1h|2h|3h|6h|12h|24h|7d` (otherwise 400, with the `allowed` values; without it, the range that "
        "the service's history fills); besides CPU and memory, the fleet's size over the range (`fleet_size`, a step "
        "series from the inventory's history) and the scale-outs and scale-ins in it (`scaling_events`), as the "
        "dashboard draws them. 404 when no config has this service name; 502 with `system: 'prometheus'` when "
        "Prometheus cannot be reached."
    ),
    "GET /api/monitoring/alerts": "502 with `system: 'alertmanager'` when Alertmanager cannot be reached.",
}


def schema():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmautoscale.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.utils import translation
    from drf_spectacular.generators import SchemaGenerator

    with translation.override("en"):
        return SchemaGenerator().get_schema(request=None, public=True)


def ref_name(ref):
    return ref.rsplit("/", 1)[-1]


def type_of(prop):
    if "$ref" in prop:
        return f"[{ref_name(prop['$ref'])}](#schema-{ref_name(prop['$ref']).lower()})"
    if "allOf" in prop:
        return " & ".join(type_of(p) for p in prop["allOf"])
    if "oneOf" in prop:
        return " or ".join(type_of(p) for p in prop["oneOf"])
    kind = prop.get("type", "object")
    if kind == "array":
        return f"array of {type_of(prop.get('items', {}))}"
    if "enum" in prop:
        return ", ".join(f"`{v}`" for v in prop["enum"] if v not in (None, ""))
    fmt = prop.get("format")
    return f"{kind} ({fmt})" if fmt and fmt not in ("int64",) else kind


def cell(text):
    return " ".join(str(text or "").split()).replace("|", "\\|")


def media_schema(content):
    for media, body in (content or {}).items():
        return media, body.get("schema", {})
    return None, None


def describe_body(body):
    if not body:
        return ""
    if "$ref" in body:
        return type_of(body)
    if body.get("type") == "array":
        return f"array of {type_of(body.get('items', {}))}"
    return type_of(body)


def auth_line(op):
    security = op.get("security")
    if security is None:
        return "Authentication: see the notes (checked by the view)."
    names = [name for requirement in security for name in requirement]
    if not names:
        return "Authentication: none."
    if set(names) == {"cookieAuth", "knoxApiToken", "basicAuth"}:
        return f"Authentication: {OPERATOR}."
    return "Authentication: " + ", ".join(AUTH_LABELS.get(n, n) for n in names) + "."


def operation_md(method, path, op):
    lines = [f"### `{method.upper()} {path}`", ""]
    title = op.get("summary") or ""
    if title:
        lines += [f"**{cell(title)}.**" if not title.endswith(".") else f"**{cell(title)}**", ""]
    if op.get("description"):
        lines += [cell(op["description"]), ""]
    lines += [auth_line(op), ""]
    note = NOTES.get(f"{method.upper()} {path}")
    if note:
        lines += [note, ""]
    params = [p for p in op.get("parameters", []) if p.get("in") in ("query", "path")]
    if params:
        lines += ["| parameter | in | type | description |", "|---|---|---|---|"]
        for p in params:
            lines.append(
                f"| `{p['name']}` | {p['in']} | {cell(type_of(p.get('schema', {})))} | "
                f"{cell(p.get('description', '').split('* `')[0] or '')} |"
            )
        lines.append("")
    if op.get("requestBody"):
        media, body = media_schema(op["requestBody"].get("content"))
        lines += [f"Request body ({media}): {describe_body(body)}", ""]
    lines += ["| status | body | meaning |", "|---|---|---|"]
    for status, response in op.get("responses", {}).items():
        media, body = media_schema(response.get("content"))
        shape = describe_body(body) if body else ""
        if media and media != "application/json":
            shape = f"{shape} ({media})".strip()
        lines.append(f"| {status} | {cell(shape)} | {cell(response.get('description', ''))} |")
    lines.append("")
    return lines


def schema_md(name, component):
    lines = [f'<a id="schema-{name.lower()}"></a>', f"#### {name}", ""]
    if "enum" in component:
        lines += ["One of: " + ", ".join(f"`{v}`" for v in component["enum"] if v not in (None, "")), ""]
        return lines
    properties = component.get("properties", {})
    if not properties:
        lines += [f"{component.get('type', 'object')}", ""]
        return lines
    required = set(component.get("required", []))
    lines += ["| field | type | | description |", "|---|---|---|---|"]
    for field, prop in properties.items():
        flags = []
        if prop.get("readOnly"):
            flags.append("read-only")
        elif field in required:
            flags.append("required")
        if prop.get("nullable"):
            flags.append("nullable")
        if "maxLength" in prop:
            flags.append(f"max {prop['maxLength']}")
        description = prop.get("description") or prop.get("title") or ""
        lines.append(f"| `{field}` | {cell(type_of(prop))} | {', '.join(flags)} | {cell(description)} |")
    lines.append("")
    return lines


def generated(doc):
    ops = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                ops.append((path, method, item[method]))
    lines = [BEGIN, ""]
    known = [tag for tag, _title in TAGS]
    other = sorted({op.get("tags", ["other"])[0] for _p, _m, op in ops} - set(known))
    for tag, title in TAGS + [(t, t.capitalize()) for t in other]:
        tagged = [(p, m, op) for p, m, op in ops if op.get("tags", ["other"])[0] == tag]
        if not tagged:
            continue
        lines += [f"## {title}", ""]
        for path, method, op in sorted(tagged, key=lambda x: (x[0], METHODS.index(x[1]))):
            lines += operation_md(method, path, op)
    lines += ["## Schemas", "", "Request and response bodies, as in `/api/schema/`.", ""]
    for name, component in sorted(doc["components"]["schemas"].items()):
        lines += schema_md(name, component)
    lines.append(END)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = DOC.read_text(encoding="utf-8")
    head, _sep, rest = text.partition(BEGIN)
    _old, _sep, tail = rest.partition(END)
    new = head + generated(schema()) + tail
    if args.check:
        if new != text:
            print(f"{DOC.relative_to(ROOT)} is not current: run .venv/bin/python docs/gen_api_reference.py")
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
