"""What the RLS3 loop has done so far: the scheduler's counters and statistics (pure Python, no ROS).

:class:`LoopCounters` is the part of :class:`rls3_ros.loop.scheduler.Scheduler` that counts: episodes,
steps, renders, valid samples, generated terms and combinations, generation modes, invalid moves, the
seconds each stage took (on the loop's thread and in a background fine-tune) and the wall time across
resumed sessions; :class:`IterationInfo` is one fine-tuning iteration as the history, the metrics file
and the report keep it.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional

from rls3_ros.loop.env import EpisodeRecord
from rls3_ros.vlm.interface import Evaluation, combo_key

COUNTERS = ("episodes", "steps", "renders", "valid_samples", "trained_samples", "j2_sum", "j2_n")


@dataclass
class IterationInfo:
    """One fine-tuning iteration (iteration 0 = the base model, evaluated before any tuning)."""

    iteration: int
    episodes: int
    steps: int
    renders: int
    valid_samples: int  # cumulative valid samples generated
    batch_samples: int  # generated samples in this fine-tuning set
    replay_samples: int  # base samples mixed in
    trained_samples: int  # cumulative generated samples used for fine-tuning
    fine_tune_loss: float
    fine_tune_s: float
    test_accuracy: float
    test_per_term: Dict[str, float]
    test_counts: Dict[str, int]
    test_loss: float
    val_accuracy: float
    adapter_path: str
    best_iteration: int
    wall_s: float
    batch_terms: Dict[str, int] = field(default_factory=dict)
    eval_s: float = 0.0  # time of this evaluation (test + val)
    total_fine_tune_s: float = 0.0  # cumulative time in fine-tuning
    total_eval_s: float = 0.0  # cumulative time in evaluation
    # every evaluated split (test, val, tail, ...): accuracy, per term / combination accuracy and loss
    splits: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    earlier_samples: int = 0  # cumulative: samples of earlier batches trained on again
    gate: Dict[str, Any] = field(default_factory=dict)  # the promotion gate's decision (GateDecision.to_dict)
    served_iteration: int = 0  # what is served after this iteration (0 = the base)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def split_record(ev: Evaluation) -> Dict[str, Any]:
    """What the history keeps of one split's evaluation (JSON-ready)."""
    return {"accuracy": float(ev.accuracy), "loss": float(ev.mean_loss), "n": int(ev.n),
            "correct": "".join("1" if c else "0" for c in ev.correct),  # per relation: paired comparisons
            "per_term": dict(ev.per_term), "per_term_loss": dict(ev.per_term_loss), "counts": dict(ev.counts),
            "per_combo": dict(ev.per_combo), "per_combo_loss": dict(ev.per_combo_loss),
            "combo_counts": dict(ev.combo_counts)}


def _add(into: Dict[str, Any], key: str, n) -> None:
    into[key] = into.get(key, 0) + n


