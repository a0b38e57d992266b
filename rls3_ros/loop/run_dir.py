"""Run directories: ``runs/<timestamp>/`` with config, metrics, TensorBoard, adapters, checkpoints.

Layout::

    runs/<ts>/config.yaml          the configuration used (resume reads it back)
    runs/<ts>/metrics.jsonl        one JSON line per episode ("type": "episode") and per
                                   fine-tuning iteration ("type": "iteration", 0 = base model)
    runs/<ts>/tb/                  TensorBoard events (x axis: episodes)
    runs/<ts>/adapters/iter_NNN/   LoRA adapter after each fine-tune (peft format)
    runs/<ts>/checkpoints/ckpt-NNN/  scheduler + envs + agent state after fine-tune NNN
    runs/<ts>/checkpoints/LATEST   name of the newest complete checkpoint (atomic replace)
    runs/<ts>/test_accuracy.png    test accuracy vs generated samples (overall + per term)
    runs/<ts>/report.md            tuned model vs base

A checkpoint is written into a temporary directory and renamed, then ``LATEST`` is replaced
(``os.replace``), so a crash at any point leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import tempfile
import time
from typing import Any, Dict, List, Optional

import yaml

from rls3_ros.loop.scheduler import IterationInfo, Scheduler, SchedulerCallbacks


def new_run_dir(root: str = "runs") -> str:
    ts = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = os.path.join(root, ts)
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(root, f"{ts}-{n}")
    os.makedirs(path)
    return path


def _json_default(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _clean(o):
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_yaml(path: str, data: Dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    os.replace(tmp, path)


def read_yaml(path: str) -> Dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f) or {}


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        os.makedirs(self.path, exist_ok=True)
        self.config_path = os.path.join(self.path, "config.yaml")
        self.metrics_path = os.path.join(self.path, "metrics.jsonl")
        self.tb_dir = os.path.join(self.path, "tb")
        self.adapters_dir = os.path.join(self.path, "adapters")
        self.ckpt_dir = os.path.join(self.path, "checkpoints")
        self.plot_path = os.path.join(self.path, "test_accuracy.png")
        self.report_path = os.path.join(self.path, "report.md")

    def adapter_path(self, iteration: int) -> str:
        return os.path.join(self.adapters_dir, f"iter_{iteration:03d}")

    # -------------------------------------------------------------- metrics
    def append_metrics(self, record: Dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(_clean(record), default=_json_default) + "\n")
            f.flush()

    def metrics_size(self) -> int:
        return os.path.getsize(self.metrics_path) if os.path.exists(self.metrics_path) else 0

    def truncate_metrics(self, size: int) -> None:
        if os.path.exists(self.metrics_path):
            with open(self.metrics_path, "r+") as f:
                f.truncate(size)

    def read_metrics(self) -> List[Dict[str, Any]]:
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    # -------------------------------------------------------------- checkpoints
    def latest_checkpoint(self) -> Optional[str]:
        p = os.path.join(self.ckpt_dir, "LATEST")
        if not os.path.exists(p):
            return None
        with open(p) as f:
            name = f.read().strip()
        d = os.path.join(self.ckpt_dir, name)
        return d if os.path.isdir(d) else None

    def write_checkpoint(self, name: str, writer, keep: int = 2) -> str:
        """``writer(tmpdir)`` fills a temp dir; it is renamed to ``name`` and LATEST updated."""
        os.makedirs(self.ckpt_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=self.ckpt_dir, prefix=".tmp-")
        writer(tmp)
        final = os.path.join(self.ckpt_dir, name)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        lp = os.path.join(self.ckpt_dir, "LATEST")
        with open(lp + ".tmp", "w") as f:
            f.write(name + "\n")
        os.replace(lp + ".tmp", lp)
        olds = sorted(d for d in os.listdir(self.ckpt_dir) if d.startswith("ckpt-") and d != name)
        for d in olds[:-(keep - 1)] if keep > 1 else olds:
            shutil.rmtree(os.path.join(self.ckpt_dir, d), ignore_errors=True)
        return final


def save_pickle(path: str, obj: Any) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def load_pickle(path: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


class MetricsCallback(SchedulerCallbacks):
    """Writes metrics.jsonl and TensorBoard scalars for every episode and iteration."""

    def __init__(self, run: RunDir, tb: bool = True, purge_step: Optional[int] = None):
        self.run = run
        self.writer = None
        if tb:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(run.tb_dir, purge_step=purge_step)
            except Exception:  # tensorboard missing: JSONL only
                self.writer = None

    def on_episode(self, scheduler: Scheduler, record) -> None:
        d = {
            "type": "episode", "episode": scheduler.episodes, "env": record.env_id, "scene_seed": record.scene_seed,
            "scene_type": record.scene_type, "steps": record.steps, "renders": record.renders,
            "valid": len(record.samples), "invalid": record.invalid, "j2": record.j2,
            "intrinsic_return": record.intrinsic_return, "move_kinds": record.move_kinds,
            "batch_size": len(scheduler.batch), "valid_samples": scheduler.valid_samples,
            "total_renders": scheduler.renders, "iteration": scheduler.iteration, "wall_s": scheduler.wall_s,
        }
        self.run.append_metrics(d)
        if self.writer is not None:
            ep = scheduler.episodes
            if not math.isnan(record.j2):
                self.writer.add_scalar("episode/j2", record.j2, ep)
            self.writer.add_scalar("episode/valid_fraction", len(record.samples) / max(1, record.steps), ep)
            self.writer.add_scalar("episode/intrinsic_return", record.intrinsic_return, ep)
            self.writer.add_scalar("episode/batch_size", len(scheduler.batch), ep)
            self.writer.add_scalar("counts/valid_samples", scheduler.valid_samples, ep)
            self.writer.add_scalar("counts/renders", scheduler.renders, ep)

    def on_iteration(self, scheduler: Scheduler, info: IterationInfo) -> None:
        d = {"type": "iteration", **info.to_dict()}
        self.run.append_metrics(d)
        if self.writer is not None:
            ep = scheduler.episodes
            if not math.isnan(info.test_accuracy):
                self.writer.add_scalar("test/accuracy", info.test_accuracy, ep)
                for t, a in info.test_per_term.items():
                    self.writer.add_scalar(f"test_term/{t}", a, ep)
            if not math.isnan(info.val_accuracy):
                self.writer.add_scalar("val/accuracy", info.val_accuracy, ep)
            if not math.isnan(info.fine_tune_loss):
                self.writer.add_scalar("fine_tune/loss", info.fine_tune_loss, ep)
            self.writer.flush()

    def on_stop(self, scheduler: Scheduler, reason: str) -> None:
        self.run.append_metrics({"type": "stop", "reason": reason, "episode": scheduler.episodes,
                                 "iteration": scheduler.iteration, "wall_s": scheduler.wall_s})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
