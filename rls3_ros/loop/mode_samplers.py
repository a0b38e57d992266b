"""Samplers that choose a generation mode per step (pure Python, no ROS).

Both act through the same env, scheduler and ROS graph as SAC and random: per step they pick
one of :data:`rls3_ros.loop.modes.MODES` and send a uniform random action inside it. They are
scheduler callbacks too: they see every finished episode (which modes made which relations,
at what render cost) and every fine-tune's evaluation (the validation split, per term
combination), which is the only feedback they use.

- ``upper`` — the non-learned upper bound. It reads the VLM's current per-combination
  validation error and the measured yield of each mode (relations of each combination per
  render) and puts most of its renders into the modes that produce what the VLM gets wrong:
  score(m) = sum over combinations c of yield(m, c) * error(c) * share(c), where share(c) is
  the combination's share of the validation set. It is privileged (it reads the error table
  directly); it says how much room selection has.
- ``teacher`` — learns which mode to use from **learning progress** (Graves et al. 2017,
  Matiisen et al. 2017), with term combinations as the "tasks": after each fine-tune, the
  drop of each combination's validation loss (weighted by its share of the validation set) per
  relation of that combination in the fine-tuning batch is that combination's learning progress
  LP(c), smoothed over fine-tunes and shrunk toward the mean when it rests on few relations. A
  mode's value per render is sum over c of yield(m, c) * LP(c), with the yields measured from its
  own generation; the policy is softmax(value / temperature) mixed with an epsilon of uniform
  exploration. It never sees the error table, only how much the VLM improved on what.

Before any feedback both sample the modes uniformly.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import numpy as np

from rls3_ros.core.safe_state import dump_state, load_state
from rls3_ros.loop.agents import _LoopAgent
from rls3_ros.loop.env import EpisodeRecord
from rls3_ros.loop.modes import MODES, mode_action
from rls3_ros.loop.scheduler import IterationInfo, SchedulerCallbacks
from rls3_ros.vlm.interface import combo_key

FEEDBACK_SPLIT = "val"


class _ModeSampler(_LoopAgent, SchedulerCallbacks):
    """A loop agent whose action is a mode; subclasses set :meth:`policy`."""

    needs_validation = True

    def __init__(self, envs, seed: int = 0, epsilon: float = 0.15, **kwargs):
        super().__init__(envs, seed)
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1] (got {epsilon})")
        self.epsilon = float(epsilon)
        self.probs = np.full(len(MODES), 1.0 / len(MODES))
        # renders (steps) per mode, and relations per (mode, combination), over the whole run
        self.attempts = {m: 0 for m in MODES}
        self.yields: Dict[str, Dict[str, int]] = {m: {} for m in MODES}
        # the same, for the batch since the last fine-tune (credit assignment)
        self.batch_attempts = {m: 0 for m in MODES}
        self.batch_yields: Dict[str, Dict[str, int]] = {m: {} for m in MODES}
        self.history: List[Dict] = []  # policy after each fine-tune (for the report)

    # ------------------------------------------------------------------ acting
    def _act(self, i, env):
        with self._lock:
            p = self.probs.copy()
        m = MODES[int(self.rngs[i].choice(len(MODES), p=p / p.sum()))]
        return env.step(mode_action(m, self.rngs[i]))

    # ------------------------------------------------------------------ feedback
    def on_episode(self, scheduler, record: EpisodeRecord) -> None:
        with self._lock:
            for m, n in record.mode_counts.items():
                if m in self.attempts:
                    self.attempts[m] += n
                    self.batch_attempts[m] += n
            for s in record.samples:
                m = record.sample_modes.get(s.sample_id)
                if m not in self.yields:
                    continue
                for r in s.relations:
                    c = combo_key(r.terms)
                    self.yields[m][c] = self.yields[m].get(c, 0) + 1
                    self.batch_yields[m][c] = self.batch_yields[m].get(c, 0) + 1

    def on_iteration(self, scheduler, info: IterationInfo) -> None:
        val = info.splits.get(FEEDBACK_SPLIT)
        with self._lock:
            if val is not None:
                self.update(info.iteration, val)
            self.batch_attempts = {m: 0 for m in MODES}
            self.batch_yields = {m: {} for m in MODES}
            self.history.append({"iteration": info.iteration, "renders": info.renders,
                                 "probs": {m: float(p) for m, p in zip(MODES, self.probs)}})

    def update(self, iteration: int, val: Dict) -> None:
        raise NotImplementedError

    def _mix(self, weights: np.ndarray) -> np.ndarray:
        w = np.clip(np.asarray(weights, dtype=float), 0.0, None)
        w = w / w.sum() if w.sum() > 0 else np.full(len(MODES), 1.0 / len(MODES))
        return (1.0 - self.epsilon) * w + self.epsilon / len(MODES)

    # ------------------------------------------------------------------ state
    def _state(self) -> Dict:
        return {"probs": self.probs.tolist(), "attempts": self.attempts, "yields": self.yields,
                "batch_attempts": self.batch_attempts, "batch_yields": self.batch_yields, "history": self.history}

    def _load_state(self, d: Dict) -> None:
        self.probs = np.asarray(d["probs"], dtype=float)
        for k in ("attempts", "yields", "batch_attempts", "batch_yields", "history"):
            setattr(self, k, d[k])

    def save(self, directory):
        super().save(directory)
        dump_state(directory, "mode_sampler", self._state())  # JSON, no pickle (issue 26)
        with open(os.path.join(directory, "mode_policy.json"), "w") as f:
            json.dump({m: float(p) for m, p in zip(MODES, self.probs)}, f)

    def load(self, directory):
        super().load(directory)
        if os.path.exists(os.path.join(directory, "mode_sampler.json")):
            self._load_state(load_state(directory, "mode_sampler"))


def _shares(val: Dict) -> Dict[str, float]:
    counts = val.get("combo_counts") or {}
    n = float(sum(counts.values())) or 1.0
    return {c: k / n for c, k in counts.items()}


class UpperBoundSampler(_ModeSampler):
    """Privileged: modes weighted by yield x current validation error (see module docstring)."""

    name = "upper"

    def __init__(self, envs, seed: int = 0, epsilon: float = 0.1, sharpness: float = 4.0, **kwargs):
        super().__init__(envs, seed, epsilon=epsilon)
        self.sharpness = float(sharpness)

    def update(self, iteration, val):
        acc = val.get("per_combo") or {}
        share = _shares(val)
        score = np.zeros(len(MODES))
        for i, m in enumerate(MODES):
            n = max(1, self.attempts[m])
            for c, sh in share.items():
                score[i] += self.yields[m].get(c, 0) / n * (1.0 - float(acc.get(c, 0.0))) * sh
        if score.max() <= 0:
            return
        # sharpen: the best modes take most renders, the others keep a share to track their yield
        self.probs = self._mix((score / score.max()) ** self.sharpness)


class TeacherSampler(_ModeSampler):
    """Learning-progress teacher over generation modes (see module docstring)."""

    name = "teacher"

    def __init__(self, envs, seed: int = 0, epsilon: float = 0.15, temperature: float = 0.3, alpha: float = 0.3,
                 prior: float = 20.0, **kwargs):
        super().__init__(envs, seed, epsilon=epsilon)
        if temperature <= 0 or not 0 < alpha <= 1 or prior < 0:
            raise ValueError("temperature must be > 0, alpha in (0, 1] and prior >= 0")
        self.temperature, self.alpha, self.prior = float(temperature), float(alpha), float(prior)
        self.lp: Dict[str, float] = {}  # combination -> smoothed learning progress per trained relation
        self.lp_n: Dict[str, float] = {}  # combination -> relations its estimate rests on
        self.prev_loss: Optional[Dict[str, float]] = None

    def update(self, iteration, val):
        loss = val.get("per_combo_loss") or {}
        share = _shares(val)
        if self.prev_loss is not None:
            for c, l_now in loss.items():
                if c not in self.prev_loss:
                    continue
                trained = sum(self.batch_yields[m].get(c, 0) for m in MODES)
                if trained == 0:
                    continue
                # drop of this combination's validation loss, weighted by its share, per relation trained on
                x = (self.prev_loss[c] - l_now) * share.get(c, 0.0) / trained
                self.lp[c] = x if c not in self.lp else (1 - self.alpha) * self.lp[c] + self.alpha * x
                self.lp_n[c] = self.lp_n.get(c, 0.0) + trained
            if self.lp:
                # shrink each combination's estimate toward the mean (few relations = little evidence)
                mean = float(np.average(list(self.lp.values()), weights=list(self.lp_n.values())))
                lp = {c: (self.lp_n[c] * v + self.prior * mean) / (self.lp_n[c] + self.prior) for c, v in self.lp.items()}
                # a combination whose loss rose is not "negative progress" to avoid: it is no progress
                lp = {c: max(0.0, v) for c, v in lp.items()}
                mean = max(0.0, mean)
                value = np.zeros(len(MODES))
                for i, m in enumerate(MODES):
                    n = max(1, self.attempts[m])
                    value[i] = sum(k / n * lp.get(c, mean) for c, k in self.yields[m].items())
                scale = float(np.abs(value).max()) or 1.0
                z = value / scale / self.temperature
                self.probs = self._mix(np.exp(z - z.max()))
        self.prev_loss = dict(loss)

    def _state(self):
        d = super()._state()
        d.update(lp=self.lp, lp_n=self.lp_n, prev_loss=self.prev_loss)
        return d

    def _load_state(self, d):
        super()._load_state(d)
        self.lp, self.lp_n, self.prev_loss = dict(d["lp"]), dict(d["lp_n"]), d["prev_loss"]
