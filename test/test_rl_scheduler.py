"""The RLS3 scheduler's counts (T, T0, E, eta, replay, budgets, early stopping) and resume,
with real parts: MuJoCo renders, the caption oracle, a real torch/peft VLM (tiny)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rls3_ros.captions.oracle import CaptionOracle
from rls3_ros.loop.config import EnvConfig
from rls3_ros.loop.env import BackendSource, RLS3Env
from rls3_ros.loop.runner import (DEFAULT_CONFIG, InProcessEvaluator, InProcessTrainer, LoopRunner, LockedScorer,
                              merge_config)
from rls3_ros.loop.datasets import balance_relations, generate_samples, term_counts
from rls3_ros.loop.run_dir import RunDir, write_yaml
from rls3_ros.loop.scheduler import Scheduler, SchedulerConfig


@pytest.fixture(scope="module")
def parts():
    import threading

    import torch

    torch.set_num_threads(1)
    import vlm_test_model
    from rls3_ros.sim.factory import make_backend

    src = BackendSource(make_backend("mujoco", image_size=64, seed=0))
    oracle = CaptionOracle()
    test = generate_samples(src, oracle.caption_scene, "test", 3, moves_per_scene=3)
    replay = generate_samples(src, oracle.caption_scene, "replay", 3, moves_per_scene=3)
    yield {"src": src, "oracle": oracle, "test": test, "replay": replay, "load": vlm_test_model.load,
           "lock": threading.RLock()}
    src.close()


class CountingTrainer:
    """The real in-process trainer, recording what each fine-tune received."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def fine_tune(self, samples, steps, iteration):
        self.calls.append({"n": len(samples), "ids": [s.sample_id for s in samples], "steps": steps,
                           "iteration": iteration})
        return self.inner.fine_tune(samples, steps, iteration)


def make_runner(parts, tmp_path, loop, agent="random", seed=0, name="run"):
    cfg = merge_config(DEFAULT_CONFIG, {"run": {"agent": agent, "seed": seed}, "loop": loop,
                                        "agent": {"learning_starts": 4}})
    run = RunDir(str(tmp_path / name))
    write_yaml(run.config_path, cfg)
    vlm = parts["load"]()
    lock = parts["lock"]
    env = RLS3Env.from_config(EnvConfig(max_relations=0, j2_clip=5.0), parts["src"], parts["oracle"].caption_scene, LockedScorer(vlm, lock),
                              T=loop["T"], T0=loop["T0"], seed=seed)
    trainer = CountingTrainer(InProcessTrainer(vlm, run, lock))
    runner = LoopRunner(cfg, run, [env], trainer, InProcessEvaluator(vlm, {"test": parts["test"]}, lock),
                        parts["replay"], adapter_loader=vlm.load_adapter, progress=False, log=lambda m: None)
    return runner, trainer, env, vlm


