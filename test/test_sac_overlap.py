"""SAC's gradient steps run while the simulator worker simulates the next move
(``SACAgent.overlap_job`` + ``PrefetchSource.idle_jobs``): the same number of updates as SB3's
own schedule, run inside the move's wait, reported under "agent" in the time split, and a
checkpoint taken mid-run holds every update (real MuJoCo worker processes, real SB3 SAC)."""

from __future__ import annotations

import numpy as np

from rls3_ros.captions.oracle import CaptionOracle
from rls3_ros.loop.agents import SACAgent
from rls3_ros.loop.config import EnvConfig
from rls3_ros.loop.env import RLS3Env
from rls3_ros.loop.runner import make_source

RC = {"backend": "mujoco", "image_size": 64}
STEPS = 24
STARTS = 5
GRAD = 2


def sac_run(source, overlap: bool, steps: int = STEPS, train_freq: int = 1):
    env = RLS3Env.from_config(EnvConfig(max_relations=0), source, CaptionOracle().caption_scene, None, T=6, T0=4, seed=1)
    agent = SACAgent([env], seed=0, learning_starts=STARTS, gradient_steps=GRAD, batch_size=8, train_freq=train_freq)
    in_wait = []
    if overlap:
        job = agent.overlap_job()

        def spy():
            before = agent.model._n_updates
            job()
            in_wait.append(agent.model._n_updates - before)

        source.idle_jobs.append(("agent", spy))
    agent.run(should_stop=lambda: agent.model.num_timesteps >= steps)
    return agent, env, in_wait


def test_sac_updates_run_during_the_move_and_none_is_lost(tmp_path):
    serial = make_source({**RC, "sim_worker": False}, 0)
    try:
        plain, _, _ = sac_run(serial, overlap=False)
    finally:
        serial.close()
    src = make_source({**RC, "sim_worker": True}, 0)
    try:
        agent, env, in_wait = sac_run(src, overlap=True)
        n = agent.model.num_timesteps
        assert n == plain.model.num_timesteps == STEPS
        # SB3 trains after every step past learning_starts but the one it stops at: the same count either way
        assert agent.model._n_updates == plain.model._n_updates == (n - STARTS - 1) * GRAD
        # every batch ran inside the next move's wait, GRAD at a time (the step SB3 stops at runs the last)
        assert sum(in_wait) == agent.model._n_updates
        assert set(in_wait) <= {0, GRAD}
        # the time is reported as the agent's, not the simulator's
        assert env._timing.get("agent", 0.0) > 0.0

        # a checkpoint holds every update, and the loaded agent defers again
        agent.run(should_stop=lambda: agent.model.num_timesteps >= STEPS + 4)  # leaves nothing pending
        agent.model.train(gradient_steps=GRAD, batch_size=8)  # deferred: not run yet
        assert agent._pending is not None
        before = agent.model._n_updates
        agent.save(str(tmp_path / "agent"))
        assert agent._pending is None and agent.model._n_updates == before + GRAD
        agent.load(str(tmp_path / "agent"))
        assert agent.model._n_updates == before + GRAD
        in_wait.clear()
        agent.run(should_stop=lambda: agent.model.num_timesteps >= STEPS + 10)  # resumed: 6 more steps
        assert agent.model._n_updates == before + GRAD + 5 * GRAD
        assert sum(in_wait) == 5 * GRAD  # the loaded model defers to the moves too
    finally:
        src.close()


def test_training_every_second_step_overlaps_the_same_updates():
    """The default schedule (a training every second env step) defers the same updates as SB3 runs."""
    serial = make_source({**RC, "sim_worker": False}, 0)
    try:
        plain, _, _ = sac_run(serial, overlap=False, train_freq=2)
    finally:
        serial.close()
    src = make_source({**RC, "sim_worker": True}, 0)
    try:
        agent, _, in_wait = sac_run(src, overlap=True, train_freq=2)
        assert agent.model._n_updates == plain.model._n_updates > 0
        assert sum(in_wait) == agent.model._n_updates
    finally:
        src.close()
    serial = make_source({**RC, "sim_worker": False}, 0)
    try:
        every_step, _, _ = sac_run(serial, overlap=False, train_freq=1)
    finally:
        serial.close()
    assert agent.model._n_updates < every_step.model._n_updates


def test_sac_trains_at_once_without_a_worker():
    src = make_source({**RC, "sim_worker": False}, 0)
    try:
        env = RLS3Env.from_config(EnvConfig(max_relations=0), src, CaptionOracle().caption_scene, None, T=6, T0=4, seed=1)
        agent = SACAgent([env], seed=0, learning_starts=STARTS, gradient_steps=GRAD, batch_size=8, train_freq=1)
        agent.run(should_stop=lambda: agent.model.num_timesteps >= 10)
        agent.model.train(gradient_steps=GRAD, batch_size=8)
        assert agent._pending is None  # nothing to overlap with: SB3's own schedule
        assert agent.model._n_updates == (10 - STARTS) * GRAD  # (10 - STARTS - 1) in run() + the one above
    finally:
        src.close()


def test_checkpoint_keeps_the_replay_buffer_written_up_to_its_fill(tmp_path):
    """The saved buffer holds the stored transitions only, and a loaded agent has them all again in
    a buffer of the allocated size (training continues where it stopped)."""
    src = make_source({**RC, "sim_worker": False}, 0)
    try:
        env = RLS3Env.from_config(EnvConfig(max_relations=0), src, CaptionOracle().caption_scene, None, T=6, T0=4, seed=1)
        agent = SACAgent([env], seed=0, learning_starts=STARTS, gradient_steps=1, batch_size=8, buffer_size=5000)
        agent.run(should_stop=lambda: agent.model.num_timesteps >= 9)
        rb = agent.model.replay_buffer
        n = rb.pos
        assert n > STARTS and not rb.full
        arrays = {k: getattr(rb, k).copy() for k in SACAgent._BUFFER_ARRAYS}
        agent.save(str(tmp_path / "agent"))
        assert all(getattr(rb, k).shape[0] == 5000 for k in SACAgent._BUFFER_ARRAYS), "save shrank the live buffer"
        size = (tmp_path / "agent" / "replay_buffer.npz").stat().st_size
        assert size < arrays["observations"].nbytes / 10, f"the whole allocated buffer was written ({size} bytes)"

        fresh = SACAgent([env], seed=5, learning_starts=STARTS, gradient_steps=1, batch_size=8, buffer_size=5000)
        fresh.load(str(tmp_path / "agent"))
        rb2 = fresh.model.replay_buffer
        assert (rb2.pos, rb2.full, rb2.buffer_size) == (n, False, 5000)
        for k, a in arrays.items():
            b = getattr(rb2, k)
            assert b.shape == a.shape, k
            np.testing.assert_array_equal(b[:n], a[:n], err_msg=k)
        fresh.run(should_stop=lambda: fresh.model.num_timesteps >= 12)
        assert fresh.model.replay_buffer is rb2 and rb2.pos > n
    finally:
        src.close()
