"""Helper program for test_reliability_faults_trainer.py: the RLS3 loop in one process (the
same LoopRunner / RunDir checkpoint protocol as ``rls3 train``), with real MuJoCo renders, the
caption oracle and the tiny real torch/peft VLM of ``vlm_test_model``, that the test SIGKILLs.

    python reliability_train_victim.py RUN_DIR [--resume] [--fault KIND:ITERATION]

``--fault`` widens a window so that the test's SIGKILL lands inside it (the kill itself is real):
- ``fine_tune:K``: during fine-tune K, after its first optimiser step, prints ``PAUSE fine_tune``
  and sleeps (the kill lands mid fine-tune);
- ``adapter:K``: while saving adapter K, after peft wrote the files into the temp directory and
  before the rename, prints ``PAUSE adapter`` and sleeps (mid adapter write);
- ``checkpoint:K``: while writing checkpoint K, after the writer filled the temp directory and
  before the rename + LATEST update, prints ``PAUSE checkpoint`` and sleeps (mid checkpoint write).
Prints ``RESUMED <ckpt dir>`` after a resume, ``CKPT <dir>`` after every complete checkpoint,
``DONE <json>`` at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

LOOP = {"T": 3, "T0": 2, "E": 2, "eta": 1.0, "fine_tune_steps": 4, "replay_fraction": 0.0,
        "budget_valid_samples": 16, "max_iterations": 0, "patience": 0}


def say(*a):
    print(*a, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--fault", default="")
    a = ap.parse_args()
    kind, _, k = a.fault.partition(":")
    fault_it = int(k) if k else -1

    import torch

    torch.set_num_threads(1)
    import peft

    import vlm_test_model
    from rls3_ros.captions.oracle import CaptionOracle
    from rls3_ros.loop import run_dir as run_dir_mod
    from rls3_ros.loop.datasets import generate_samples
    from rls3_ros.loop.config import EnvConfig
    from rls3_ros.loop.env import BackendSource, RLS3Env
    from rls3_ros.loop.runner import DEFAULT_CONFIG, InProcessEvaluator, InProcessTrainer, LoopRunner, LockedScorer, merge_config
    from rls3_ros.loop.run_dir import RunDir, write_yaml
    from rls3_ros.sim.factory import make_backend

    state = {"iteration": 0}

    def pause(what):
        say(f"PAUSE {what}")
        while True:  # until the test kills this process in this window
            signal.pause()

    # -- fault windows -----------------------------------------------------------------------
    orig_save = peft.PeftModel.save_pretrained

    def save_pretrained(self, directory, *args, **kw):
        out = orig_save(self, directory, *args, **kw)
        if kind == "adapter" and state["iteration"] == fault_it:
            pause("adapter")
        return out

    peft.PeftModel.save_pretrained = save_pretrained

    orig_ckpt = run_dir_mod.RunDir.write_checkpoint

    def write_checkpoint(self, name, writer, keep=2):
        def slow_writer(d):
            writer(d)
            if kind == "checkpoint" and name == f"ckpt-{fault_it:03d}":
                pause("checkpoint")

        path = orig_ckpt(self, name, slow_writer, keep)
        say(f"CKPT {path}")
        return path

    run_dir_mod.RunDir.write_checkpoint = write_checkpoint

    def progress(step, total, loss):
        if kind == "fine_tune" and state["iteration"] == fault_it and step >= 1:
            pause("fine_tune")

    class Track:
        def on_fine_tune_start(self, sched, iteration, n):
            state["iteration"] = iteration
            say(f"FINE_TUNE {iteration} on {n} samples")

        def on_episode(self, *x):
            pass

        def on_iteration(self, sched, info):
            say(f"ITERATION {info.iteration}")

        def on_stop(self, *x):
            pass

    # -- the loop (same construction as test_rl_scheduler.make_runner) --------------------------
    src = BackendSource(make_backend("mujoco", image_size=64, seed=0))
    oracle = CaptionOracle()
    test = generate_samples(src, oracle.caption_scene, "test", 2, moves_per_scene=3)
    cfg = merge_config(DEFAULT_CONFIG, {"run": {"agent": "random", "seed": 0}, "loop": LOOP,
                                        "agent": {"learning_starts": 4}})
    run = RunDir(a.run_dir)
    if not a.resume:
        write_yaml(run.config_path, cfg)
    vlm = vlm_test_model.load()
    lock = threading.RLock()
    env = RLS3Env.from_config(EnvConfig(max_relations=0, j2_clip=5.0), src, oracle.caption_scene, LockedScorer(vlm, lock), T=LOOP["T"],
                              T0=LOOP["T0"], seed=0)
    trainer = InProcessTrainer(vlm, run, lock, progress=progress)
    runner = LoopRunner(cfg, run, [env], trainer, InProcessEvaluator(vlm, {"test": test}, lock), [],
                        adapter_loader=vlm.load_adapter, progress=False, log=lambda m: None)
    runner.sched.callbacks.append(Track())
    if a.resume:
        if runner.resume():
            say(f"RESUMED {runner.resumed_from} iteration={runner.sched.iteration} episodes={runner.sched.episodes} "
                f"valid={runner.sched.valid_samples} adapter={vlm.adapter}")
        else:
            say("RESUMED none")
    summary = runner.run_loop()
    runner.close()
    src.close()
    say("DONE " + json.dumps({k: summary.get(k) for k in ("stop_reason", "iterations", "valid_samples")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
