"""The RLS3 scheduler: the one synchroniser of the loop (pure Python, no ROS).

The paper's parameters (``../shared/paper.md`` section 1):
- ``T``  steps per episode, ``T0`` valid samples per episode (the env ends an episode after T
  steps or as soon as it holds T0 valid samples; both live in the env, recorded here);
- ``eta`` rate at which an episode's valid samples enter the fine-tuning batch: each episode
  contributes ``round(eta * n_valid)`` of its samples, chosen at random (exact count, so a run
  with ``eta * T0`` integral gets batches of exactly ``E * eta * T0``);
- ``E``  episodes per fine-tuning iteration: after every E-th episode the VLM is fine-tuned
  on the batch, the batch is cleared ("Model Update", "Clear Batch").

Additions (documented parameters, lessons of the toy RLS3 in DESIGN.md):
- ``replay_fraction``: share of every fine-tuning set drawn from base (pre-training-like)
  data, so fine-tuning on hard samples does not forget the strong relations;
- evaluation on the fixed held-out test set after every fine-tune (and of the base model
  before the first one); early stopping when the validation accuracy has not improved by
  ``min_delta`` for ``patience`` fine-tunes (0 = off); the best-validation iteration is kept;
- budgets counted both in simulator renders (the real cost) and in valid samples; when a
  budget runs out with a non-empty batch, a last (shorter) fine-tune uses it, so no
  generated sample is wasted;
- ``cumulative``: every fine-tune trains on all samples generated so far (+ replay), so a capable
  base is not pulled toward the latest small batch (measured on the served base: fine-tuning on
  one batch at a time lowered it, on everything so far with replay from its own pre-training
  distribution it rose; docs/learning.md);
- ``gate``: the promotion gate (``rls3_ros.loop.promotion``). After every fine-tune the new adapter
  is compared with the served model (the base until a first promotion) on the validation split,
  relation by relation; it becomes the served adapter only if it wins a paired sign test. Every
  decision is in the iteration's record (``gate``), ``served_iteration`` / ``served_adapter`` name
  what is served, and callbacks hear ``on_promotion``.

Background fine-tuning (``background=True``, the in-process loop's ``run.overlap_fine_tune``):
the E-th episode hands the batch to a thread that fine-tunes and evaluates a second copy of the
VLM (the trainer and evaluator given here) while the agent keeps sampling, scored by the current
adapter; the iteration *lands* ``max(1, E // 2)`` episodes after it started, waiting for the
thread if it has not finished yet (a fixed point, not "when the thread is done": which adapter
scores which episode, and so the whole run, does not depend on thread timing); ``on_adapter``
loads its adapter into the scoring copy, then it is recorded exactly as a synchronous one. Batches, replay draws and fine-tunes are the same as in
the synchronous loop; only the adapter that scores the episodes in between is one iteration older.

Its configuration is the run configuration's ``loop`` section as validated
(:class:`rls3_ros.loop.config.LoopConfig`; ``SchedulerConfig`` is that model's old name here): a field
added there reaches ``Scheduler.config`` with no other edit. The counters and statistics are
:class:`rls3_ros.loop.loop_counters.LoopCounters`, the background thread
:class:`rls3_ros.loop.background.BackgroundFineTunes`; this module schedules.

Stages are injected, so the same scheduler runs in-process and inside the ``rl_sampler`` ROS
node: the sample source is whatever env/agent calls :meth:`Scheduler.on_episode` (the env's
``episode_hook``); the trainer (:class:`Trainer`) and the evaluator (:class:`Evaluator`) are
objects with one method each; :class:`SchedulerCallbacks` receive every episode and every
iteration (metrics files, TensorBoard, ROS topics) and the scheduler sets
``checkpoint_pending`` after each fine-tune so the owner can checkpoint at the agent's next
safe point.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from rls3_ros.core.scene import Sample
from rls3_ros.loop.background import BackgroundFineTunes
from rls3_ros.loop.config import LoopConfig
from rls3_ros.loop.env import EpisodeRecord
from rls3_ros.loop.loop_counters import IterationInfo, LoopCounters, split_record  # noqa: F401 - part of this API
from rls3_ros.loop.promotion import GateDecision, decide
from rls3_ros.vlm.interface import Evaluation, FineTuneResult

SchedulerConfig = LoopConfig  # the scheduler's configuration is the loop section, as validated


@dataclass
class TrainOutcome:
    result: FineTuneResult
    adapter_path: str = ""


class Trainer:
    """Fine-tunes the VLM; in-process (``rls3_ros.loop.runner``) or the FineTune action (ROS)."""

    def fine_tune(self, samples: Sequence[Sample], steps: int, iteration: int) -> TrainOutcome:
        raise NotImplementedError


class Evaluator:
    """Evaluates the current VLM on a fixed split: ``"test"`` or ``"val"``."""

    def evaluate(self, split: str) -> Optional[Evaluation]:
        raise NotImplementedError


class SchedulerCallbacks:
    """Override what you need; every method is called with the scheduler's lock held."""

    def on_episode(self, scheduler: "Scheduler", record: EpisodeRecord) -> None:
        pass

    def on_iteration(self, scheduler: "Scheduler", info: IterationInfo) -> None:
        pass

    def on_fine_tune_start(self, scheduler: "Scheduler", iteration: int, n_samples: int) -> None:
        pass

    def on_stop(self, scheduler: "Scheduler", reason: str) -> None:
        pass

    def on_promotion(self, scheduler: "Scheduler", decision: GateDecision) -> None:
        """An adapter passed the promotion gate and is now the served one."""


