"""Background fine-tuning (``run.overlap_fine_tune``): the agent goes on sampling while a second
copy of the VLM is fine-tuned and evaluated; batches, fine-tunes and the learning curve are the
ones of the paper's synchronous loop; a checkpoint taken with a fine-tune in flight loses nothing.
Real parts: MuJoCo renders (worker processes), the caption oracle, a tiny real torch VLM."""

from __future__ import annotations

import threading

import pytest

from rls3_ros.loop.config import EnvConfig
from rls3_ros.loop.env import RLS3Env
from rls3_ros.loop.runner import InProcessEvaluator, InProcessTrainer, LockedScorer
from rls3_ros.loop.run_dir import RunDir
from rls3_ros.loop.scheduler import Scheduler, SchedulerConfig

from test_rl_scheduler import parts  # noqa: F401 - the module's fixture (renders, oracle, tiny VLM)

SETS = ["run.vlm=py:vlm_test_model:load", "run.image_size=64", "run.torch_threads=1", "run.agent=random",
        "loop.T=4", "loop.T0=3", "loop.E=2", "loop.fine_tune_steps=3", "loop.fine_tune_steps_per_sample=0",
        "loop.budget_valid_samples=16", "loop.patience=0", "eval.test_scenes=3", "eval.val_scenes=2",
        "eval.replay_scenes=2", "eval.moves_per_scene=3", "eval.test_per_term=4", "eval.val_per_term=3"]


def test_background_fine_tune_learns_what_the_paper_loop_learns(tmp_path, monkeypatch):
    """Random agent (its moves do not depend on the VLM): the same samples, batches, fine-tunes and
    test accuracy at every curve point, with or without the fine-tune in the background."""
    from rls3_ros.cli.train import apply_sets, load_train_config
    from rls3_ros.loop.runner import run_inprocess

    monkeypatch.setenv("RLS3_CACHE", str(tmp_path / "cache"))
    out = {}
    for bg in (False, True):
        cfg = apply_sets(load_train_config(), [*SETS, f"run.overlap_fine_tune={str(bg).lower()}"])
        out[bg] = run_inprocess(cfg, str(tmp_path / f"run-{bg}"), progress=False, log=lambda m: None,
                                pretrain=False)
    a, b = out[False], out[True]
    for k in ("renders", "valid_samples", "episodes", "iterations", "generated_terms", "base_accuracy",
              "final_accuracy", "stop_reason"):
        assert a[k] == b[k], k
    assert [(c["valid_samples"], c["renders"], c["test_accuracy"]) for c in a["curve"]] == \
           [(c["valid_samples"], c["renders"], c["test_accuracy"]) for c in b["curve"]]
    assert a["iterations"] >= 3


class GatedTrainer:
    """The real trainer; each fine-tune returns only once ``release`` is set: the test decides when
    it finishes, and sees how many episodes the scheduler counted meanwhile."""

    def __init__(self, inner, sched_ref):
        self.inner, self.sched_ref = inner, sched_ref
        self.release = threading.Event()
        self.started = threading.Event()
        self.seen = []  # (episodes at the start, episodes at the end)

    def fine_tune(self, samples, steps, iteration):
        out = self.inner.fine_tune(samples, steps, iteration)
        s = self.sched_ref[0]
        start = s.episodes
        self.started.set()
        self.release.wait(60)
        self.seen.append((start, s.episodes))
        return out


def scheduler(parts, tmp_path, trainer_wrap, background=True, **loop):  # noqa: F811
    vlm, lock = parts["load"](), threading.RLock()
    train_vlm, train_lock = parts["load"](), threading.RLock()
    run = RunDir(str(tmp_path / "run"))
    ref = []
    trainer = trainer_wrap(InProcessTrainer(train_vlm, run, train_lock), ref)
    cfg = SchedulerConfig(**{"T": 4, "T0": 3, "E": 2, "fine_tune_steps": 2, "replay_fraction": 0.0,
                             "budget_valid_samples": 0, **loop})
    sched = Scheduler(cfg, trainer, InProcessEvaluator(train_vlm, {"test": parts["test"]}, train_lock),
                      background=background, on_adapter=vlm.load_adapter)
    ref.append(sched)
    env = RLS3Env.from_config(EnvConfig(max_relations=0, j2_clip=5.0), parts["src"], parts["oracle"].caption_scene, LockedScorer(vlm, lock),
                              T=4, T0=3, seed=5, episode_hook=sched.on_episode)
    return sched, trainer, env, vlm


def random_episodes(env, n):
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(n):
        env.reset()
        done = False
        while not done:
            _, _, done, _, _ = env.step(rng.uniform(-1, 1, 6).astype(np.float32))


