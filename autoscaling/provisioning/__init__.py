"""The reconcile pass: make the monitoring host and Jenkins match the desired state of every config.

    inputs.py        settings and the database read into plain snapshots (render_context, service_spec(s))
    host.py          the monitoring host: plan, validate, swap, reload, restore
    jenkins_jobs.py  Jenkins: each service's job created, updated or deleted to match (JobState per job)

A pass renders the desired state (rendering.py), compares it with what is on the host and in Jenkins, and
changes only what differs. What is known to be in step is not rendered at all: the digest of each service's
inputs (rendering.spec_digest) and of the host's inputs is kept beside the pushed digests, so a pass with no
change reads the host's digests with one command, skips the jobs unchanged since their push (unless
`full_check`) and renders nothing. `reconcile(check_only=...)` is the one entry point; it does no database writes itself
and returns a `PassResult` that services.py records. The caller holds the provisioning lease, so two passes
never run at once.
"""

import difflib
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field

from autoscaling import rendering
from autoscaling.provisioning import host, inputs, jenkins_jobs

DIFF_LIMIT = 200_000
# Files the portal shares with the operators: it manages only a part of each.
SHARED_FILE_KINDS = ("prometheus_config", "alertmanager_config")


@dataclass
class PassResult:
    """What a pass found and did; services.py stores it on the ProvisioningRun and the configs."""

    changed_files: list = field(default_factory=list)
    jenkins_changes: list = field(default_factory=list)
    drift: list = field(default_factory=list)
    reloads: list = field(default_factory=list)
    ssh_round_trips: int = 0
    diff: str = ""  # what the portal manages
    unmanaged_diff: str = ""  # prometheus.yml and alertmanager.yml in full (redacted): administrators only
    # One error for the host side (with the services a validator named, if any) and one per Jenkins job.
    host_error: str = ""
    host_error_services: set = field(default_factory=set)
    held_back: set = field(default_factory=set)  # services whose rules were left as on the host, the rest pushed
    jenkins_errors: dict = field(default_factory=dict)  # service name -> message
    pushed_digests: dict = field(default_factory=dict)
    managed_jobs: list = field(default_factory=list)

    @property
    def differs(self):
        return bool(self.changed_files or self.jenkins_changes)

    @property
    def failed(self):
        return bool(self.host_error or self.jenkins_errors)


def reconcile(
    *, specs, pushed_digests, managed_jobs, check_only=False, full_check=True, renew=lambda: None, reload_all=False
):
    """One pass over the host and Jenkins. Never raises for an outage: errors are in the result.

    Without `full_check` a Jenkins job whose rendering is unchanged since its last push is not read back; the
    periodic pass, `sync_autoscaling` and "sync now" do read every job and so find and repair hand edits. `renew`
    is called now and then from this thread to keep the caller's lease. `reload_all` reloads Prometheus and
    Alertmanager even when their files need no change (after a pass that died between swapping and reloading).
    """
    ctx = inputs.render_context()
    # Jenkins and the host are independent: Jenkins is done in the background while the host is handled.
    with ThreadPoolExecutor(max_workers=1) as executor:
        jenkins_future = executor.submit(
            jenkins_jobs.reconcile,
            specs,
            ctx,
            pushed_digests,
            managed_jobs,
            check_only=check_only,
            full_check=full_check,
        )
        try:
            on_host = host.reconcile(
                specs, ctx, pushed_digests, check_only=check_only, renew=renew, reload_all=reload_all
            )
        finally:
            while not futures_wait([jenkins_future], timeout=20).done:
                renew()
    in_jenkins = jenkins_future.result()

    host_digests = on_host.digests
    if host_digests is None:
        host_digests = {k: v for k, v in pushed_digests.items() if not k.startswith(jenkins_jobs.DIGEST_PREFIX)}
    # Everyone sees the diff of what the portal manages; the whole of the shared files only with permission.
    diffs = [
        _unified(c.path, rendering.managed_part(c.kind, c.current, ctx), rendering.managed_part(c.kind, c.desired, ctx))
        for c in on_host.plan
    ]
    diffs += [_job_diff(job) for job in in_jenkins.changed]
    shared = [_unified(c.path, c.current, c.desired) for c in on_host.plan if c.kind in SHARED_FILE_KINDS]
    return PassResult(
        changed_files=on_host.changed_files,
        jenkins_changes=in_jenkins.changes,
        drift=on_host.drift + in_jenkins.drift,
        reloads=on_host.reloads,
        ssh_round_trips=on_host.ssh_round_trips,
        diff=rendering.shown(_cut("\n".join(diffs)), ctx),
        unmanaged_diff=rendering.shown(_cut("\n".join(shared)), ctx),
        host_error=rendering.shown(on_host.error, ctx),
        host_error_services=on_host.error_services,
        held_back=on_host.held_back,
        jenkins_errors={name: rendering.shown(message, ctx) for name, message in in_jenkins.errors.items()},
        pushed_digests={**host_digests, **in_jenkins.digests},
        managed_jobs=in_jenkins.managed_jobs,
    )


def _cut(text):
    return text[:DIFF_LIMIT] + ("\n... (diff cut)" if len(text) > DIFF_LIMIT else "")


def _unified(path, current, desired):
    return "".join(
        difflib.unified_diff(
            (current or "").splitlines(keepends=True),
            (desired or "").splitlines(keepends=True),
            fromfile=f"{path} (host)",
            tofile=f"{path} (portal)",
        )
    )


def _job_diff(job):
    name = f"jenkins job {job.name}"
    if job.action == "delete":
        return f"--- {name} (host)\n+++ {name} (portal: deleted)\n"
    return _unified(name, job.current, job.xml)
