"""The commands of jenkins/Jenkinsfile.autoscale, one per stage; each reports its own progress to the portal.

    python3 -m pipeline start         check this agent can run the steps, clear an earlier build's state, event running
    python3 -m pipeline step NAME     one step (ip_allocate, ..., health_check; f5_disable, ..., monitoring_remove for
                                      a scale-in; or an undo step by hand)
    python3 -m pipeline finish        event succeeded, with the VM names and addresses (added, or removed)
    python3 -m pipeline undo          post { unsuccessful }: rollback_f5, rollback_vm, rollback_ip (a scale-out) or
                                      rollback_f5_enable (a scale-in, ACTION=scale_in); the final status
    python3 -m pipeline check         exit 0 when this agent's Python has the requirements

A step reports {"step", "status": "running"} before it starts and its result after (succeeded, skipped or failed,
with the message and details such as the seconds it took), to CALLBACK_URL/step with the Bearer CALLBACK_TOKEN
from the environment; status reports go to CALLBACK_URL/status. A stop of the build (SIGTERM) fails the running
step with "The build was aborted while this step ran."; a step killed before it could report is reported failed by
the undo. What the steps did lives in the state file (PIPELINE_STATE, pipeline/state.py), so the undo takes back
exactly that. Without CALLBACK_URL/CALLBACK_TOKEN (an undo run by hand) the reports are only printed.

Exit status: 0 done, 1 the step (or an undo, or a report) failed, 2 bad arguments.
"""

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from integrations.errors import IntegrationError
from pipeline import contract, scale_in, steps
from pipeline.portal import PortalClient, PortalError
from pipeline.state import PipelineState

STOPPED = "The step was stopped before it finished."
# Every step command, scale-out's and scale-in's; the undo runs the one of the build's ACTION.
STEPS = {**steps.STEPS, **scale_in.STEPS}
UNDO = {"scale_out": steps.UNDO, "scale_in": scale_in.UNDO}
AGENT_UNFIT = (
    "The Jenkins agent cannot run the portal's pipeline commands: {reason}. Install the portal's requirements.txt "
    "for PORTAL_PYTHON (see docs/pipeline.md)."
)


class Reporter:
    """Sends the step and status reports of this build; without a portal it only prints them."""

    def __init__(self, portal, *, result_path=None):
        self.portal = portal
        self.result_path = result_path

    def step(self, step, status, message="", details=None):
        if self.result_path and status != "running":
            body = {"step": step, "status": status, **contract.message_fields(message), "details": details or {}}
            Path(self.result_path).write_text(json.dumps(body))
        if self.portal is None:
            print(f"pipeline: not reporting {step} {status} (no CALLBACK_URL/CALLBACK_TOKEN)", file=sys.stderr)
            return
        self.portal.step_report(step, status, message, details)

    def status(self, body):
        if self.portal is None:
            print(f"pipeline: not reporting {json.dumps(body)} (no CALLBACK_URL/CALLBACK_TOKEN)", file=sys.stderr)
            return
        self.portal.status_report(body)


def _on_sigterm(signum, frame):
    raise steps.Aborted("The build was aborted while this step ran.")


def run_step(step, state, reporter, *, undo=False):
    """Report the step running, run it, report its result; 0 when it worked (or had nothing to undo), else 1."""
    started = time.monotonic()
    # Kept until the result is reported: a step killed before that is reported failed by the undo (stopped_step).
    state.data["running"] = step
    state.save()
    try:
        reporter.step(step, "running")
    except (PortalError, steps.Aborted) as exc:
        print(f"pipeline {step}: {exc}", file=sys.stderr)
        state.data.pop("running", None)
        if undo:
            state.data.setdefault("undo_failures", []).append(f"{step}: {exc}")
            state.save()
        else:
            state.record_failure(step, str(exc))
        return 1
    details = {}
    try:
        outcome = STEPS[step](state)
    except steps.StepFailed as exc:
        status, message = "failed", exc.message
    except (steps.Aborted, IntegrationError, PortalError) as exc:
        status, message = "failed", str(exc)
    except Exception as exc:  # an unexpected error still has to reach the portal as this step's failure
        status, message = "failed", f"{type(exc).__name__}: {exc}"
    else:
        status = "skipped" if outcome is None else "succeeded"
        message, details = (
            outcome if outcome is not None else (contract.StepMessage(contract.gettext_noop("Nothing to undo.")), {})
        )
    if status == "failed":
        print(f"pipeline {step}: {message}", file=sys.stderr)
        if undo:
            state.data.setdefault("undo_failures", []).append(f"{step}: {message}")
            state.save()
        else:
            state.record_failure(step, message)
    else:
        print(f"pipeline {step}: {message}")
    details = {**details, "seconds": round(time.monotonic() - started, 3)}
    code = 1 if status == "failed" else 0
    try:
        reporter.step(step, status, message, details)
    except PortalError as exc:
        print(f"pipeline {step}: the result could not be reported: {exc}", file=sys.stderr)
        code = 1
    state.data.pop("running", None)
    state.save()
    return code


def stopped_step(state, reporter):
    """A step whose command was killed (SIGKILL, a lost agent) before it reported: report it failed."""
    step = state.data.pop("running", None)
    if not step:
        return
    state.record_failure(step, STOPPED)
    state.save()
    try:
        reporter.step(step, "failed", STOPPED)
    except PortalError as exc:
        print(f"pipeline {step}: {exc}", file=sys.stderr)


