"""Generation modes, the tail split, the mode samplers' update rules and the paired statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rls3_ros.bench.paired import auc, mean_ci, paired, renders_to_reach, value_at
from rls3_ros.captions.oracle import CaptionOracle
from rls3_ros.loop.config import EnvConfig
from rls3_ros.loop.env import BackendSource, RLS3Env
from rls3_ros.loop.mode_samplers import TeacherSampler, UpperBoundSampler
from rls3_ros.loop.modes import MODES, UNIFORM_SHARE, mode_action, mode_of
from rls3_ros.loop.tail_split import balance_combos, generate_tail, is_tail
from rls3_ros.core.scene import SceneState, SpatialRelation
from rls3_ros.vlm.interface import RelationScore, combo_key, evaluation_of


@pytest.fixture(scope="module")
def source():
    from rls3_ros.sim.factory import make_backend

    src = BackendSource(make_backend("mujoco", image_size=64, seed=0))
    yield src
    src.close()


def test_every_mode_action_decodes_to_its_mode_and_its_move_kind(source):
    rng = np.random.default_rng(0)
    env = RLS3Env.from_config(EnvConfig(max_relations=0), source, CaptionOracle().caption_scene, None, T=4)
    env.reset()
    for m in MODES:
        for _ in range(50):
            a = mode_action(m, rng)
            assert mode_of(a) == m
        move = env.decode_action(mode_action(m, rng))
        kind = env._kind_name(move)
        assert kind == {"swap": "swap", "stack": "stack"}.get(m, "place"), (m, kind)
    with pytest.raises(ValueError):
        mode_action("fly", rng)


def test_uniform_actions_fall_into_modes_with_the_documented_shares():
    rng = np.random.default_rng(1)
    n = 20000
    counts = {m: 0 for m in MODES}
    for a in rng.uniform(-1, 1, (n, 6)):
        counts[mode_of(a)] += 1
    assert abs(sum(UNIFORM_SHARE.values()) - 1.0) < 1e-9
    for m in MODES:
        assert abs(counts[m] / n - UNIFORM_SHARE[m]) < 0.015, (m, counts[m] / n)


def _rel(terms, h_deg=0.0, s="a", r="b"):
    return SpatialRelation(s, r, s, r, list(terms), horizontal_angle=math.radians(h_deg))


def test_tail_rule_is_the_pre_registered_one():
    from rls3_ros.core.scene import ObjectState

    from rls3_ros.core.scene import CameraModel

    objs = [ObjectState(id=i, category=c, description=c, position=(0.0, 0.0, 0.0), visible_fraction=v)
            for i, c, v in (("a", "mug", 1.0), ("b", "lamp", 0.5), ("c", "cup", 1.0))]
    cam = CameraModel.look_at((2.0, 0.0, 1.0), (0.0, 0.0, 0.5), 64, 64, 60.0)
    scene = SceneState(scene_id="x", scene_type="kitchen", seed=0, camera=cam, objects=objs)
    assert is_tail(_rel(["on"], 0.0, "a", "c"), scene)
    assert is_tail(_rel(["above", "left"], 90.0, "a", "c"), scene)
    assert is_tail(_rel(["left"], 90.0 + 22.5 - 3.0, "a", "c"), scene)  # 3 deg from a sector boundary
    assert not is_tail(_rel(["left"], 90.0, "a", "c"), scene)  # centre of a sector, visible, level
    assert is_tail(_rel(["left"], 90.0, "a", "b"), scene)  # reference half occluded


def test_tail_split_from_its_own_generator(source):
    oracle = CaptionOracle()
    samples = generate_tail(source, oracle.caption_scene, "val_tail", 6, per_combo=3)
    assert samples, "the tail generator made no sample"
    per = {}
    for s in samples:
        for r in s.relations:
            assert is_tail(r, s.scene)
            per[combo_key(r.terms)] = per.get(combo_key(r.terms), 0) + 1
    assert max(per.values()) <= 3
    again = generate_tail(source, oracle.caption_scene, "val_tail", 6, per_combo=3)
    assert [s.sample_id for s in again] == [s.sample_id for s in samples]  # fixed seeds: the same split
    with pytest.raises(ValueError):
        generate_tail(source, oracle.caption_scene, "test", 1)
    assert balance_combos(samples, 1) and sum(len(s.relations) for s in balance_combos(samples, 1)) == len(per)


def test_evaluation_reports_per_combination_accuracy_and_loss():
    sc = [RelationScore("s", "c", ["above", "left"], "c", 1.0, True, 0.5),
          RelationScore("s", "c", ["left", "above"], "c", 3.0, False, 0.1),
          RelationScore("s", "c", ["on"], "c", 0.5, True, 0.6)]
    ev = evaluation_of(sc)
    assert ev.combo_counts == {"above+left": 2, "on": 1}
    assert ev.per_combo["above+left"] == 0.5 and ev.per_combo_loss["above+left"] == 2.0
    assert ev.per_term_loss["left"] == 2.0


class _Rec:
    def __init__(self, mode_counts, sample_modes, samples):
        self.mode_counts, self.sample_modes, self.samples = mode_counts, sample_modes, samples


class _S:
    def __init__(self, sid, combos):
        self.sample_id = sid
        self.relations = [_rel(c.split("+")) for c in combos]


def _val(loss, acc=None, counts=None):
    counts = counts or {c: 10 for c in loss}
    return {"per_combo_loss": loss, "per_combo": acc or {c: 0.5 for c in loss}, "combo_counts": counts}


def _feed(sampler, episodes):
    for mode_counts, samples in episodes:
        sampler.on_episode(None, _Rec(mode_counts, {s.sample_id: m for m, s in samples}, [s for _, s in samples]))


def test_teacher_moves_renders_to_the_mode_whose_relations_the_vlm_learns(source):
    env = RLS3Env.from_config(EnvConfig(max_relations=0), source, CaptionOracle().caption_scene, None, T=4)
    t = TeacherSampler([env], seed=0, epsilon=0.1)
    assert np.allclose(t.probs, 1 / len(MODES))
    t.update(0, _val({"on": 2.0, "left": 1.0}))
    for it in range(1, 4):
        # stack makes "on" relations, swap makes "left" ones, at the same render cost
        _feed(t, [({"stack": 4, "swap": 4}, [("stack", _S(f"a{it}", ["on"])), ("swap", _S(f"b{it}", ["left"]))])])
        t.update(it, _val({"on": 2.0 - 0.3 * it, "left": 1.0}))  # only "on" improves
        t.batch_attempts = {m: 0 for m in MODES}
        t.batch_yields = {m: {} for m in MODES}
    p = dict(zip(MODES, t.probs))
    assert max(p, key=p.get) == "stack" and p["stack"] > 1.5 * p["swap"], p
    assert p["swap"] > p["place_low"]  # swap's relations still count (shrunk toward the mean), untried modes least


def test_upper_bound_follows_yield_times_error(source):
    env = RLS3Env.from_config(EnvConfig(max_relations=0), source, CaptionOracle().caption_scene, None, T=4)
    u = UpperBoundSampler([env], seed=0, epsilon=0.1)
    _feed(u, [({"stack": 4, "swap": 4, "place_low": 4}, [("stack", _S("a", ["on", "on"])), ("swap", _S("b", ["left"])),
                                                          ("place_low", _S("c", ["left"]))])])
    u.update(1, _val({"on": 1, "left": 1}, acc={"on": 0.0, "left": 0.9}))
    p = dict(zip(MODES, u.probs))
    assert max(p, key=p.get) == "stack" and p["stack"] > 0.6


def test_paired_statistics():
    c = [(0, 0.3), (100, 0.5), (200, 0.7)]
    assert value_at(c, 150) == pytest.approx(0.6)
    assert renders_to_reach(c, 0.6) == pytest.approx(150.0)
    assert renders_to_reach(c, 0.2) == pytest.approx(100.0)  # the base point does not count
    assert renders_to_reach(c, 0.9) is None
    assert auc(c, 200) == pytest.approx(0.5)
    d = paired([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
    assert d["mean"] == pytest.approx(0.2) and d["lo"] < 0.2 < d["hi"] and d["n"] == 3
    assert mean_ci([1.0])["n"] == 1 and math.isnan(mean_ci([])["mean"])