class LoopCounters:
    """The loop's counters (a base of the scheduler; ``background`` says whether fine-tunes run in a thread)."""

    background = False

    def _init_counters(self) -> None:
        self.episodes = 0
        self.steps = 0
        self.renders = 0
        self.valid_samples = 0
        self.trained_samples = 0
        self.generated_terms: Dict[str, int] = {}
        self.generated_combos: Dict[str, int] = {}
        self.mode_counts: Dict[str, int] = {}
        self.stage_s: Dict[str, float] = {}  # env stages (sim, caption, score) -> seconds
        self.invalid: Dict[str, int] = {}
        self.move_kinds: Dict[str, int] = {}
        self.j2_sum = 0.0
        self.j2_n = 0
        self.total_fine_tune_s = 0.0
        self.total_eval_s = 0.0
        self.wait_s = 0.0  # background: time the loop waited for a fine-tune to land
        self.foreground_eval_s = 0.0  # background: evaluations on the loop's thread (the base model's)
        self.wall_offset = 0.0  # wall time of earlier sessions (resume)
        self._t0 = time.monotonic()

    def count_episode(self, record: EpisodeRecord) -> None:
        """Add one finished episode to the counters."""
        self.episodes += 1
        self.steps += record.steps
        self.renders += record.renders
        self.valid_samples += len(record.samples)
        for s in record.samples:
            for r in s.relations:
                for t in r.terms:
                    _add(self.generated_terms, t, 1)
                _add(self.generated_combos, combo_key(r.terms), 1)
        for into, counts in ((self.mode_counts, record.mode_counts), (self.stage_s, record.timing),
                             (self.invalid, record.invalid), (self.move_kinds, record.move_kinds)):
            for k, v in counts.items():
                _add(into, k, v)
        if not math.isnan(record.j2):
            self.j2_sum += record.j2
            self.j2_n += 1

    def _counts(self) -> Dict[str, int]:
        """The generation counters an iteration's curve point is taken at."""
        return {"episodes": self.episodes, "steps": self.steps, "renders": self.renders,
                "valid_samples": self.valid_samples}

    # ------------------------------------------------------------------ time
    @property
    def wall_s(self) -> float:
        return self.wall_offset + time.monotonic() - self._t0

    def stage_totals(self) -> Dict[str, float]:
        """Cumulative seconds per stage on the loop's own thread (take one before a session, pass it
        to :meth:`time_split`). With background fine-tuning, "fine_tune" is the time the loop waited
        for a fine-tune (and its evaluation) to finish, "eval" only the base model's evaluation;
        what the background thread spent is :meth:`background_totals`."""
        out = {k: float(self.stage_s.get(k, 0.0)) for k in ("sim", "caption", "features", "score", "agent_update")}
        if self.background:
            out["fine_tune"] = float(self.wait_s)
            out["eval"] = float(self.foreground_eval_s)
        else:
            out["fine_tune"] = float(self.total_fine_tune_s)
            out["eval"] = float(self.total_eval_s)
        return out

    def background_totals(self) -> Dict[str, float]:
        """Seconds the background thread fine-tuned and evaluated (zeros in the synchronous loop)."""
        if not self.background:
            return {"fine_tune": 0.0, "eval": 0.0}
        return {"fine_tune": round(float(self.total_fine_tune_s), 3),
                "eval": round(float(self.total_eval_s - self.foreground_eval_s), 3)}

    def time_split(self, loop_s: float, since: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        """Seconds per stage of a loop session that ran ``loop_s`` (stage totals minus ``since``):
        sim (resets, moves, renders, validity), caption, features (the VLM's image features of
        renders, computed while a simulator worker moves), score (J2 scoring, with any features not
        computed before), agent_update (the agent's gradient steps run while a simulator worker
        moves), fine_tune, eval; "agent" is the rest (policy, updates run at other times,
        bookkeeping). They add up to ``loop_s``."""
        now, since = self.stage_totals(), since or {}
        out = {k: round(max(0.0, v - since.get(k, 0.0)), 3) for k, v in now.items()}
        out["agent"] = round(max(0.0, loop_s - sum(out.values())), 3)
        return out

    # ------------------------------------------------------------------ checkpoint
    def counters_state(self) -> Dict[str, Any]:
        """The counters as a checkpoint stores them."""
        return {**{k: getattr(self, k) for k in COUNTERS},
                "generated_terms": dict(self.generated_terms), "generated_combos": dict(self.generated_combos),
                "mode_counts": dict(self.mode_counts), "stage_s": dict(self.stage_s), "invalid": dict(self.invalid),
                "move_kinds": dict(self.move_kinds), "wall_s": self.wall_s,
                "total_fine_tune_s": self.total_fine_tune_s, "total_eval_s": self.total_eval_s,
                "wait_s": self.wait_s, "foreground_eval_s": self.foreground_eval_s}

    def load_counters_state(self, d: Dict[str, Any]) -> None:
        """The counters from :meth:`counters_state` (keys added since a checkpoint was written start at zero)."""
        for k in COUNTERS:
            setattr(self, k, d[k])
        self.generated_terms = dict(d["generated_terms"])
        self.generated_combos = dict(d.get("generated_combos", {}))
        self.mode_counts = dict(d.get("mode_counts", {}))
        self.stage_s = dict(d.get("stage_s", {}))
        self.invalid = dict(d["invalid"])
        self.move_kinds = dict(d["move_kinds"])
        self.wall_offset = float(d.get("wall_s", 0.0))
        self.total_fine_tune_s = float(d.get("total_fine_tune_s", 0.0))
        self.total_eval_s = float(d.get("total_eval_s", 0.0))
        self.wait_s = float(d.get("wait_s", 0.0))
        self.foreground_eval_s = float(d.get("foreground_eval_s", 0.0))
        self._t0 = time.monotonic()