def undo(state, reporter):
    """Every undo step in order (each even when one before failed), then the event's final status."""
    stopped_step(state, reporter)
    code = 0
    for step in UNDO.get(action(), steps.UNDO):
        code |= run_step(step, state, reporter, undo=True)
    try:
        reporter.status(status_body(state, "final"))
    except PortalError as exc:
        print(f"pipeline undo: the final status could not be reported: {exc}", file=sys.stderr)
        code = 1
    return code


def final_message(state):
    """The final status's message of a build that did not succeed (a contract.StepMessage, shown translated): the
    first failure, what a scale-in left behind, what the undo could not take back."""
    failure = state.data.get("failure")
    if failure and failure.get("msgid") is not None:
        message = contract.StepMessage(failure["msgid"], failure.get("params") or {})
    elif failure:
        message = failure["message"]  # a text from vCenter, F5, the portal: shown as it came
    else:
        message = contract.StepMessage(
            contract.gettext_noop("The build stopped (failed or aborted) before a step reported a failure.")
        )
    undo_failures = state.data.get("undo_failures") or []
    leftovers = [
        *(f"F5 member {m['address']}:{m['port']}" for m in state["f5_members"]),
        *(f"VM {vm['name']}" for vm in state["vms"]),
        *(f"IP {ip['address']}" for ip in state["ips"]),
    ]
    left = state.data.get("leftovers") or []
    if left:
        # A scale-in that failed after destroying a VM: what is left, for the orphan sweep.
        message = contract.StepMessage(
            contract.gettext_noop("%(message)s Left: %(left)s."), {"message": message, "left": "; ".join(left)}
        )
    if undo_failures:
        message = contract.StepMessage(
            contract.gettext_noop("%(message)s Undo incomplete: %(failures)s"),
            {"message": message, "failures": "; ".join(undo_failures)},
        )
    elif leftovers:
        message = contract.StepMessage(
            contract.gettext_noop("%(message)s Undo incomplete: left %(leftovers)s"),
            {"message": message, "leftovers": ", ".join(leftovers)},
        )
    return message


def status_body(state, which):
    body = {"message": ""}
    number = os.environ.get("BUILD_NUMBER", "")
    if number.isdigit():
        body["build_number"] = int(number)
    if os.environ.get("BUILD_URL"):
        body["build_url"] = os.environ["BUILD_URL"]
    if which == "running":
        body["status"] = "running"
    elif which == "succeeded" and action() == "scale_in":
        removed = state.data.get("removing") or []
        body.update(
            status="succeeded",
            vm_names=[entry["vm_name"] for entry in removed],
            vm_ips=[entry["ip"] for entry in removed if entry["ip"]],
            **contract.message_fields(
                contract.StepMessage(
                    contract.gettext_noop("Removed %(vms)s."),
                    {"vms": ", ".join(entry["vm_name"] for entry in removed)},
                )
            ),
        )
    elif which == "succeeded":
        body.update(
            status="succeeded",
            vm_names=[vm["name"] for vm in state["vms"]],
            vm_ips=[vm["ip"] for vm in state["vms"]],
            **contract.message_fields(
                contract.StepMessage(
                    contract.gettext_noop("Added %(vms)s."), {"vms": ", ".join(vm["name"] for vm in state["vms"])}
                )
            ),
        )
    else:
        failure = state.data.get("failure") or {"step": ""}
        incomplete = state.data.get("undo_failures") or state["f5_members"] or state["vms"] or state["ips"]
        body["status"] = "failed" if incomplete or state.data.get("leftovers") else "rolled_back"
        body.update(failed_step=failure["step"], **contract.message_fields(final_message(state)))
    return body


def agent_check():
    """The step commands' libraries import here; the reason when they do not, else None."""
    try:
        import integrations.f5
        import integrations.vcenter  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def action():
    return os.environ.get("ACTION") or "scale_out"


def start(state, reporter):
    if action() not in contract.ACTIONS:
        message = (
            f"ACTION={action()!r} is not one of {', '.join(contract.ACTIONS)}: the job's build parameter is wrong."
        )
        print(f"pipeline start: {message}", file=sys.stderr)
        reporter.status({"status": "failed", "message": message})
        return 1
    reason = agent_check()
    if reason:
        print(f"pipeline start: {reason}", file=sys.stderr)
        reporter.status({"status": "failed", "message": AGENT_UNFIT.format(reason=reason)})
        return 1
    state.clear()
    reporter.status(status_body(state, "running"))
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "step", "finish", "undo", "check"])
    parser.add_argument("step", nargs="?", choices=list(STEPS), help="with step")
    parser.add_argument("--state", help="the pipeline state file (default: PIPELINE_STATE or ./autoscale-state.json)")
    parser.add_argument("--result", help="also write each step's report body to this file (JSON)")
    args = parser.parse_args(argv)
    if (args.command == "step") != bool(args.step):
        parser.error("give a step name with `step`, and only with it")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.command == "check":
        reason = agent_check()
        if reason:
            print(f"pipeline check: {reason}", file=sys.stderr)
        return 1 if reason else 0
    state = PipelineState(args.state)
    reporter = Reporter(PortalClient.from_env(), result_path=args.result)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.command == "start":
            return start(state, reporter)
        if args.command == "step":
            return run_step(args.step, state, reporter, undo=args.step in steps.UNDO or args.step in scale_in.UNDO)
        if args.command == "finish":
            reporter.status(status_body(state, "succeeded"))
            return 0
        return undo(state, reporter)
    except PortalError as exc:
        print(f"pipeline {args.command}: {exc}", file=sys.stderr)
        return 1