def _nan_if_none(x):
    return float("nan") if x is None else float(x)


class Scheduler(LoopCounters, BackgroundFineTunes):
    """Synchronises episodes, the fine-tuning batch, fine-tunes and evaluation (thread-safe)."""

    def __init__(
        self,
        config: LoopConfig,
        trainer: Trainer,
        evaluator: Optional[Evaluator] = None,
        replay_pool: Sequence[Sample] = (),
        callbacks: Sequence[SchedulerCallbacks] = (),
        extra_splits: Sequence[str] = (),
        always_validate: bool = False,
        background: bool = False,
        on_adapter: Optional[Callable[[str], None]] = None,
    ):
        self.config = config
        self.background = bool(background)
        self.on_adapter = on_adapter  # background: the scoring copy loads a landed iteration's adapter
        # background: a fine-tune lands this many episodes after it started (waiting for it if it has not
        # finished), so which adapter scores which episode does not depend on thread timing. Measured
        # (SAC, main job, 3 seeds): E // 2 learns as the synchronous loop does (0.619 vs 0.587 mean test
        # accuracy); E - 1 waits less (random: 17.3 vs 15.8 samples/s) but its staler rewards cost SAC
        # one seed 12 points (0.549 mean)
        self.land_after = max(1, int(config.E) // 2)
        self._inflight = None
        self._init_counters()
        # splits evaluated after every fine-tune besides "test" (e.g. the tail split), and whether
        # "val" is evaluated without early stopping (samplers that read the VLM's validation error)
        self.extra_splits = tuple(extra_splits)
        self.always_validate = bool(always_validate)
        self.trainer = trainer
        self.evaluator = evaluator
        self.replay_pool = list(replay_pool)
        self.callbacks = list(callbacks)
        self.lock = threading.RLock()
        self.rng = np.random.default_rng([int(config.seed), 7])
        self.batch: List[Sample] = []
        self.pool: List[Sample] = []  # cumulative: every batch trained on so far
        self.served_iteration = 0
        self.served_adapter = ""  # "" = the base model
        self.served_val_correct: Optional[List[bool]] = None
        self.gate_decisions: List[Dict[str, Any]] = []
        self.iteration = 0
        self.episodes_since_fine_tune = 0
        self.best_val = -math.inf
        self.best_iteration = 0
        self.bad_rounds = 0
        self.stop_reason = ""
        self.history: List[IterationInfo] = []
        self.checkpoint_pending = False
        self._extra_stop = threading.Event()

    # ------------------------------------------------------------------ status
    def budget_exhausted(self) -> bool:
        c = self.config
        return bool(
            (c.budget_valid_samples and self.valid_samples >= c.budget_valid_samples)
            or (c.budget_renders and self.renders >= c.budget_renders)
        )

    def done(self) -> bool:
        return bool(self.stop_reason) or self._extra_stop.is_set()

    def request_stop(self, reason: str = "stopped") -> None:
        """Stop from outside (Ctrl-C, node shutdown): the agent stops at its next step.

        Lock-free on purpose: the loop may hold the lock while it waits on a stage."""
        if not self.stop_reason:
            self.stop_reason = reason
        self._extra_stop.set()

    # ------------------------------------------------------------------ the loop
    def evaluate_base(self) -> IterationInfo:
        """Evaluate the model before any fine-tune (iteration 0); call once at the start."""
        with self.lock:
            info = self._evaluate_and_record(0, [], 0, None, 0.0, "")
            return info

    def on_episode(self, record: EpisodeRecord) -> None:
        """The env's episode hook: count, sub-sample into the batch, fine-tune every E episodes."""
        with self.lock:
            if self.done():
                return
            c = self.config
            self.count_episode(record)
            self.episodes_since_fine_tune += 1
            n_take = int(round(c.eta * len(record.samples)))
            if n_take:
                idx = self.rng.choice(len(record.samples), n_take, replace=False)
                self.batch.extend(record.samples[i] for i in sorted(idx))
            for cb in self.callbacks:
                cb.on_episode(self, record)
            if self._inflight is not None and self.episodes >= self._inflight.counts["episodes"] + self.land_after:
                self.land(wait=True)  # a fixed number of episodes after it started: runs are reproducible
            if self.episodes_since_fine_tune >= c.E and not self.stop_reason:
                self.fine_tune()
            if not self.stop_reason:
                if self.budget_exhausted():
                    if self.batch:
                        self.fine_tune()
                    self.land(wait=True)
                    self._stop("budget")
                elif c.max_iterations and self.iteration + (self._inflight is not None) >= c.max_iterations:
                    self.land(wait=True)
                    self._stop("max_iterations")

    def fine_tune(self) -> Optional[IterationInfo]:
        """Fine-tune on the batch (+ replay), clear it, evaluate, update early stopping. In the
        background mode the fine-tune starts here and lands later (:meth:`land`): returns None."""
        with self.lock:
            self.episodes_since_fine_tune = 0
            if not self.batch:
                return None
            self.land(wait=True)  # one fine-tune in flight at most
            if self.stop_reason:  # the landed one stopped the run (early stopping)
                return None
            c = self.config
            batch = list(self.batch)
            earlier = list(self.pool) if c.cumulative else []
            n_replay = 0
            if self.replay_pool and c.replay_fraction > 0:
                n_replay = int(round(c.replay_fraction / (1.0 - c.replay_fraction) * (len(batch) + len(earlier))))
                n_replay = min(n_replay, len(self.replay_pool))
            replay = [self.replay_pool[i] for i in self.rng.choice(len(self.replay_pool), n_replay, replace=False)] if n_replay else []
            iteration = self.iteration + 1
            for cb in self.callbacks:
                cb.on_fine_tune_start(self, iteration, len(earlier) + len(batch) + len(replay))
            self.batch = []  # "Clear Batch"
            if c.cumulative:
                self.pool.extend(batch)
            if self.background:
                self._start_background(iteration, batch, replay, earlier=earlier)
                return None
            return self._record_fine_tune(iteration, batch, replay,
                                          *self._train_and_evaluate(iteration, batch, replay, earlier),
                                          earlier=len(earlier))

    def restart_inflight(self) -> None:
        """After :meth:`load_state_dict`: start again the fine-tune a checkpoint caught in flight."""
        pending = getattr(self, "_saved_inflight", None)
        self._saved_inflight = None
        if pending is not None:
            it, batch, replay, counts = pending[:4]
            earlier = list(pending[4]) if len(pending) > 4 else []
            if self.background:
                self._start_background(it, batch, replay, counts, earlier=earlier)
            else:
                self._record_fine_tune(it, batch, replay, *self._train_and_evaluate(it, batch, replay, earlier),
                                       counts=counts, earlier=len(earlier))

    # ------------------------------------------------------------------ internals
    def _train_and_evaluate(self, iteration: int, batch: List[Sample], replay: List[Sample],
                            earlier: Sequence[Sample] = ()):
        """The fine-tune and the evaluation of its adapter (no scheduler state touched: may run in a thread).
        Steps follow the new batch (the same training per generated sample whatever ``earlier`` holds)."""
        t0 = time.monotonic()
        out = self.trainer.fine_tune(list(earlier) + batch + replay, self.config.steps_for(len(batch)), iteration)
        ft_s = time.monotonic() - t0
        return (out, ft_s, *self._evaluate())

    def _record_fine_tune(self, iteration, batch, replay, out, ft_s, evals, eval_s, counts=None,
                          earlier: int = 0) -> IterationInfo:
        self.total_fine_tune_s += ft_s
        self.iteration = iteration
        self.trained_samples += len(batch)
        terms: Dict[str, int] = {}
        for s in batch:
            for r in s.relations:
                for t in r.terms:
                    terms[t] = terms.get(t, 0) + 1
        info = self._record(iteration, batch, len(replay), out, ft_s, out.adapter_path, evals, eval_s, terms, counts,
                            earlier=earlier)
        if self.config.patience and self.bad_rounds >= self.config.patience:
            self._stop("early_stopping")
        self.checkpoint_pending = True
        return info

    def _evaluate(self):
        """(evaluations per split, seconds): test, val (when validating) and the extra splits."""
        t0 = time.monotonic()
        evals: Dict[str, Optional[Evaluation]] = {}
        evals["test"] = self.evaluator.evaluate("test") if self.evaluator else None
        evals["val"] = (self.evaluator.evaluate("val")
                        if (self.evaluator and (self.config.patience or self.config.gate or self.always_validate))
                        else None)
        for name in self.extra_splits:
            if name not in evals or evals[name] is None:
                evals[name] = self.evaluator.evaluate(name) if self.evaluator else None
        return evals, time.monotonic() - t0

    def _evaluate_and_record(self, iteration, batch, n_replay, out, ft_s, adapter_path, terms=None) -> IterationInfo:
        evals, eval_s = self._evaluate()
        self.foreground_eval_s += eval_s
        return self._record(iteration, batch, n_replay, out, ft_s, adapter_path, evals, eval_s, terms)

    def _gate(self, iteration: int, adapter_path: str, val: Optional[Evaluation]) -> Dict[str, Any]:
        """The promotion gate for iteration ``iteration`` (0: the base's validation answers become the reference)."""
        if not self.config.gate or val is None:
            return {}
        if iteration == 0:
            self.served_val_correct = list(val.correct)
            return {}
        served = self.served_val_correct
        if served is None or len(served) != len(val.correct):
            served = []  # no reference answers (e.g. resumed from a run without the gate): nothing is promoted
        d = decide(iteration, adapter_path, self.served_adapter, served, val.correct if served else [],
                   self.config.gate_alpha)
        if d.promoted:
            self.served_iteration, self.served_adapter = iteration, adapter_path
            self.served_val_correct = list(val.correct)
        rec = d.to_dict()
        self.gate_decisions.append(rec)
        if d.promoted:
            for cb in self.callbacks:
                cb.on_promotion(self, d)
        return rec

    def _record(self, iteration, batch, n_replay, out, ft_s, adapter_path, evals, eval_s, terms=None,
                counts=None, earlier: int = 0) -> IterationInfo:
        """One iteration into the history; ``counts``: the generation counters when its fine-tune started
        (a background one lands later: its curve point is what it was trained on)."""
        at = counts or self._counts()
        test, val = evals.get("test"), evals.get("val")
        splits: Dict[str, Any] = {name: split_record(ev) for name, ev in evals.items() if ev is not None}
        self.total_eval_s += eval_s
        val_acc = _nan_if_none(val.accuracy if val else None)
        if val is not None:
            if val_acc > self.best_val + self.config.min_delta:
                self.best_val, self.best_iteration, self.bad_rounds = val_acc, iteration, 0
            elif iteration > 0:
                self.bad_rounds += 1
        elif iteration > 0 and test is not None:
            # without a validation set, "best" follows the test accuracy (reported as such)
            if test.accuracy > self.best_val:
                self.best_val, self.best_iteration = test.accuracy, iteration
        elif test is not None:
            self.best_val = test.accuracy
        gate = self._gate(iteration, adapter_path, val)
        info = IterationInfo(
            iteration=iteration,
            episodes=at["episodes"],
            steps=at["steps"],
            renders=at["renders"],
            valid_samples=at["valid_samples"],
            batch_samples=len(batch),
            replay_samples=int(n_replay),
            trained_samples=self.trained_samples,
            fine_tune_loss=_nan_if_none(out.result.final_loss if out else None),
            fine_tune_s=float(ft_s),
            test_accuracy=_nan_if_none(test.accuracy if test else None),
            test_per_term=dict(test.per_term) if test else {},
            test_counts=dict(test.counts) if test else {},
            test_loss=_nan_if_none(test.mean_loss if test else None),
            val_accuracy=val_acc,
            adapter_path=adapter_path,
            best_iteration=self.best_iteration,
            wall_s=self.wall_s,
            batch_terms=dict(terms or {}),
            eval_s=eval_s,
            total_fine_tune_s=self.total_fine_tune_s,
            total_eval_s=self.total_eval_s,
            splits=splits,
            earlier_samples=int(earlier),
            gate=gate,
            served_iteration=self.served_iteration,
        )
        self.history.append(info)
        for cb in self.callbacks:
            cb.on_iteration(self, info)
        return info

    def _stop(self, reason: str) -> None:
        if not self.stop_reason:
            self.stop_reason = reason
            for cb in self.callbacks:
                cb.on_stop(self, reason)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue after the last fine-tune (the batch is empty then,
        but it is saved anyway so a checkpoint taken elsewhere loses nothing)."""
        with self.lock:
            return {
                "config": self.config.model_dump(),
                "rng": self.rng.bit_generator.state,
                "batch": list(self.batch),
                "pool": list(self.pool),
                "served_iteration": self.served_iteration,
                "served_adapter": self.served_adapter,
                "served_val_correct": self.served_val_correct,
                "gate_decisions": list(self.gate_decisions),
                "iteration": self.iteration,
                "episodes_since_fine_tune": self.episodes_since_fine_tune,
                "best_val": self.best_val,
                "best_iteration": self.best_iteration,
                "bad_rounds": self.bad_rounds,
                "stop_reason": self.stop_reason,
                "history": [h.to_dict() for h in self.history],
                "inflight": self._inflight.state() if self._inflight is not None else None,
                **self.counters_state(),
            }

    def load_state_dict(self, d: Dict[str, Any]) -> None:
        with self.lock:
            self.rng.bit_generator.state = d["rng"]
            self.batch = list(d.get("batch", []))
            self.pool = list(d.get("pool", []))
            self.served_iteration = int(d.get("served_iteration", 0))
            self.served_adapter = str(d.get("served_adapter", ""))
            svc = d.get("served_val_correct")
            self.served_val_correct = [bool(x) for x in svc] if svc is not None else None
            self.gate_decisions = list(d.get("gate_decisions", []))
            self.load_counters_state(d)
            for k in ("iteration", "episodes_since_fine_tune", "best_val", "best_iteration", "bad_rounds"):
                setattr(self, k, d[k])
            self.previous_stop_reason = d.get("stop_reason", "")
            self.stop_reason = ""  # a resumed run continues; the owner decides if it was already finished
            self.history = [IterationInfo(**h) for h in d["history"]]
            self._saved_inflight = d.get("inflight")  # restarted by restart_inflight() once the adapter is loaded
            self.checkpoint_pending = False
