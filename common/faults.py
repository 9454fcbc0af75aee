"""Fault points, for the restart tests only: a portal process kills itself at a named point of a flow.

    fault_point("trigger.build_requested")

does nothing unless the environment variable PORTAL_FAULT_POINT holds that very name. When it does, the process
sends SIGKILL to its whole process group: the web server or the task cluster with all its workers dies there and
then, as it would in a crash, a power loss or at the OOM killer's hands (no clean-up, no transaction committed,
no answer sent). tests/e2e/test_restart.py sets the variable in the environment of the portal processes it starts
(each in a process group of its own), then starts them again without it. Never set it anywhere else.

The points (docs/operations-guide.md lists them too):
    webhook.notification_stored   the webhook stored the notification (committed), before it wakes the decider
    decision.event_created        the decision and its event are committed; the trigger is not queued yet
    trigger.build_requested       Jenkins accepted the build request; the event is not marked triggered yet
    provisioning.files_swapped    a pass swapped the new files in on the monitoring host, before the reloads
"""

import os
import signal

ENV = "PORTAL_FAULT_POINT"


def fault_point(name):
    """Kill this process's group here when PORTAL_FAULT_POINT names this point; otherwise nothing."""
    if os.environ.get(ENV) == name:
        os.killpg(os.getpgrp(), signal.SIGKILL)