def test_sampling_goes_on_while_the_fine_tune_runs_and_its_adapter_lands_later(parts, tmp_path):  # noqa: F811
    sched, trainer, env, vlm = scheduler(parts, tmp_path, GatedTrainer, E=4)  # lands E // 2 = 2 episodes later
    assert sched.land_after == 2
    sched.evaluate_base()
    random_episodes(env, 4)  # the 4th episode starts fine-tune 1 in the background
    assert trainer.started.wait(60)
    assert sched.iteration == 0 and sched._inflight is not None
    random_episodes(env, 1)  # sampled while it trains, with the base adapter
    assert sched.iteration == 0 and sched._inflight.thread.is_alive()
    trainer.release.set()
    sched._inflight.thread.join(60)
    assert not sched._inflight.thread.is_alive()
    assert sched.iteration == 0  # finished, but lands only 2 episodes after its start
    random_episodes(env, 1)
    assert sched.iteration == 1 and sched._inflight is None
    start, end = trainer.seen[0]
    assert end >= start + 1  # an episode was counted while the fine-tune ran
    info = sched.history[-1]
    assert info.episodes == 4  # its curve point: what it was trained on, not when it landed
    assert sched.checkpoint_pending
    # the scoring copy now holds the landed adapter (iteration 1's, not the one training now)
    fresh = parts["load"]()
    before = [r.loss for r in fresh.score(parts["test"])]
    fresh.load_adapter(info.adapter_path)
    want = [r.loss for r in fresh.score(parts["test"])]
    assert want != before
    assert [r.loss for r in vlm.score(parts["test"])] == want


def test_background_sac_run_is_reproducible(tmp_path, monkeypatch):
    """SAC's rewards come from whichever adapter scores an episode: it lands at a fixed episode,
    not when the thread happens to finish, so the same seed gives the same run."""
    from rls3_ros.cli.train import apply_sets, load_train_config
    from rls3_ros.loop.runner import run_inprocess

    monkeypatch.setenv("RLS3_CACHE", str(tmp_path / "cache"))
    runs = []
    for i in range(2):
        cfg = apply_sets(load_train_config(), [*SETS, "run.agent=sac", "agent.learning_starts=4",
                                               "run.overlap_fine_tune=true", "loop.E=4"])
        runs.append(run_inprocess(cfg, str(tmp_path / f"sac-{i}"), progress=False, log=lambda m: None,
                                  pretrain=False))
    a, b = runs
    assert a["iterations"] >= 2
    for k in ("renders", "valid_samples", "episodes", "generated_terms", "final_accuracy"):
        assert a[k] == b[k], k
    assert [c["test_accuracy"] for c in a["curve"]] == [c["test_accuracy"] for c in b["curve"]]


def test_synchronous_scheduler_waits_for_the_fine_tune(parts, tmp_path):  # noqa: F811
    sched, trainer, env, _ = scheduler(parts, tmp_path, GatedTrainer, background=False)
    trainer.release.set()  # (synchronous: nothing else could release it)
    sched.evaluate_base()
    random_episodes(env, 2)
    assert sched.iteration == 1
    start, end = trainer.seen[0]
    assert end == start  # no episode while it trained


def test_checkpoint_with_a_fine_tune_in_flight_loses_nothing(parts, tmp_path):  # noqa: F811
    sched, trainer, env, _ = scheduler(parts, tmp_path, GatedTrainer)
    sched.evaluate_base()
    random_episodes(env, 2)
    assert trainer.started.wait(60)
    state = sched.state_dict()  # taken while fine-tune 1 is still running
    assert state["inflight"] is not None
    it, batch, _, counts, earlier = state["inflight"]
    assert it == 1 and batch and counts["episodes"] == 2 and earlier == []  # cumulative: nothing before the first
    trainer.release.set()
    sched.finish()
    assert sched.iteration == 1

    again, trainer2, _, _ = scheduler(parts, tmp_path / "b", GatedTrainer,
                                      background=False)
    trainer2.release.set()
    again.load_state_dict(state)
    assert again.iteration == 0
    again.restart_inflight()
    assert again.iteration == 1
    assert again.history[-1].batch_samples == len(batch) and again.history[-1].episodes == 2
    assert again.trained_samples == sched.trained_samples


def test_a_failed_background_fine_tune_is_an_error_where_it_lands(parts, tmp_path):  # noqa: F811
    class Broken:
        def __init__(self, inner, ref):
            self.inner = inner

        def fine_tune(self, samples, steps, iteration):
            raise ValueError("no memory left")

    sched, _, env, _ = scheduler(parts, tmp_path, Broken)
    sched.evaluate_base()
    with pytest.raises(RuntimeError, match="background fine-tune 1 failed: no memory left"):
        random_episodes(env, 4)
