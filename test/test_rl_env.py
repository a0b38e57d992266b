"""The RLS3 gymnasium env on the real MuJoCo backend, caption oracle and a real (tiny) VLM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rls3_ros.captions.oracle import CaptionOracle
from rls3_ros.loop.config import EnvConfig
from rls3_ros.loop.env import (ACTION_DIM, BackendSource, RLS3Env, j2_from_scores, per_sample_loss)
from rls3_ros.sim.backend import PLACE, SWAP
from rls3_ros.vlm.interface import RelationScore


@pytest.fixture(scope="module")
def source():
    from rls3_ros.sim.factory import make_backend

    src = BackendSource(make_backend("mujoco", image_size=64, seed=0))
    yield src
    src.close()


@pytest.fixture(scope="module")
def vlm():
    import torch

    torch.set_num_threads(1)
    import vlm_test_model

    return vlm_test_model.load()


def test_check_env_passes(source, vlm):
    from stable_baselines3.common.env_checker import check_env

    env = RLS3Env.from_config(EnvConfig(max_relations=0, j2_clip=5.0), source, CaptionOracle().caption_scene, vlm.score, T=4, T0=3)
    check_env(env, warn=True, skip_render_check=True)
    assert env.action_space.shape == (ACTION_DIM,)
    obs, _ = env.reset()
    assert env.observation_space.contains(obs)
    # the three active objects fill the three slots: one category bit each
    cats = [obs[i * env.slot_dim:i * env.slot_dim + env.n_categories].sum() for i in range(3)]
    assert cats == [1.0, 1.0, 1.0]


def test_rewards_signs_and_episode_end(source, vlm):
    records = []
    env = RLS3Env.from_config(EnvConfig(max_relations=0, j2_clip=5.0, reward_valid=0.25, reward_invalid=-0.5, j2_weight=2.0),
                              source, CaptionOracle().caption_scene, vlm.score, T=10, T0=10, seed=3,
                              episode_hook=records.append)
    rng = np.random.default_rng(0)
    seen = {"valid": 0, "invalid": 0}
    for _ in range(4):
        env.reset()
        done = False
        while not done:
            _, r, done, trunc, info = env.step(rng.uniform(-1, 1, ACTION_DIM).astype(np.float32))
            assert not trunc
            base = 0.25 if info["valid"] else (0.0 if info["reason"] == "no_relation" else -0.5)
            if info["valid"]:
                seen["valid"] += 1
            elif info["reason"] != "no_relation":
                seen["invalid"] += 1
                assert info["reason"] in ("overlap", "floating", "out_of_view", "occluded", "unstable", "bad_request")
            if done:
                rec = info["episode_record"]
                # J2 once per episode, on the last step, from the VLM's loss on the valid samples
                if rec.samples:
                    scores = vlm.score(rec.samples)
                    assert rec.j2 == pytest.approx(j2_from_scores(scores, "loss", env.j2_clip), rel=1e-5)
                    assert rec.j2 > 0
                assert r == pytest.approx(base + 2.0 * rec.j2, rel=1e-5)
            else:
                assert "j2" not in info
                assert r == pytest.approx(base)
    assert seen["valid"] > 0 and seen["invalid"] > 0, seen
    assert len(records) == 4
    for rec in records:
        assert rec.steps == 10
        assert rec.renders == 11  # reset + one per step
        assert all(s.valid and s.relations for s in rec.samples)
        assert len({s.sample_id for s in rec.samples}) == len(rec.samples)


def test_episode_ends_at_T0_valid_samples(source):
    env = RLS3Env.from_config(EnvConfig(max_relations=0), source, CaptionOracle().caption_scene, None, T=30, T0=2, seed=1)
    env.reset()
    rng = np.random.default_rng(1)
    for _ in range(30):
        _, _, done, _, info = env.step(rng.uniform(-1, 1, ACTION_DIM).astype(np.float32))
        if done:
            break
    assert done and info["n_valid"] == 2
    assert math.isnan(info["episode_record"].j2)  # no scorer -> no extrinsic reward


def test_worse_vlm_gives_higher_j2():
    good = [RelationScore("a", "c", ["left"], "c", 0.1, True, 0.9), RelationScore("b", "c", ["above"], "c", 0.2, True, 0.8)]
    bad = [RelationScore("a", "c", ["left"], "x", 2.0, False, 0.1), RelationScore("b", "c", ["above"], "x", 9.0, False, 0.0)]
    assert j2_from_scores(bad, "loss") > j2_from_scores(good, "loss")
    assert j2_from_scores(bad, "error") == 1.0 and j2_from_scores(good, "error") == 0.0
    assert j2_from_scores(bad, "loss", clip=3.0) == pytest.approx((2.0 + 3.0) / 2)  # clipped
    assert per_sample_loss(bad, clip=3.0) == {"a": 2.0, "b": 3.0}
    with pytest.raises(ValueError):
        j2_from_scores(good, "accuracy")


def test_action_decoding_reaches_every_move_kind(source):
    env = RLS3Env.from_config(EnvConfig(max_relations=0), source, CaptionOracle().caption_scene, None, T=4)
    env.reset()
    active = [o.id for o in env._scene.active_objects()]
    swap = env.decode_action([-1, -1, 0, 0, 0, 0])
    assert swap.action_type == SWAP and swap.object_id == active[0]
    place = env.decode_action([0.0, 0.0, -1, -1, -1, 0.5])
    assert place.action_type == PLACE and place.receptacle_id == "" and place.object_id == active[1]
    lo, hi = source.placement_bounds(env._scene)
    assert place.position[0] == pytest.approx(lo[0]) and place.position[2] == pytest.approx(lo[2])
    stack = env.decode_action([1, 1, 0, 0, 1, 0])
    assert stack.action_type == PLACE and stack.object_id == active[2] and stack.receptacle_id == active[1]
    with pytest.raises(ValueError):
        env.decode_action([0, 0, 0])


def test_bad_parameters_are_refused(source):
    cap = CaptionOracle().caption_scene
    with pytest.raises(ValueError):
        RLS3Env.from_config(EnvConfig(), source, cap, T=4, T0=5)
    with pytest.raises(ValueError):
        RLS3Env.from_config(EnvConfig(reward_valid=-1), source, cap, T=8)
    with pytest.raises(ValueError):
        RLS3Env.from_config(EnvConfig(j2_metric="score"), source, cap, T=8)


def test_j2_per_step_option_rewards_each_valid_sample(source, vlm):
    env = RLS3Env.from_config(EnvConfig(max_relations=0, j2_clip=5.0, j2_per_step=True, reward_valid=0.1,
                                        reward_invalid=-0.1), source, CaptionOracle().caption_scene, vlm.score,
                              T=6, T0=6, seed=5)
    env.reset()
    rng = np.random.default_rng(5)
    done, got_valid = False, False
    while not done:
        _, r, done, _, info = env.step(rng.uniform(-1, 1, ACTION_DIM).astype(np.float32))
        if info["valid"]:
            got_valid = True
            s = env._samples[-1]
            assert r == pytest.approx(0.1 + j2_from_scores(vlm.score([s]), "loss", env.j2_clip), rel=1e-5)
        elif info["reason"] != "no_relation":
            assert r == pytest.approx(-0.1)  # no extra J2 at the episode's end in this mode
    assert got_valid
    rec = info["episode_record"]
    assert rec.j2 == pytest.approx(j2_from_scores(vlm.score(rec.samples), "loss", env.j2_clip), rel=1e-5)


def test_a_seed_the_simulator_cannot_build_is_skipped(source):
    class Flaky(BackendSource):  # the real backend, refusing one seed as MuJoCo does for unplaceable scenes
        def __init__(self, inner):
            self.backend, self.renders, self._lock = inner.backend, 0, inner._lock
            self.refused = []

        def reset(self, seed, scene_type=None):
            if not self.refused:
                self.refused.append(seed)
                raise RuntimeError(f"could not place box_0 validly in {scene_type}_{seed}")
            return super().reset(seed, scene_type)

    flaky = Flaky(source)
    env = RLS3Env.from_config(EnvConfig(max_relations=0), flaky, CaptionOracle().caption_scene, None, T=2, seed=2)
    _, info = env.reset()
    assert flaky.refused == [env.scene_seed(0)] and info["scene_seed"] != flaky.refused[0]
    assert env._scene is not None and env._scene.seed == info["scene_seed"]


def test_adapter_baseline_measures_j2_against_the_current_adapters_mean():
    """J2 against the running mean of the same adapter's episodes: 0 for an adapter's first episode,
    the difference to the mean of the earlier ones after, and a new adapter starts afresh."""
    from rls3_ros.loop.reward import AdapterBaseline

    b = AdapterBaseline()
    assert b.relative(2.0, 0) == 0.0
    assert b.relative(3.0, 0) == pytest.approx(3.0 - 2.0)
    assert b.relative(1.0, 0) == pytest.approx(1.0 - (2.0 + 3.0) / 2)
    assert b.relative(5.0, 1) == 0.0  # fine-tuned: the old adapter's mean no longer applies
    assert b.relative(4.0, 1) == pytest.approx(4.0 - 5.0)
