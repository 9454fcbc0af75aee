"""The build's state file: what the pipeline has done so far, so the undo knows exactly what to take back.

One JSON file in the build's workspace (PIPELINE_STATE, default ./autoscale-state.json), rewritten atomically after
every change: `ips` (reserved addresses and their network settings), `vms` (name, managed object id, address),
`f5_members` (pool, partition, address, port), `failure` (step and message of the first failure), `running` (the
step whose command has not reported its result yet), `undo_failures`.
"""

import json
import os
from pathlib import Path

DEFAULT_PATH = "autoscale-state.json"


def _empty():
    return {"ips": [], "vms": [], "f5_members": [], "failure": None}


class PipelineState:
    def __init__(self, path=None):
        self.path = Path(path or os.environ.get("PIPELINE_STATE") or DEFAULT_PATH)
        self.data = _empty()
        if self.path.is_file():
            self.data.update(json.loads(self.path.read_text() or "{}"))

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        tmp.replace(self.path)

    def clear(self):
        """A new build: forget what an earlier build in this workspace recorded."""
        self.path.unlink(missing_ok=True)
        self.data = _empty()

    def __getitem__(self, key):
        return self.data[key]

    def add(self, key, item):
        self.data[key].append(item)
        self.save()

    def remove(self, key, match):
        self.data[key] = [item for item in self.data[key] if not match(item)]
        self.save()

    def record_failure(self, step, message):
        """Keep the first failure: the undo steps that follow may fail too, but the cause is the first. A
        contract.StepMessage keeps its id and parameters too (the final status sends them, shown translated)."""
        if not self.data.get("failure"):
            failure = {"step": step, "message": str(message)}
            msgid = getattr(message, "msgid", None)
            if msgid is not None:
                failure.update(msgid=msgid, params=dict(message.params))
            self.data["failure"] = failure
            self.save()
