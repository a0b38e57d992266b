"""The loop's simulator in worker processes (``rls3_ros.loop.sim_worker``): the same samples as the
serial in-process backend, move for move, and the same learning curve through the whole loop
(real MuJoCo in real child processes, the caption oracle, a real tiny torch VLM)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from rls3_ros.captions.oracle import CaptionOracle
from rls3_ros.loop.config import EnvConfig
from rls3_ros.loop.env import BackendSource, RLS3Env
from rls3_ros.loop.runner import backend_params, make_source
from rls3_ros.loop.sim_worker import PrefetchSource
from rls3_ros.sim.factory import make_backend

RC = {"backend": "mujoco", "image_size": 64}


def episodes(source, n_episodes, seed=3, skip_at=None):
    """Random-action episodes on ``source``: per episode the samples (id, image hash, captions),
    the invalid reasons and the renders. ``skip_at``: jump the episode counter there (the
    prefetched scene is then the wrong one, as after a resume)."""
    env = RLS3Env.from_config(EnvConfig(max_relations=0), source, CaptionOracle().caption_scene, None, T=6, T0=4, seed=seed)
    rng = np.random.default_rng([seed, 1])
    out = []
    for ep in range(n_episodes):
        if skip_at is not None and ep == skip_at:
            env.episode += 5
        env.reset()
        done = False
        while not done:
            _, _, done, _, info = env.step(rng.uniform(-1, 1, 6).astype(np.float32))
        rec = info["episode_record"]
        out.append((rec.scene_seed, rec.scene_type, rec.renders, dict(rec.invalid),
                    [(s.sample_id, hashlib.sha1(s.image.tobytes()).hexdigest(), [r.caption for r in s.relations],
                      [(o.id, o.bbox) for o in s.scene.objects]) for s in rec.samples]))
    return out


def test_prefetch_source_yields_the_serial_samples():
    serial = make_source({**RC, "sim_worker": False}, 0)
    try:
        want = episodes(serial, 7, skip_at=4)
        serial_renders = serial.renders
    finally:
        serial.close()
    worker = make_source({**RC, "sim_worker": True}, 0)
    assert isinstance(worker, PrefetchSource)
    try:
        got = episodes(worker, 7, skip_at=4)
        assert got == want
        assert sum(len(e[4]) for e in got) > 5  # the episodes really produced samples
        assert worker.renders == serial_renders  # a scene built ahead is counted only when used
        # every reset but the first and the one after the jump came from the other process, built ahead
        assert worker.prefetch_hits == 5 and worker.prefetch_misses == 2
    finally:
        worker.close()


def test_both_sources_count_the_simulators_own_work():
    """The simulator's work split (physics, GL passes, builds, renderer binds, the rest) comes from the
    backend itself: in-process and from the worker processes alike, within the busy time."""
    from rls3_ros.loop.runner import sim_work_split

    for rc in ({**RC, "sim_worker": False}, {**RC, "sim_worker": True}):
        src = make_source(rc, 0)
        try:
            before = src.work_seconds()
            episodes(src, 3)
            split = sim_work_split(before, src.work_seconds())
        finally:
            src.close()
        assert set(split) == {"physics", "render", "build", "gl_setup", "other"}, (rc, split)
        assert all(split[k] > 0 for k in ("physics", "render", "build", "gl_setup")), (rc, split)


def test_a_dead_worker_is_an_error_not_a_hang():
    src = PrefetchSource("mujoco", **backend_params(RC, 0))
    try:
        step = src.reset(11)
        assert step.image.shape == (64, 64, 3)
        w = src._workers[src._active]
        w.proc.kill()
        w.proc.wait(timeout=10)
        env = RLS3Env.from_config(EnvConfig(max_relations=0), src, CaptionOracle().caption_scene, None, T=2, T0=2)
        env._scene = step.scene
        with pytest.raises(RuntimeError, match="simulator worker"):
            src.apply(env.decode_action(np.zeros(6, np.float32)))
    finally:
        src.close()


def test_reset_reuses_the_resets_render_and_depth_is_skipped():
    """BackendSource.reset returns the render the reset made (no second render) and the loop's
    depth-free backend renders the same RGB as a backend with depth."""
    with_depth = BackendSource(make_backend("mujoco", image_size=64, seed=0, render_depth=True))
    no_depth = BackendSource(make_backend("mujoco", **backend_params(RC, 0)))
    try:
        a = with_depth.reset(21)
        again = with_depth.backend.render()
        assert np.array_equal(a.image, again.rgb)
        assert with_depth.backend.last_render() is again  # render() is the latest now
        b = no_depth.reset(21)
        assert np.array_equal(a.image, b.image)
        assert not no_depth.backend.render().depth.any() and again.depth.any()
    finally:
        with_depth.close()
        no_depth.close()


def test_the_loop_learns_the_same_with_the_worker(tmp_path, monkeypatch):
    """The whole in-process loop (random agent, tiny VLM): identical samples, fine-tunes and
    test accuracies with the simulator in worker processes and in this process."""
    from rls3_ros.loop.runner import run_inprocess
    from rls3_ros.cli.train import apply_sets, load_train_config

    monkeypatch.setenv("RLS3_CACHE", str(tmp_path / "cache"))
    sets = ["run.vlm=py:vlm_test_model:load", "run.image_size=64", "run.torch_threads=1", "run.agent=random",
            "loop.T=4", "loop.T0=3", "loop.E=2", "loop.fine_tune_steps=2", "loop.fine_tune_steps_per_sample=0",
            "loop.budget_valid_samples=14", "loop.patience=0", "eval.test_scenes=3", "eval.val_scenes=2",
            "eval.replay_scenes=2", "eval.moves_per_scene=3", "eval.test_per_term=4", "eval.val_per_term=3"]
    out = {}
    for worker in (False, True):
        cfg = apply_sets(load_train_config(), [*sets, f"run.sim_worker={str(worker).lower()}"])
        out[worker] = run_inprocess(cfg, str(tmp_path / f"run-{worker}"), progress=False, log=lambda m: None,
                                    pretrain=False)
    a, b = out[False], out[True]
    for k in ("renders", "valid_samples", "episodes", "iterations", "generated_terms", "generated_combos",
              "base_accuracy", "final_accuracy"):
        assert a[k] == b[k], k
    assert [c["test_accuracy"] for c in a["curve"]] == [c["test_accuracy"] for c in b["curve"]]
    assert a["iterations"] >= 2


def test_features_are_computed_while_the_worker_simulates_and_scores_do_not_change():
    """The loop's while_waiting hook puts each valid render's features into the grounded VLM's
    cache during the next move; J2 scores from those cached features equal batched ones."""
    import threading

    import torch

    from rls3_ros.loop.runner import feature_warmer
    from rls3_ros.vlm.answers import load_model

    torch.set_num_threads(1)
    vlm = load_model("grounded")
    cache = vlm.features
    src = make_source({**RC, "image_size": 160, "sim_worker": True}, 0)
    warmed = []

    def spy(step):
        before = len(cache._cache)
        warm(step)
        if len(cache._cache) > before:
            warmed.append(step.image)

    warm = feature_warmer(cache, threading.RLock())
    src.while_waiting = spy
    try:
        env = RLS3Env.from_config(EnvConfig(max_relations=0, j2_clip=5.0), src, CaptionOracle().caption_scene, vlm.score, T=8, T0=8, seed=4)
        rng = np.random.default_rng(2)
        cache._cache.clear()
        env.reset()
        done = False
        while not done:
            _, _, done, _, info = env.step(rng.uniform(-1, 1, 6).astype(np.float32))
        rec = info["episode_record"]
        assert len(rec.samples) >= 3
        # every valid render but the last was featurised while the next move ran
        assert {hashlib.sha1(w.tobytes()).hexdigest() for w in warmed} >= {
            hashlib.sha1(s.image.tobytes()).hexdigest() for s in rec.samples[:-1]}
        # and the episode's time split counts that work as "features", apart from J2 "score"
        assert rec.timing.get("features", 0.0) > 0.0 and rec.timing.get("score", 0.0) > 0.0
        cache._cache.clear()
        batched = vlm.score(rec.samples)
        assert [(s.sample_id, s.loss, s.correct) for s in batched] == [(s.sample_id, s.loss, s.correct)
                                                                       for s in rec.scores]
    finally:
        src.close()


def test_torch_leaves_the_simulator_workers_a_core(monkeypatch):
    import os

    from rls3_ros.loop.runner import loop_torch_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert loop_torch_threads({"torch_threads": 2, "sim_worker": True}) == 1
    assert loop_torch_threads({"torch_threads": 2, "sim_worker": False}) == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert loop_torch_threads({"torch_threads": 2, "sim_worker": True}) == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert loop_torch_threads({"torch_threads": 2, "sim_worker": True}) == 1


def test_ctrl_c_leaves_no_worker_and_no_worker_traceback(tmp_path):
    """Ctrl-C reaches the whole process group (a terminal): the workers ignore it, the loop's
    process closes them, none is left behind and none prints a traceback."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "hold.py"
    script.write_text(
        "import signal\n"
        # a terminal's Ctrl-C: live even when this test runs in a background job, whose SIGINT is ignored
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from rls3_ros.loop.sim_worker import PrefetchSource\n"
        "src = PrefetchSource('mujoco', image_size=32, seed=0, render_depth=False)\n"
        "src.reset(1); src.prefetch(2, None)\n"
        "try:\n"  # the Ctrl-C may arrive as soon as the pids are out, even inside print()
        "    print('pids', *[w.proc.pid for w in src._workers], flush=True)\n"
        "    signal.pause()\n"  # until the test's Ctrl-C
        "except KeyboardInterrupt:\n"
        "    src.close()\n"
        "    print('closed', flush=True)\n")
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    line = p.stdout.readline()
    assert line.startswith("pids"), (line, p.stderr.read() if p.poll() is not None else "")
    pids = [int(x) for x in line.split()[1:]]
    from ros_harness import deadline, poll_until

    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=deadline(60))
    assert "closed" in out
    assert "Traceback" not in err, err

    def gone(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split()[2] == "Z"
        except OSError:
            return True

    poll_until(lambda: all(gone(pid) for pid in pids), 30, "the worker processes to exit")


def test_fixed_tail_split_is_the_same_through_the_worker_processes():
    """The pre-registered tail split's generator draws half its moves from the scene's support
    surfaces: through worker processes it must see the same surfaces (``SimSource.receptacles``)
    and so make the same split as the in-process backend (it drew from bounds there once, which
    made another split under the same cache key)."""
    from rls3_ros.loop.tail_split import generate_tail

    def split(source):
        samples = generate_tail(source, CaptionOracle().caption_scene, "tail", 6, per_combo=1000)
        return [(s.sample_id, hashlib.sha1(s.image.tobytes()).hexdigest(), [r.caption for r in s.relations])
                for s in samples]

    serial = make_source({**RC, "sim_worker": False}, 0)
    try:
        serial.reset(7)
        recs = serial.receptacles()
        want = split(serial)
    finally:
        serial.close()
    assert recs and all(len(r) == 4 for r in recs)  # MuJoCo rooms have surfaces
    worker = make_source({**RC, "sim_worker": True}, 0)
    try:
        worker.reset(7)
        assert worker.receptacles() == recs
        got = split(worker)
    finally:
        worker.close()
    assert len(want) > 3 and got == want
