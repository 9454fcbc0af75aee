"""The scale-out pipeline end to end: the portal triggers the service's Jenkins job, the Jenkins stand-in runs
jenkins/Jenkinsfile.autoscale (embedded in the job as the portal provisions it) with the real step commands against
the vCenter simulator, the F5 stand-in and this portal (live_server), and the portal records every step."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from autoscaling.models import IpAllocation
from events.models import EventAction, ScaleOutEvent
from integrations.f5 import F5Client
from lab.core import free_port
from tests.pipeline.conftest import FORWARD, ROOT, UNDO, skip_on_in_memory_sqlite

State = IpAllocation.State
Step = EventAction.Step
pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


def steps_of(event):
    return {a.step: a for a in EventAction.objects.filter(event=event)}


def assert_nothing_left(pipeline, event):
    """No VM of the event in the simulator, no F5 member, no address held by the event."""
    vms = [vm.name for vm in pipeline.vcenter.list_vms() if vm.name.startswith(event.service_name)]
    assert vms == []
    assert pipeline.f5.members(event.config.f5_pool) == {}
    held = IpAllocation.objects.filter(event=event, state__in=[State.RESERVED, State.IN_USE])
    assert list(held.values_list("address", flat=True)) == []


def test_scale_out_adds_a_running_vm_with_its_ip_to_the_f5_pool(pipeline, ip):
    event = pipeline.run(folder="/DC0/vm", datastore="LocalDS_0", network="DC0_DVPG0")
    assert event.status == ScaleOutEvent.Status.SUCCEEDED, (event.error, pipeline.console(event))
    assert event.error == "" and event.failed_step == ""

    vm = pipeline.vcenter.find_vm(f"{event.service_name}-001")
    assert vm is not None and vm.powered_on
    assert vm.ip_address == ip(10)
    # The config's placement: cluster DC0_C0 (its root pool), folder, datastore, network.
    assert (vm.resource_pool, vm.folder, vm.datastore) == ("/DC0/host/DC0_C0/Resources", "/DC0/vm", "LocalDS_0")
    assert vm.networks == ("DC0_DVPG0",)
    assert event.vm_names == [vm.name] and event.vm_ips == [ip(10)]

    members = pipeline.f5.members(event.config.f5_pool)
    assert list(members) == [f"{ip(10)}:8080"]
    assert members[f"{ip(10)}:8080"]["state"] == "up"

    allocation = IpAllocation.objects.get(pool=event.config.ip_pool, address=ip(10))
    assert (allocation.state, allocation.vm_name, allocation.event_id) == (State.IN_USE, vm.name, event.pk)
    build = pipeline.jenkins.build(event.jenkins_job, event.build_number)
    assert build["result"] == "SUCCESS"
    assert build["parameters"]["CALLBACK_TOKEN"] not in build["console"]  # never echoed into the build log

    steps = steps_of(event)
    for step in FORWARD:
        action = steps[step]
        assert action.status == EventAction.Status.SUCCEEDED, (step, action.message)
        assert action.started_at and action.finished_at and action.duration_seconds >= 0
    # The stages run several steps per command; each step still has its own span, in order, none overlapping.
    timeline = [steps[step] for step in FORWARD]
    assert all(a.finished_at <= b.started_at for a, b in zip(timeline, timeline[1:], strict=False))
    assert all(steps[step].details["seconds"] >= 0 for step in FORWARD)
    assert not set(UNDO) & set(steps)
    assert event.build_number and event.started_at and event.finished_at

    # The next scale-out of the service gets the next name and address: names never collide.
    second = pipeline.run(config=event.config)
    assert second.status == ScaleOutEvent.Status.SUCCEEDED, (second.error, pipeline.console(second))
    assert second.vm_names == [f"{event.service_name}-002"] and second.vm_ips == [ip(11)]


def test_the_pipeline_skips_and_records_an_address_that_answers_ping(pipeline, make_pool, ping_namespace, ip):
    """The pool's ping check on: .10 answers (in the test's namespace), so the VM gets .11."""
    event = pipeline.run(pool=make_pool(ping_check=True), behaviour={"env": {"PING_COMMAND": ping_namespace}})
    assert event.status == ScaleOutEvent.Status.SUCCEEDED, (event.error, pipeline.console(event))
    assert event.vm_ips == [ip(11)]
    assert IpAllocation.objects.get(pool=event.config.ip_pool, address=ip(10)).state == State.SKIPPED
    ip_step = EventAction.objects.get(event=event, step=Step.IP_ALLOCATE)
    assert ip_step.details["skipped"] == [ip(10)] and "answered ping" in ip_step.message


def test_an_agent_without_the_step_commands_fails_the_event_saying_so(pipeline, tmp_path):
    event = pipeline.run(behaviour={"env": {"PORTAL_HOME": str(tmp_path / "missing")}})
    assert event.status == ScaleOutEvent.Status.FAILED, (event.status, pipeline.console(event))
    assert "PORTAL_HOME" in event.error
    assert not IpAllocation.objects.filter(event=event).exists()


def test_an_agent_python_without_the_requirements_fails_the_event_saying_so(pipeline, tmp_path):
    """The package imports (standard library only) but pyvmomi/requests do not: `start` itself reports why."""
    python = tmp_path / "python-without-site-packages"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    event = pipeline.run(behaviour={"env": {"PORTAL_PYTHON": str(python)}})
    assert event.status == ScaleOutEvent.Status.FAILED, (event.status, pipeline.console(event))
    assert "PORTAL_PYTHON" in event.error and "requirements" in event.error and "No module named" in event.error
    assert not IpAllocation.objects.filter(event=event).exists()


def test_one_scale_out_of_two_vms(pipeline, ip):
    event = pipeline.run(vm_count=2)
    assert event.status == ScaleOutEvent.Status.SUCCEEDED, (event.error, pipeline.console(event))
    names = [f"{event.service_name}-001", f"{event.service_name}-002"]
    assert event.vm_names == names and event.vm_ips == [ip(10), ip(11)]
    assert [pipeline.vcenter.find_vm(name).ip_address for name in names] == event.vm_ips
    assert sorted(pipeline.f5.members(event.config.f5_pool)) == [f"{ip(10)}:8080", f"{ip(11)}:8080"]
    assert IpAllocation.objects.filter(event=event, state=State.IN_USE).count() == 2


@pytest.mark.parametrize(
    ("case", "failed_step", "reason"),
    [
        ("template_missing", Step.VM_CLONE, "does not exist in vCenter"),
        ("pool_exhausted", Step.IP_ALLOCATE, "exhausted"),
        ("f5_unreachable", Step.F5_ADD, "could not be reached"),
        ("clone_failure", Step.VM_CLONE, "no datastore"),
        # The 2nd, 3rd and 4th step of the stage that creates the VM (one command), and the 2nd of the F5 stage.
        ("vm_gone_before_customize", Step.VM_CUSTOMIZE, "no longer exists in vCenter"),
        ("power_on_refused", Step.VM_POWER_ON, "template"),
        ("guest_ip_never_appears", Step.VM_GUEST_IP, "Timed out"),
        ("build_aborted", Step.HEALTH_CHECK, "aborted"),
    ],
)
def test_a_failing_step_is_undone_and_reported(pipeline, make_pool, request, case, failed_step, reason, ip):
    config_fields, behaviour, during = {}, {}, None
    if case == "template_missing":
        config_fields["template"] = "no-such-template"
    elif case == "pool_exhausted":
        pool = make_pool(first=ip(10), last=ip(10))
        IpAllocation.objects.create(pool=pool, address=ip(10), state=State.IN_USE, vm_name="other-001")
        config_fields["pool"] = pool
    elif case == "f5_unreachable":
        behaviour["env"] = {"F5_URL": f"http://127.0.0.1:{free_port()}"}
    elif case == "clone_failure":
        config_fields["datastore"] = "NoSuchDatastore"
    elif case in ("vm_gone_before_customize", "power_on_refused", "guest_ip_never_appears"):
        portal = request.getfixturevalue("portal_proxy")
        portal.hold_before(failed_step)
        behaviour["env"] = {"PORTAL_TIMEOUT": "60"}  # held in its "running" report while the test acts

        def during(event):
            if case == "guest_ip_never_appears":
                return pipeline.hide_guest_ip(portal, event)
            portal.wait_held()
            vm = pipeline.vcenter.find_vm(f"{event.service_name}-001")
            if case == "vm_gone_before_customize":  # deleted by someone else between the clone and the customize
                pipeline.vcenter.destroy_vm(vm.moid, power_off=True)
            else:  # a template cannot be powered on
                pipeline.vcenter.mark_as_template(vm.moid)
            portal.release()

    elif case == "build_aborted":
        pipeline.f5.configure(address_states={ip(10): "down"})
        during = pipeline.abort_during_health_check

    event = pipeline.run(behaviour=behaviour, during=during, **config_fields)

    assert event.status == ScaleOutEvent.Status.ROLLED_BACK, (event.status, event.error, pipeline.console(event))
    assert event.failed_step == failed_step
    assert reason in event.error
    steps = steps_of(event)
    assert steps[failed_step].status == EventAction.Status.FAILED
    assert reason in steps[failed_step].message
    # Each step reported itself, as when every step was a stage of its own: those before the failing one
    # succeeded, one after the other; those after it neither ran nor reported, even in the same command.
    before = FORWARD[: FORWARD.index(failed_step)]
    assert [step for step in FORWARD if step in steps] == [*before, failed_step]
    assert [steps[step].status for step in before] == [EventAction.Status.SUCCEEDED] * len(before)
    timeline = [steps[step] for step in [*before, failed_step]]
    assert all(a.finished_at <= b.started_at for a, b in zip(timeline, timeline[1:], strict=False))
    for step in UNDO:  # every undo was reported, done or with nothing to undo
        assert steps[step].status in (EventAction.Status.SUCCEEDED, EventAction.Status.SKIPPED), steps[step].message
        assert steps[step].started_at >= steps[failed_step].finished_at
    assert_nothing_left(pipeline, event)
    if case == "pool_exhausted":  # the other service's address stays as it was
        assert IpAllocation.objects.get(address=ip(10)).state == State.IN_USE
    if failed_step in (Step.VM_CUSTOMIZE, Step.VM_POWER_ON, Step.VM_GUEST_IP, Step.F5_ADD, Step.HEALTH_CHECK):
        # The VM the command's first step cloned was undone (already gone, or destroyed), and its address released.
        assert steps[Step.ROLLBACK_VM].status == EventAction.Status.SUCCEEDED
        assert steps[Step.ROLLBACK_IP].status == EventAction.Status.SUCCEEDED
    if failed_step in (Step.VM_CUSTOMIZE, Step.VM_POWER_ON, Step.VM_GUEST_IP):
        assert steps[Step.ROLLBACK_F5].status == EventAction.Status.SKIPPED  # nothing was added to the pool


def test_an_undo_that_fails_makes_the_event_failed_and_says_what_is_left(pipeline, ip):
    """The member never comes up and BIG-IP then refuses to delete it: the event is failed (not rolled back), says
    why, and the rest is still undone."""
    pipeline.f5.configure(address_states={ip(10): "down"})
    pipeline.f5.fail_next(count=None, status=503, method="DELETE", path="/members/")
    try:
        event = pipeline.run(behaviour={"env": {"F5_HEALTH_TIMEOUT": "0.5"}})
    finally:
        pipeline.f5.clear_faults()
    assert event.status == ScaleOutEvent.Status.FAILED, (event.status, event.error, pipeline.console(event))
    assert event.failed_step == Step.HEALTH_CHECK
    assert "not up" in event.error and "Undo incomplete" in event.error and "rollback_f5" in event.error
    steps = steps_of(event)
    assert steps[Step.ROLLBACK_F5].status == EventAction.Status.FAILED
    assert steps[Step.ROLLBACK_VM].status == steps[Step.ROLLBACK_IP].status == EventAction.Status.SUCCEEDED
    assert pipeline.vcenter.find_vm(f"{event.service_name}-001") is None
    assert not IpAllocation.objects.filter(event=event, state__in=[State.RESERVED, State.IN_USE]).exists()
    assert list(pipeline.f5.members(event.config.f5_pool)) == [f"{ip(10)}:8080"]  # reported, not hidden


def test_two_pipelines_for_one_pool_at_once_get_different_ips(pipeline, make_pool, ip):
    skip_on_in_memory_sqlite()
    pool = make_pool(first=ip(30), last=ip(40))
    first = pipeline.start(pool=pool)
    second = pipeline.start(pool=pool)
    events = [pipeline.wait(first), pipeline.wait(second)]
    assert [e.status for e in events] == [ScaleOutEvent.Status.SUCCEEDED] * 2, [pipeline.console(e) for e in events]
    ips = [e.vm_ips[0] for e in events]
    assert len(set(ips)) == 2
    in_use = IpAllocation.objects.filter(pool=pool, state=State.IN_USE).values_list("address", flat=True)
    assert sorted(in_use) == sorted(ips)
    for event in events:
        assert pipeline.vcenter.find_vm(event.vm_names[0]).ip_address == event.vm_ips[0]


def test_make_run_helper_points_the_labs_jenkins_at_the_pipeline(lab):
    from lab.components.jenkins import JenkinsStandinControl
    from lab.standins.pipeline_runner import main

    for name in ("jenkins", "vcsim", "f5"):  # running, so main() finds them in the lab's state
        lab.ensure(name)
    main(["--run-dir", str(lab.run_dir), "--job", "vmautoscale-make-run-check"])
    behaviour = JenkinsStandinControl(lab.info("jenkins")["control_url"]).set_build_behaviour(
        job="vmautoscale-make-run-check"
    )["vmautoscale-make-run-check"]
    assert behaviour["runner"] == "lab.standins.pipeline_runner:PipelineRunner"
    assert behaviour["env"]["VCENTER_URL"] == lab.info("vcsim")["url"]
    assert behaviour["env"]["F5_URL"] == lab.info("f5")["url"]
    assert set(behaviour["credentials"]) == {"vmautoscale-vcenter", "vmautoscale-f5"}


def test_undo_commands_can_run_twice(pipeline, tmp_path, lab, ip):
    """The rollback_f5 and rollback_vm steps on what a build recorded: done once, and again with the same record."""
    config = pipeline.config()
    template = pipeline.vcenter.find_vm(config.template.name)
    vm = pipeline.vcenter.clone_from_template(template.moid, name=f"{config.service_name}-001")
    pipeline.vcenter.power_on(vm.moid)
    f5 = lab.info("f5")
    with F5Client(f5["url"], f5["user"], f5["password"], verify_tls=False) as client:
        client.add_member(config.f5_pool, "Common", ip(50), 8080)
    state = tmp_path / "state.json"
    member = {"pool": config.f5_pool, "partition": "Common", "address": ip(50), "port": 8080}
    vm_record = {"name": vm.name, "moid": vm.moid, "ip": ip(50)}
    state.write_text(json.dumps({"ips": [], "vms": [vm_record], "f5_members": [member]}))
    shutil.copy(state, tmp_path / "original.json")
    vcsim = lab.info("vcsim")
    env = {
        **os.environ,
        "VCENTER_URL": vcsim["url"],
        "VCENTER_USER": vcsim["env"]["VCENTER_USER"],
        "VCENTER_PASSWORD": vcsim["env"]["VCENTER_PASSWORD"],
        "VCENTER_VERIFY_TLS": "false",
        "F5_URL": f5["url"],
        "F5_USER": f5["user"],
        "F5_PASSWORD": f5["password"],
        "F5_VERIFY_TLS": "false",
        "PYTHONPATH": str(ROOT),
    }
    for var in ("CALLBACK_URL", "CALLBACK_TOKEN", "EVENT_ID"):  # by hand, outside a build: nothing to report to
        env.pop(var, None)
    for run in range(2):
        if run:
            shutil.copy(tmp_path / "original.json", state)
        for step in ("rollback_f5", "rollback_vm"):
            result_file = tmp_path / f"{step}-{run}.json"
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pipeline",
                    "step",
                    step,
                    "--state",
                    str(state),
                    "--result",
                    str(result_file),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            assert json.loads(result_file.read_text())["status"] == "succeeded"
    assert pipeline.vcenter.find_vm(vm.name) is None
    assert pipeline.f5.members(config.f5_pool) == {}
    assert json.loads(state.read_text())["vms"] == [] and json.loads(state.read_text())["f5_members"] == []
