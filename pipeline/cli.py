"""The commands of jenkins/Jenkinsfile.autoscale, one per stage; each reports its own progress to the portal.

    python3 -m pipeline start         check this agent can run the steps, clear an earlier build's state, event running
    python3 -m pipeline step NAME...  the steps given, in order (ip_allocate, ..., health_check; f5_disable, ...,
                                      monitoring_remove for a scale-in; or an undo step by hand), each reported on
                                      its own; the first that fails stops the command, the later ones do not run;
                                      with --finish (a build's last stage), then what `finish` does
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

Exit status: 0 done, 1 the step (or an undo, or a report) failed, 2 bad arguments, 3 `start` failed and has told
the portal why (or tried to): the Start stage reports with curl only when the command could not run at all.
"""

import argparse
import importlib.util
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
START_FAILED = 3
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


def run_steps(names, state, reporter):
    """The steps of one stage in order, each reported on its own as if it were a stage of its own: the first that
    fails (or cannot report) ends the command with 1, and the steps after it neither run nor report."""
    for step in names:
        code = run_step(step, state, reporter, undo=step in steps.UNDO or step in scale_in.UNDO)
        if code:
            return code
    return 0


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


# What the step commands import (integrations.vcenter and integrations.f5), looked up by `start` without importing
# them: importing pyvmomi and requests costs a scale-out ~0.2 s, and the steps that use them import them anyway.
REQUIREMENTS = ("pyVmomi", "requests", "urllib3")


def agent_check(*, imports=False):
    """The reason this agent's Python cannot run the step commands, else None: a library of theirs is missing, or
    (with `imports`, as `check` does) does not import."""
    if imports:
        try:
            import integrations.f5
            import integrations.vcenter  # noqa: F401
        except ImportError as exc:
            return str(exc)
        return None
    missing = [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]
    return f"No module named {missing[0]!r}" if missing else None


def action():
    return os.environ.get("ACTION") or "scale_out"


def start(state, reporter):
    # Exactly one of the actions: every later stage runs only `when` ACTION is that action, so with any other
    # value (an empty one too) no stage would run and nothing would finish the event.
    requested = os.environ.get("ACTION", "")
    if requested not in contract.ACTIONS:
        message = (
            f"ACTION={requested!r} is not one of {', '.join(contract.ACTIONS)}: the job's build parameter is wrong."
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
    # Checked below, not with `choices`: argparse (3.11) refuses an empty list against choices.
    parser.add_argument(
        "step", nargs="*", metavar="STEP", help=f"with step: one or more of {', '.join(STEPS)}, in order"
    )
    parser.add_argument("--state", help="the pipeline state file (default: PIPELINE_STATE or ./autoscale-state.json)")
    parser.add_argument(
        "--result", help="also write each step's report body to this file (JSON; with several steps, the last one's)"
    )
    parser.add_argument(
        "--finish", action="store_true", help="with step: once every step succeeded, report the event succeeded"
    )
    args = parser.parse_args(argv)
    if args.finish and args.command != "step":
        parser.error("--finish goes with `step`")
    if (args.command == "step") != bool(args.step):
        parser.error("give step names with `step`, and only with it")
    unknown = [name for name in args.step if name not in STEPS]
    if unknown:
        parser.error(f"unknown step {unknown[0]!r} (choose from {', '.join(STEPS)})")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.command == "check":
        reason = agent_check(imports=True)
        if reason:
            print(f"pipeline check: {reason}", file=sys.stderr)
        return 1 if reason else 0
    state = PipelineState(args.state)
    reporter = Reporter(PortalClient.from_env(), result_path=args.result)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.command == "start":
            return START_FAILED if start(state, reporter) else 0
        if args.command == "step":
            code = run_steps(args.step, state, reporter)
            if code or not args.finish:
                return code
        if args.command in ("step", "finish"):
            reporter.status(status_body(state, "succeeded"))
            return 0
        return undo(state, reporter)
    except PortalError as exc:
        print(f"pipeline {args.command}: {exc}", file=sys.stderr)
        return START_FAILED if args.command == "start" else 1