def test_counts_T_T0_E_eta(parts, tmp_path):
    loop = {"T": 4, "T0": 2, "E": 3, "eta": 0.5, "fine_tune_steps": 2, "replay_fraction": 0.0,
            "budget_valid_samples": 12, "max_iterations": 0, "patience": 0}
    runner, trainer, env, _ = make_runner(parts, tmp_path, loop)
    episodes = []
    runner.sched.callbacks.append(type("CB", (), {
        "on_episode": lambda self, s, rec: episodes.append((rec.steps, len(rec.samples), len(s.batch))),
        "on_iteration": lambda self, s, i: None, "on_fine_tune_start": lambda self, *a: None,
        "on_stop": lambda self, *a: None})())
    summary = runner.run_loop()
    s = runner.sched
    assert summary["stop_reason"] == "budget"
    assert s.valid_samples >= 12
    # every episode: <= T steps, ends at T0 valid samples or after T steps
    for steps, n_valid, _ in episodes:
        assert steps <= 4 and n_valid <= 2
        assert n_valid == 2 or steps == 4
    # eta: round(0.5 * n_valid) samples of each episode enter the batch
    # E: a fine-tune after every 3rd episode, on exactly the samples collected since the last one
    expect_batches, cur = [], 0
    for i, (_, n_valid, _) in enumerate(episodes, 1):
        cur += int(round(0.5 * n_valid))
        if i % 3 == 0:
            if cur:
                expect_batches.append(cur)
            cur = 0
    if cur:
        expect_batches.append(cur)  # the budget ran out with a partial batch: last fine-tune uses it
    assert [c["n"] for c in trainer.calls] == expect_batches
    assert all(c["steps"] == 2 for c in trainer.calls)
    assert [c["iteration"] for c in trainer.calls] == list(range(1, len(expect_batches) + 1))
    # a sample is never trained on twice: the batch is cleared after each fine-tune
    all_ids = [i for c in trainer.calls for i in c["ids"]]
    assert len(all_ids) == len(set(all_ids))
    assert s.batch == [] and s.trained_samples == len(all_ids)
    # the batch seen at each episode's end holds exactly the samples since the last fine-tune
    cur = 0
    for k, (_, n_valid, b) in enumerate(episodes, 1):
        cur += int(round(0.5 * n_valid))
        assert b == cur
        if k % 3 == 0:
            cur = 0  # cleared by the fine-tune
    # evaluation after every fine-tune (+ the base model) on the fixed test set
    assert [h.iteration for h in s.history] == list(range(0, len(expect_batches) + 1))
    assert all(0.0 <= h.test_accuracy <= 1.0 for h in s.history)
    assert all(os.path.exists(os.path.join(h.adapter_path, "adapter_config.json")) for h in s.history[1:])
    # budget counted in renders too
    assert s.renders == sum(st for st, _, _ in episodes) + len(episodes)
    # run directory: metrics, plot, report
    run = runner.run
    lines = run.read_metrics()
    assert sum(1 for m in lines if m["type"] == "episode") == len(episodes)
    assert sum(1 for m in lines if m["type"] == "iteration") == len(s.history)
    assert os.path.getsize(run.plot_path) > 10_000
    report = open(run.report_path).read()
    assert "| base | 0 |" in report and "Per term" in report
    assert os.listdir(run.tb_dir)


def test_replay_fraction_mixes_base_samples(parts, tmp_path):
    loop = {"T": 3, "T0": 2, "E": 2, "eta": 1.0, "fine_tune_steps": 1, "replay_fraction": 0.5,
            "budget_valid_samples": 0, "max_iterations": 2, "patience": 0}
    runner, trainer, _, _ = make_runner(parts, tmp_path, loop)
    runner.run_loop()
    replay_ids = {s.sample_id for s in parts["replay"]}
    assert runner.sched.stop_reason == "max_iterations" and len(trainer.calls) == 2
    for call, info in zip(trainer.calls, runner.sched.history[1:]):
        n_replay = sum(1 for i in call["ids"] if i in replay_ids)
        n_gen = call["n"] - n_replay
        assert n_gen == info.batch_samples and n_replay == info.replay_samples
        assert n_replay == min(n_gen, len(replay_ids))  # 0.5 of the mixed set


def test_fine_tune_steps_per_generated_sample(parts, tmp_path):
    loop = {"T": 3, "T0": 2, "E": 2, "eta": 1.0, "fine_tune_steps": 50, "fine_tune_steps_per_sample": 1.5,
            "replay_fraction": 0.5, "budget_valid_samples": 0, "max_iterations": 3, "patience": 0}
    runner, trainer, _, _ = make_runner(parts, tmp_path, loop)
    runner.run_loop()
    assert len(trainer.calls) == 3
    for call, info in zip(trainer.calls, runner.sched.history[1:]):
        # steps follow the generated samples of the batch (replay not counted), not fine_tune_steps
        assert call["steps"] == max(1, round(1.5 * info.batch_samples)) != 50
    with pytest.raises(ValueError, match="fine_tune_steps_per_sample"):
        SchedulerConfig(fine_tune_steps_per_sample=-1.0)


