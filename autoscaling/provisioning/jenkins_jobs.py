"""Jenkins' side of a pass: each service's job is created, updated (which also enables or disables it) or deleted
to match its rendering.

Jenkins offers no bulk read of job configs, so each job is read once (on JENKINS_WORKERS threads) and, when it
differs, written without reading it again. Without `full_check` a job whose rendering is unchanged since its
last push (the digest of its inputs is the one pushed) is neither rendered nor read.
"""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from autoscaling import rendering
from common.clients import jenkins_client
from integrations.errors import IntegrationError

logger = logging.getLogger(__name__)

JENKINS_WORKERS = 16
OUTAGE_CODES = ("unreachable", "timeout")
DIGEST_PREFIX = "jenkins:"  # a job's key among the pushed digests, beside the host's file paths


@dataclass
class JobState:
    """One job in a pass: what the portal wants, what Jenkins has, and what the pass does about it."""

    name: str
    service_name: str | None = None  # None: a job the portal made for a config that is gone
    xml: str | None = None  # the rendering; None: the job is to be deleted
    digest: str | None = None  # of the inputs of the rendering (rendering.spec_digest)
    current: str | None = None  # config.xml as read from Jenkins; None: no such job (or not read)
    action: str | None = None  # create, update or delete; None: in step
    error: IntegrationError | None = None

    @property
    def digest_key(self):
        return DIGEST_PREFIX + self.name

    @property
    def error_key(self):
        # Errors are shown on the service's config; a job of a deleted config has only its name.
        return self.service_name or self.name


@dataclass
class JenkinsOutcome:
    changed: list = field(default_factory=list)  # JobState with an action, in the order they are applied
    errors: dict = field(default_factory=dict)  # service (or job) name -> message
    drift: list = field(default_factory=list)
    digests: dict = field(default_factory=dict)  # DIGEST_PREFIX + job name -> inputs digest of what Jenkins holds
    managed_jobs: list = field(default_factory=list)

    @property
    def changes(self):
        return [{"job": job.name, "action": job.action} for job in self.changed]


class _Jenkins:
    """One client (one HTTP session) per worker thread; once Jenkins is found down, the other jobs are not tried:
    500 time-outs would hold the pass for minutes."""

    def __init__(self):
        self._local = threading.local()
        self._outage = []

    def call(self, method, *args):
        if self._outage:
            raise self._outage[0]
        if getattr(self._local, "client", None) is None:
            self._local.client = jenkins_client()
        try:
            return getattr(self._local.client, method)(*args)
        except IntegrationError as exc:
            if exc.code in OUTAGE_CODES:
                self._outage.append(exc)
            raise


def reconcile(specs, ctx, pushed_digests, managed_jobs, *, check_only, full_check):
    started = time.monotonic()
    outcome = JenkinsOutcome(managed_jobs=sorted(managed_jobs))
    wanted = []
    digests = rendering.spec_digests(specs, ctx)
    for spec in specs:
        # A job's digest is that of its inputs: an unchanged job is skipped before it is rendered.
        job = JobState(spec.job_name, spec.service_name, digest=digests[spec.service_name])
        if not full_check and job.name in managed_jobs and pushed_digests.get(job.digest_key) == job.digest:
            outcome.digests[job.digest_key] = job.digest
            continue
        job.xml = rendering.job_xml(spec, ctx)
        wanted.append(job)
    wanted.sort(key=lambda job: job.name)
    obsolete = sorted(set(managed_jobs) - {spec.job_name for spec in specs})
    jenkins = _Jenkins()

    def read(job):
        try:
            job.current = jenkins.call("job_config", job.name)
        except IntegrationError as exc:
            job.error = exc
        return job

    def write(job):
        try:
            if job.action == "delete":
                jenkins.call("delete_job", job.name)
            elif job.action == "create":
                jenkins.call("create_job", job.name, job.xml)
            else:
                jenkins.call("update_job", job.name, job.xml)
        except IntegrationError as exc:
            job.error = exc
        return job

    with ThreadPoolExecutor(max_workers=JENKINS_WORKERS) as pool:
        for job in pool.map(read, wanted):
            if job.error is not None:
                outcome.errors[job.error_key] = str(job.error)
                continue
            outcome.digests[job.digest_key] = job.digest
            if job.current is None:
                job.action = "create"
            # Jenkins re-serializes what it is given: compare canonical forms when the text differs.
            elif job.current != job.xml and rendering.normalize_job_xml(job.current) != rendering.normalize_job_xml(
                job.xml
            ):
                job.action = "update"
                # Unchanged in the portal since the last push, yet different in Jenkins: edited by hand.
                if pushed_digests.get(job.digest_key) == job.digest:
                    outcome.drift.append(f"jenkins job {job.name}")
            if job.action:
                outcome.changed.append(job)
        outcome.changed += [JobState(name, action="delete") for name in obsolete]
        if check_only:
            return outcome

        managed = set(managed_jobs) | {job.name for job in wanted}
        for job in pool.map(write, outcome.changed):
            if job.error is None:
                if job.action == "delete":
                    managed.discard(job.name)  # also when it was gone already: delete_job does not raise for that
                continue
            outcome.errors[job.error_key] = str(job.error)
            if job.action == "delete":
                logger.warning("could not delete Jenkins job %s: %s", job.name, job.error)
            else:
                outcome.digests.pop(job.digest_key, None)
        outcome.managed_jobs = sorted(managed)
    logger.debug("jenkins part took %.2fs", time.monotonic() - started)
    return outcome
