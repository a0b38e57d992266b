"""The RLS3 loop in one process: simulator + oracle + VLM + agent + scheduler + run directory.

This is what ``rls3 train`` runs (and what the learning benchmark can call per sampler).
The ROS graph (``rls3_ros.ros.nodes.rl_sampler``) reuses :class:`LoopRunner` with ROS-backed
stages; only :func:`build_inprocess` is specific to the in-process run.

Configuration: the validated :class:`~rls3_ros.loop.config.TrainConfig` (``rls3 train`` validates
``config/train.yaml`` + ``--config`` + ``--set`` once and passes the model down; a nested dict given
instead is validated once on the way in, :func:`~rls3_ros.loop.config.as_train_config`). Its sections
go to their consumers as typed objects: ``run`` to the builders below (simulators, VLM, torch),
``loop`` to the :class:`~rls3_ros.loop.scheduler.Scheduler`, ``env`` to
:meth:`RLS3Env.from_config <rls3_ros.loop.env.RLS3Env.from_config>`, ``agent`` to the sampler,
``eval`` to the fixed sets. Nothing here restates a default of the schema.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from rls3_ros.core.scene import Sample
from rls3_ros.loop.config import (AGENT_KEYS, AGENT_SECTION_KEYS, DEFAULT_CONFIG,  # noqa: F401 - re-exported
                                  RunConfig, TrainConfig, agent_kwargs, as_train_config, merge_config,
                                  needs_validation, to_dict, validate_config)
from rls3_ros.loop.datasets import cached_split, cached_tail, replay_pool, term_counts
from rls3_ros.loop.env import BackendSource, RLS3Env, SimSource  # noqa: F401 - SimSource re-exported
from rls3_ros.loop.report import plot_accuracy, write_report
from rls3_ros.loop.run_dir import MetricsCallback, RunDir, read_loop_state, write_loop_state, write_yaml
from rls3_ros.loop.samplers import make_agent
from rls3_ros.loop.scheduler import (Evaluator, IterationInfo, Scheduler, SchedulerCallbacks,  # noqa: F401
                                     Trainer, TrainOutcome)

LOOP_FEATURE_CACHE = 12_000  # images whose VLM features the loop keeps (eval sets + recent renders)
TAIL_PER_COMBO = 80  # relations kept per term combination in the tail test split
VAL_TAIL_PER_COMBO = 25


RunSection = Union[RunConfig, Mapping[str, Any]]


def run_section(rc: RunSection) -> RunConfig:
    """The ``run`` section as the model; a dict (e.g. a test's few keys) is validated, the keys it
    leaves out take the schema's defaults."""
    return rc if isinstance(rc, RunConfig) else RunConfig.model_validate(dict(rc))


def split_source_key(run: RunSection) -> str:
    """Names the renders behind the cached fixed sets: backend, image size and the renderer's look
    (a change of textures or lighting must not reuse sets rendered the old way) and its physics revision
    (a change of validity checks or contact physics changes which scenes a seed gives)."""
    from rls3_ros.sim.mujoco_backend import physics_revision
    from rls3_ros.sim.objects import TEXTURE_MAX_PX

    rc = run_section(run)
    look = f"-tex{TEXTURE_MAX_PX}-phys{physics_revision(rc.freeze_parked)}" if rc.backend == "mujoco" else ""
    return f"{rc.backend}-{rc.image_size}{look}"


def sim_work_split(before: Dict[str, float], after: Dict[str, float]) -> Dict[str, float]:
    """Seconds of the simulator's own work between two ``work_seconds`` readings: physics, render,
    build, gl_setup (``MuJoCoBackend.work_seconds``) and "other" (the rest of its busy time:
    validity checks, scene states); empty when the simulator does not count its work."""
    d = {k: max(0.0, float(after.get(k, 0.0)) - float(before.get(k, 0.0))) for k in after}
    if "busy" not in d:
        return {}
    out = {k: round(d.get(k, 0.0), 3) for k in ("physics", "render", "build", "gl_setup") if k in d}
    out["other"] = round(max(0.0, d["busy"] - sum(out.values())), 3)
    return out


# ---------------------------------------------------------------------- in-process stages
class LockedScorer:
    """The VLM's ``score`` behind the loop lock (no scoring while a fine-tune runs)."""

    def __init__(self, vlm, lock):
        self.vlm, self.lock = vlm, lock

    def __call__(self, samples):
        with self.lock:
            return self.vlm.score(samples)


class InProcessTrainer(Trainer):
    """Fine-tunes the VLM in this process and saves the adapter; ``adapter_scale`` < 1 first averages it with
    the base (``loop.adapter_scale``, :mod:`rls3_ros.loop.adapter_average`): what is saved, evaluated, gated
    and trained on next is ``base + adapter_scale * delta``."""

    def __init__(self, vlm, run: RunDir, lock, progress: Optional[Callable[[int, int, float], None]] = None,
                 adapter_scale: float = 1.0):
        self.vlm, self.run, self.lock, self.progress = vlm, run, lock, progress
        self.adapter_scale = float(adapter_scale)

    def fine_tune(self, samples, steps, iteration) -> TrainOutcome:
        with self.lock:
            res = self.vlm.fine_tune(samples, steps, progress=self.progress)
            if self.adapter_scale < 1.0:
                from rls3_ros.loop.adapter_average import average_with_base

                average_with_base(self.vlm, self.adapter_scale)
            path = self.vlm.save_adapter(self.run.adapter_path(iteration))
        return TrainOutcome(res, path)


class InProcessEvaluator(Evaluator):
    def __init__(self, vlm, splits: Dict[str, Sequence[Sample]], lock):
        self.vlm, self.splits, self.lock = vlm, splits, lock

    def evaluate(self, split):
        data = self.splits.get(split)
        if not data:
            return None
        with self.lock:
            return self.vlm.evaluate(data)


# ---------------------------------------------------------------------- the runner
class LoopRunner:
    """Runs envs + agent + scheduler, checkpoints after every fine-tune, resumes.

    Stages (in-process or ROS) come in through the constructor; the runner owns the run
    directory, the checkpoint protocol and the progress bar. ``cfg``: the run configuration
    (:class:`TrainConfig`; a dict is validated once, :func:`~rls3_ros.loop.config.as_train_config`).
    """

    def __init__(self, cfg: Union[TrainConfig, Mapping[str, Any]], run: RunDir, envs: Sequence[RLS3Env],
                 trainer: Trainer,
                 evaluator: Optional[Evaluator], replay_pool: Sequence[Sample] = (),
                 adapter_loader: Optional[Callable[[str], None]] = None,
                 callbacks: Sequence[SchedulerCallbacks] = (), progress: bool = True,
                 log: Callable[[str], None] = print, background_fine_tune: bool = False,
                 on_adapter: Optional[Callable[[str], None]] = None):
        self.config = c = as_train_config(cfg)
        self.run, self.envs = run, list(envs)
        self.log = log
        self.adapter_loader = adapter_loader
        self.metrics = MetricsCallback(run)
        mode_agent = c.run.agent in ("upper", "teacher")
        self.sched = Scheduler(c.loop, trainer, evaluator, replay_pool, [self.metrics, *callbacks],
                               extra_splits=tuple(c.eval.extra_splits), always_validate=mode_agent or c.env.observe_vlm,
                               background=background_fine_tune, on_adapter=on_adapter)
        for e in self.envs:
            e.episode_hook = self.sched.on_episode
            e.vlm_state = self.vlm_state
        self.agent = make_agent(c.run.agent, self.envs, seed=c.run.seed, **agent_kwargs(c))
        if isinstance(self.agent, SchedulerCallbacks):  # mode samplers learn from episodes and evaluations
            self.sched.callbacks.append(self.agent)
        self._progress = progress
        self._bar = None
        self._ckpt_lock = threading.Lock()
        self.resumed_from = ""

    def vlm_state(self):
        """(fine-tunes so far, per-term validation error of the current adapter) for the envs."""
        h = self.sched.history
        val = h[-1].splits.get("val") if h else None
        err = {t: 1.0 - a for t, a in (val or {}).get("per_term", {}).items()}
        return self.sched.iteration, err

    # ---------------------------------------------------------------- checkpoint
    def checkpoint(self) -> str:
        with self._ckpt_lock, self.sched.lock:
            it = self.sched.iteration

            def writer(d):  # JSON + npz, no pickles (run_dir: the checkpoint format and its trust boundary)
                write_loop_state(d, self.sched, self.envs, self.agent, self.run)

            path = self.run.write_checkpoint(f"ckpt-{it:03d}", writer)
            self.sched.checkpoint_pending = False
            return path

    def fine_tune_progress(self, step: int, total: int, loss: float) -> None:
        """Trainer progress callback: shows the fine-tune's step and loss on the progress bar."""
        if self._bar is not None:
            self._bar.set_description(f"rls3 {self.config.run.agent} (fine-tune {self.sched.iteration + 1}: "
                                      f"step {step}/{total}, loss {loss:.3f})")
            self._bar.refresh()

    def _safe_point(self) -> None:
        if self.sched.checkpoint_pending:
            self.checkpoint()

    def resume(self) -> bool:
        """Load the newest checkpoint that verifies and loads (if any): scheduler, envs, agent, adapter,
        metrics (``RunDir.resume_checkpoint``: skipped ones are named in one line; none loads:
        ``CheckpointError``)."""
        found = self.run.resume_checkpoint(
            lambda ck, meta: read_loop_state(ck, meta, self.run, self.sched, self.envs, self.agent,
                                             self.adapter_loader), log=self.log)
        if found is None:
            return False
        ck, meta, _ = found
        self.run.truncate_metrics(int(meta["metrics_size"]))
        self.sched.restart_inflight()  # a fine-tune the checkpoint caught in the background runs again
        # TensorBoard: drop events logged after the checkpoint
        self.metrics.close()
        self.metrics.__init__(self.run, purge_step=self.sched.episodes + 1)
        self.sched.callbacks[0] = self.metrics
        self.resumed_from = ck
        self.log(f"resumed from {ck}: iteration {self.sched.iteration}, {self.sched.episodes} episodes, "
                 f"{self.sched.valid_samples} valid samples")
        return True

    # ---------------------------------------------------------------- run
    def run_loop(self) -> Dict[str, Any]:
        s = self.sched
        if not s.history:
            self.log("evaluating the base model on the test set")
            s.evaluate_base()
            self.checkpoint()
        elif getattr(s, "previous_stop_reason", "") in ("budget", "max_iterations", "early_stopping"):
            self.log(f"run already finished ({s.previous_stop_reason}); writing the report")
            s.stop_reason = s.previous_stop_reason
        if self._progress:
            self._open_bar()
        t0 = time.monotonic()
        stages0 = s.stage_totals()
        work0 = self.sim_work()
        try:
            if not s.done():
                self.agent.run(should_stop=s.done, safe_point=self._safe_point)
            s.finish()  # a background fine-tune still in flight lands (and is checkpointed below)
        finally:
            if self._bar is not None:
                self._bar.close()
        if s.checkpoint_pending:
            self.checkpoint()
        self.metrics.close()
        loop_s = time.monotonic() - t0  # the loop's time: sampling, fine-tunes, checkpoints; not its report
        sim_split = sim_work_split(work0, self.sim_work())
        plot_accuracy(self.run)
        write_report(self.run, {"wall_s": s.wall_s, "generated_terms": s.generated_terms,
                                "time_split": s.time_split(loop_s, stages0),
                                "background_split": s.background_totals(), "sim_split": sim_split})
        served = self.served_gain()
        base, last = s.history[0], s.history[-1]
        return {"run_dir": self.run.path, "stop_reason": s.stop_reason, "iterations": s.iteration,
                "served": served,
                "episodes": s.episodes, "renders": s.renders, "valid_samples": s.valid_samples,
                "base_accuracy": base.test_accuracy, "final_accuracy": last.test_accuracy,
                "best_iteration": s.best_iteration, "wall_s": s.wall_s, "session_s": loop_s,
                "time_split": s.time_split(loop_s, stages0), "background_split": s.background_totals(),
                "sim_split": sim_split, "base_per_term": base.test_per_term, "final_per_term": last.test_per_term,
                "generated_terms": dict(s.generated_terms), "generated_combos": dict(s.generated_combos),
                "mode_counts": dict(s.mode_counts),
                "mode_policy": list(getattr(self.agent, "history", None) or []),
                "curve": [{"iteration": h.iteration, "renders": h.renders, "valid_samples": h.valid_samples,
                           "test_accuracy": h.test_accuracy, "test_per_term": h.test_per_term,
                           "splits": {k: {"accuracy": v["accuracy"], "per_term": v["per_term"],
                                          "per_combo": v["per_combo"]} for k, v in h.splits.items()}}
                          for h in s.history]}

    def served_gain(self) -> Optional[Dict[str, Any]]:
        """The served model against the base (``rls3_ros.loop.served_gain``): logged, appended to report.md
        and written to ``served_gain.json``; None when the run has no gate or no evaluation."""
        from rls3_ros.core.atomic_io import atomic_write_json
        from rls3_ros.loop.served_gain import format_gain, report_section, served_gain

        s = self.sched
        if not s.config.gate or not s.history:
            return None
        vlm = getattr(self, "vlm", None)
        test = (getattr(self, "splits", None) or {}).get("test")

        def load(path: str) -> None:
            vlm.load_adapter(path) if path else vlm.reset_adapter()

        try:
            g = served_gain(s.history, s.served_iteration, vlm if hasattr(vlm, "where") else None, test, load)
        finally:
            if vlm is not None and hasattr(vlm, "reset_adapter"):
                load(s.served_adapter)
        g["gate"] = list(s.gate_decisions)
        atomic_write_json(os.path.join(self.run.path, "served_gain.json"), g, indent=1)
        for line in format_gain(g):
            self.log(line)
        with open(os.path.join(self.run.path, "report.md"), "a") as f:
            f.write(report_section(g))
        return g

    def sim_work(self) -> Dict[str, float]:
        """The envs' simulators' cumulative own work (``SimSource.work_seconds``), summed."""
        out: Dict[str, float] = {}
        for e in self.envs:
            for k, v in e.source.work_seconds().items():
                out[k] = out.get(k, 0.0) + float(v)
        return out

    def _open_bar(self):
        from tqdm import tqdm

        c = self.sched.config
        if c.budget_valid_samples:
            total, unit, get = c.budget_valid_samples, "sample", (lambda: self.sched.valid_samples)
        elif c.budget_renders:
            total, unit, get = c.budget_renders, "render", (lambda: self.sched.renders)
        else:
            total, unit, get = (c.max_iterations * c.E or None), "episode", (lambda: self.sched.episodes)
        bar = tqdm(total=total, unit=unit, desc=f"rls3 {self.config.run.agent}", dynamic_ncols=True,
                   initial=min(get(), total or get()))
        self._bar = bar
        runner = self

        class _Bar(SchedulerCallbacks):
            def on_episode(self, sch, rec):
                bar.n = min(get(), total or get())
                last = sch.history[-1] if sch.history else None
                bar.set_postfix(it=sch.iteration, acc=f"{last.test_accuracy:.3f}" if last else "-",
                                j2=f"{rec.j2:.2f}", batch=len(sch.batch), refresh=False)
                bar.refresh()

            def on_fine_tune_start(self, sch, it, n):
                bar.set_description(f"rls3 {runner.config.run.agent} (fine-tune {it}: {n} samples)")
                bar.refresh()

            def on_iteration(self, sch, info):
                bar.set_description(f"rls3 {runner.config.run.agent}")

        self.sched.callbacks.append(_Bar())

    def close(self):
        self.agent.close()


# ---------------------------------------------------------------------- in-process assembly
def ensure_pretrained(log: Callable[[str], None] = print) -> None:
    """Build and cache the embedded base VLM unless it exists (the VLM layer's ``rls3 pretrain``)."""
    from rls3_ros.vlm.factory import embedded_base_dir

    if (embedded_base_dir() / "config.json").is_file():
        log(f"embedded base VLM: {embedded_base_dir()}")
        return
    log("no pretrained embedded VLM yet: running `rls3 pretrain` once (cached afterwards)")
    from rls3_ros.vlm.pretrain import cli_pretrain_embedded

    code = cli_pretrain_embedded([])
    if code:
        raise RuntimeError(f"rls3 pretrain failed (exit {code})")
    if not (embedded_base_dir() / "config.json").is_file():
        raise RuntimeError(f"rls3 pretrain left no model in {embedded_base_dir()}")


def vlm_options(rc: RunSection) -> Dict[str, Any]:
    """Loader options of the run's VLM: the LoRA learning rate, rank and alpha of ``run.lora_learning_rate``,
    ``run.lora_rank`` and ``run.lora_alpha``, those that are set (the others stay the family's)."""
    rc = run_section(rc)
    lora = {k: cast(v) for k, v, cast in (("learning_rate", rc.lora_learning_rate, float), ("r", rc.lora_rank, int),
                                           ("alpha", rc.lora_alpha, int)) if v is not None}
    return {"lora": lora} if lora else {}


def backend_params(rc: RunSection, seed: int) -> Dict[str, Any]:
    """Constructor parameters of the loop's simulator backend (the loop uses RGB only: no depth pass)."""
    rc = run_section(rc)
    params: Dict[str, Any] = {"image_size": rc.image_size, "seed": int(seed)}
    if rc.backend.strip().lower() == "mujoco":
        params["render_depth"] = False
        params["freeze_parked"] = rc.freeze_parked
    return params


def loop_torch_threads(rc: RunSection) -> int:
    """Torch threads of the loop's process: ``run.torch_threads``, but with the simulator in worker
    processes no more than the cores minus one (they simulate while torch works; two torch threads
    sharing a core with a busy worker spin in OpenMP barriers: measured 5-10x slower steps)."""
    rc = run_section(rc)
    if rc.sim_worker:
        return min(rc.torch_threads, max(1, (os.cpu_count() or 1) - 1))
    return rc.torch_threads


def feature_warmer(features, lock) -> Callable:
    """``PrefetchSource.while_waiting`` for the loop: the previous valid render's VLM features, put
    in the model's feature cache while the worker simulates the next move (J2 scoring then finds
    them). Skipped while a fine-tune or an evaluation holds the VLM lock."""

    def warm(step) -> None:
        if step is None or not step.valid:
            return
        if lock.acquire(blocking=False):
            try:
                features([step.image])
            finally:
                lock.release()

    return warm


def make_source(rc: RunSection, seed: int):
    """The loop's simulator: a :class:`~rls3_ros.loop.sim_worker.PrefetchSource` (backends in worker
    processes, the next scene built ahead) when ``run.sim_worker``, else a backend in this process."""
    rc = run_section(rc)
    if rc.sim_worker:
        from rls3_ros.loop.sim_worker import PrefetchSource

        return PrefetchSource(rc.backend, **backend_params(rc, seed))
    from rls3_ros.sim.factory import make_backend

    return BackendSource(make_backend(rc.backend, **backend_params(rc, seed)))


def prepare_torch(rc: RunConfig, log: Callable[[str], None]) -> None:
    """Torch's threads (:func:`loop_torch_threads`) and global seed (the VLM's and agent's initial weights)."""
    import torch

    threads = loop_torch_threads(rc)
    if threads != rc.torch_threads:
        log(f"torch threads: {threads} (run.torch_threads={rc.torch_threads}; the simulator workers use a core "
            f"of {os.cpu_count()})")
    torch.set_num_threads(threads)
    torch.manual_seed(rc.seed)


def build_vlm(rc: RunConfig, log: Callable[[str], None], pretrain: bool = True):
    """The run's VLM (``run.vlm``: "grounded:serving", "embedded", a model directory, ...); the embedded
    base is built first when missing and ``pretrain``."""
    from rls3_ros.vlm.answers import load_model

    if pretrain and rc.vlm == "embedded":
        ensure_pretrained(log)
    t0 = time.monotonic()
    vlm = load_model(rc.vlm, options=vlm_options(rc))
    log(f"VLM {rc.vlm!r} loaded in {time.monotonic() - t0:.1f} s")
    return vlm


def training_copy(rc: RunConfig, vlm, lock) -> Tuple[Any, Any]:
    """(VLM, lock) the trainer fine-tunes and evaluates: with ``run.overlap_fine_tune`` a second copy of
    the VLM (same features cache) with its own lock, tuned in a background thread; else the scoring one."""
    if not rc.overlap_fine_tune:
        return vlm, lock
    from rls3_ros.vlm.answers import load_model

    train_vlm = load_model(rc.vlm, options=vlm_options(rc))
    train_vlm.ensure_adapter()  # here, not in the thread: building layers draws from torch's global
    # generator, which the agent draws from meanwhile
    return train_vlm, threading.RLock()


def run_captioner(seed: int) -> Callable:
    """The run's caption oracle: its own RNG stream from the run seed, one caller at a time."""
    from rls3_ros.captions.oracle import CaptionOracle

    oracle, rng, lock = CaptionOracle(), np.random.default_rng([seed, 3]), threading.Lock()

    def captioner(scene):
        with lock:
            return oracle.caption_scene(scene, rng=rng)

    return captioner


def fixed_sets(cfg: TrainConfig, source: SimSource, scene_types: Sequence[str],
               log: Callable[[str], None]) -> Tuple[Dict[str, List[Sample]], List[Sample]]:
    """(evaluation splits, replay pool) of the ``eval`` section, generated once and cached: test, val
    (when the run needs it, :func:`needs_validation`, extended by the tail generator's scenes), tail; the
    replay pool when ``loop.replay_fraction`` > 0. Captioned without the run's RNG (the sets must not
    depend on it)."""
    from rls3_ros.captions.oracle import CaptionOracle

    ev, key, oracle = cfg.eval, split_source_key(cfg.run), CaptionOracle()

    def captioner(scene):
        return oracle.caption_scene(scene)

    needs_val = needs_validation(cfg)
    splits = {
        "test": cached_split(source, captioner, "test", ev.test_scenes, key, ev.moves_per_scene, ev.test_per_term,
                             scene_types, log=log),
        "val": cached_split(source, captioner, "val", ev.val_scenes, key, ev.moves_per_scene, ev.val_per_term,
                            scene_types, log=log) if needs_val else [],
    }
    if ev.tail_scenes:
        splits["tail"] = cached_tail(source, captioner, "tail", ev.tail_scenes, key, per_combo=TAIL_PER_COMBO,
                                     scene_types=scene_types, log=log)
    if needs_val and ev.val_tail_scenes:  # validation mirrors both test splits
        splits["val"] = list(splits["val"]) + cached_tail(source, captioner, "val_tail", ev.val_tail_scenes, key,
                                                          per_combo=VAL_TAIL_PER_COMBO, scene_types=scene_types,
                                                          log=log)
    replay = replay_pool(source, captioner, ev.replay_scenes, key, ev.moves_per_scene, ev.replay_rare_keep,
                         scene_types, log=log) if cfg.loop.replay_fraction > 0 else []
    for name in ("test", "tail", "val"):
        if splits.get(name):
            log(f"{name} set: {sum(len(s.relations) for s in splits[name])} relations {term_counts(splits[name])}")
    return splits, replay


def make_envs(cfg: TrainConfig, sources: Sequence[SimSource], captioner: Callable, scorer: Callable,
              scene_types: Sequence[str]) -> List[RLS3Env]:
    """One env per simulator: the ``env`` section, the loop's ``T``/``T0``, seeds from the run seed."""
    seed = cfg.run.seed
    return [RLS3Env.from_config(cfg.env, src, captioner, scorer, T=cfg.loop.T, T0=cfg.loop.T0, seed=seed * 1000 + i,
                                scene_types=scene_types, run_id=f"s{seed}e{i}") for i, src in enumerate(sources)]


def build_inprocess(cfg: Union[TrainConfig, Mapping[str, Any]], run: RunDir, progress: bool = True,
                    log: Callable[[str], None] = print, vlm=None, pretrain: bool = True) -> LoopRunner:
    """Real simulator(s) + caption oracle + VLM, wired into a :class:`LoopRunner` (``cfg``: the validated
    :class:`TrainConfig`; a dict is validated once here)."""
    from rls3_ros.loop.serving import ServedAdapterFile
    from rls3_ros.vlm.feature_cache import FeatureCache

    cfg = as_train_config(cfg)
    rc = cfg.run
    prepare_torch(rc, log)
    if vlm is None:
        vlm = build_vlm(rc, log, pretrain)
    feats = getattr(vlm, "features", None)
    if feats is not None and hasattr(feats, "capacity"):
        feats.capacity = max(int(feats.capacity), LOOP_FEATURE_CACHE)
    lock = threading.RLock()
    captioner = run_captioner(rc.seed)
    sources = [make_source(rc, rc.seed + i) for i in range(rc.n_envs)]
    scene_types = rc.scene_types or list(sources[0].scene_types)
    splits, replay = fixed_sets(cfg, sources[0], scene_types, log)
    for s in sources:
        s.renders = 0
        if hasattr(s, "while_waiting") and isinstance(feats, FeatureCache):
            s.while_waiting = feature_warmer(feats, lock)
    envs = make_envs(cfg, sources, captioner, LockedScorer(vlm, lock), scene_types)
    train_vlm, train_lock = training_copy(rc, vlm, lock)

    def load_adapter(path: str) -> None:  # the scoring copy (and on resume the trainer's) take an adapter
        with lock:
            vlm.load_adapter(path)
        if train_vlm is not vlm:
            with train_lock:
                train_vlm.load_adapter(path)

    def land_adapter(path: str) -> None:
        with lock:
            vlm.load_adapter(path)

    trainer = InProcessTrainer(train_vlm, run, train_lock, adapter_scale=cfg.loop.adapter_scale)
    runner = LoopRunner(cfg, run, envs, trainer, InProcessEvaluator(train_vlm, splits, train_lock), replay,
                        adapter_loader=load_adapter, progress=progress, log=log,
                        background_fine_tune=rc.overlap_fine_tune,
                        on_adapter=land_adapter if rc.overlap_fine_tune else None,
                        callbacks=[ServedAdapterFile(run.path, log=log)])
    trainer.progress = runner.fine_tune_progress
    job = runner.agent.overlap_job() if all(hasattr(s, "idle_jobs") for s in sources) else None
    if job is not None:  # the agent's updates run while the simulator workers simulate
        for s in sources:
            s.idle_jobs.append(("agent_update", job))
    runner.vlm = vlm
    runner.train_vlm = train_vlm
    runner.sources = sources
    runner.splits = splits
    return runner


def run_inprocess(cfg: Union[TrainConfig, Mapping[str, Any]], run_path: Optional[str] = None, resume: bool = False,
                  progress: bool = True, log: Callable[[str], None] = print, vlm=None,
                  pretrain: bool = True) -> Dict[str, Any]:
    """Run (or resume) the loop in one process; returns the summary dict. ``cfg``: the validated
    :class:`TrainConfig` (a dict is validated once here); a new run writes it to ``config.yaml``."""
    from rls3_ros.loop.run_dir import new_run_dir

    cfg = as_train_config(cfg)
    run = RunDir(run_path or new_run_dir())
    if not resume:
        write_yaml(run.config_path, to_dict(cfg))
    runner = build_inprocess(cfg, run, progress=progress, log=log, vlm=vlm, pretrain=pretrain)
    try:
        if resume:
            runner.resume()
        return runner.run_loop()
    finally:
        runner.close()
        for s in getattr(runner, "sources", []):
            s.close()
