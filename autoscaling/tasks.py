"""django-q entry points of provisioning: each loads what it needs by id and calls a service; safe to run twice."""

from autoscaling import services


def provisioning_run_task(run_id):
    """Run the queued pass `run_id` (returns at once when another pass has already served it)."""
    run = services.provisioning_run(run_id=run_id)
    return run.status if run else None


def provisioning_periodic():
    """The schedule's pass: retries earlier failures, serves requests whose task was lost, repairs drift."""
    run = services.provisioning_run(reason="schedule", wait=5.0)
    return run.status