def test_early_stopping_and_config_validation():
    from rls3_ros.loop.scheduler import Evaluator, Trainer, TrainOutcome
    from rls3_ros.loop.env import EpisodeRecord
    from rls3_ros.core.scene import Sample
    from rls3_ros.vlm.interface import Evaluation, FineTuneResult

    class FlatEval(Evaluator):
        def evaluate(self, split):
            return Evaluation(0.5, {}, {}, 1.0, 10)

    class T(Trainer):
        def fine_tune(self, samples, steps, iteration):
            return TrainOutcome(FineTuneResult(steps, len(samples), 0.1), "")

    s = Scheduler(SchedulerConfig(T=2, T0=1, E=1, patience=2), T(), FlatEval())
    s.evaluate_base()
    for ep in range(10):
        s.on_episode(EpisodeRecord(ep, ep, "kitchen", 2, 3, [Sample(f"s{ep}", np.zeros((2, 2, 3), np.uint8), None)], {}, 0.5))
        if s.done():
            break
    assert s.stop_reason == "early_stopping" and s.iteration == 2 and s.best_iteration == 0
    for bad in ({"T0": 9}, {"E": 0}, {"eta": 0.0}, {"eta": 1.5}, {"replay_fraction": 1.0}, {"budget_renders": -1}):
        with pytest.raises(ValueError):
            SchedulerConfig(**bad)


def test_balanced_split(parts):
    s = balance_relations(parts["test"] + parts["replay"], per_term=3)
    c = term_counts(s)
    full = term_counts(parts["test"] + parts["replay"])
    for t, n in full.items():
        assert c[t] >= min(3, n)  # every term reaches the target when it can
    assert sum(len(x.relations) for x in s) <= sum(len(x.relations) for x in parts["test"] + parts["replay"])


@pytest.mark.parametrize("agent", ["random", "sac"])
def test_resume_continues_from_last_fine_tune(parts, tmp_path, agent):
    loop = {"T": 3, "T0": 2, "E": 2, "eta": 1.0, "fine_tune_steps": 1, "replay_fraction": 0.0,
            "budget_valid_samples": 14, "max_iterations": 0, "patience": 0}
    runner, trainer, env, _ = make_runner(parts, tmp_path, loop, agent=agent, name=f"run-{agent}")

    class Crash(Exception):
        pass

    class CrashAfter:  # "Ctrl-C" two episodes after the second fine-tune (mid-batch)
        def __init__(self):
            self.after = None

        def on_episode(self, s, rec):
            if s.iteration == 2 and self.after is None:
                self.after = s.episodes
            if self.after is not None and s.episodes >= self.after + 1:
                raise Crash()

        def on_iteration(self, *a):
            pass

        def on_fine_tune_start(self, *a):
            pass

        def on_stop(self, *a):
            pass

    runner.sched.callbacks.append(CrashAfter())
    with pytest.raises(Crash):
        runner.run_loop()
    runner.close()
    ck = runner.run.latest_checkpoint()
    assert ck and ck.endswith("ckpt-002")
    meta = json.load(open(os.path.join(ck, "meta.json")))
    episodes_at_ckpt = meta["episodes"]
    # a fresh process: new runner on the same run directory, resumed
    runner2, trainer2, env2, vlm2 = make_runner(parts, tmp_path, loop, agent=agent, name=f"run-{agent}")
    assert runner2.resume()
    assert runner2.sched.iteration == 2 and runner2.sched.episodes == episodes_at_ckpt
    assert env2.episode == episodes_at_ckpt  # the next scene seed follows on
    assert vlm2.adapter and vlm2.adapter.endswith("iter_002")
    if agent == "sac":
        assert runner2.agent.model.replay_buffer.size() > 0
    summary = runner2.run_loop()
    assert summary["stop_reason"] == "budget"
    assert trainer2.calls[0]["iteration"] == 3  # continues, no iteration redone
    its = [m["iteration"] for m in runner2.run.read_metrics() if m["type"] == "iteration"]
    assert its == list(range(0, runner2.sched.iteration + 1))  # no duplicate, none missing
    eps = [m["episode"] for m in runner2.run.read_metrics() if m["type"] == "episode"]
    assert eps == list(range(1, runner2.sched.episodes + 1))
    runner2.close()
