"""What a run serves: the adapter that last passed the promotion gate (pure Python, no ROS).

A run directory's ``served.json`` names it (written atomically at every promotion):
``{"iteration": k, "adapter": "<run>/adapters/iter_k", "decision": {...}}``; without a promotion
there is no file and the run serves its base. ``rls3 query --run runs/<ts>`` and the query server's
``set_adapter`` take that adapter; adapters that failed the gate stay on disk under ``adapters/``
and are never named here.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Optional

from rls3_ros.core.atomic_io import atomic_write_json
from rls3_ros.loop.promotion import GateDecision
from rls3_ros.loop.scheduler import SchedulerCallbacks

SERVED_FILE = "served.json"


def served_path(run_dir: str) -> str:
    return os.path.join(run_dir, SERVED_FILE)


def read_served(run_dir: str) -> Optional[Dict[str, Any]]:
    """The run's served adapter record, or None when nothing was promoted (the base is served)."""
    p = served_path(run_dir)
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        rec = json.load(f)
    if not isinstance(rec, dict) or not isinstance(rec.get("adapter"), str):
        raise ValueError(f"{p} is not a served-adapter record (no 'adapter' path)")
    return rec


def served_adapter(run_dir: str) -> str:
    """The adapter directory a run serves ("" = its base model)."""
    rec = read_served(run_dir)
    return rec["adapter"] if rec else ""


class ServedAdapterFile(SchedulerCallbacks):
    """Writes ``served.json`` when an adapter is promoted and logs every gate decision."""

    def __init__(self, run_dir: str, log: Callable[[str], None] = print):
        self.run_dir, self.log = run_dir, log

    def on_iteration(self, scheduler, info) -> None:
        g = info.gate
        if g and not g.get("promoted"):
            self.log(f"gate: iteration {info.iteration} not promoted ({g['reason']}); serving "
                     f"{'iteration ' + str(scheduler.served_iteration) if scheduler.served_iteration else 'the base'}")

    def on_promotion(self, scheduler, decision: GateDecision) -> None:
        atomic_write_json(served_path(self.run_dir), {"iteration": decision.iteration, "adapter": decision.candidate,
                                                      "decision": decision.to_dict()}, indent=1)
        self.log(f"gate: iteration {decision.iteration} promoted ({decision.reason}): validation "
                 f"{decision.served_accuracy:.3f} -> {decision.candidate_accuracy:.3f}")
