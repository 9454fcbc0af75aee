"""Reads of the events app: Jenkins build history (secrets masked)."""

from common.clients import jenkins_client

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
