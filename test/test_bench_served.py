"""``rls3 bench served`` on a handful of real MuJoCo renders with the committed serving model:
the held-out set is the where bench's, the figures are consistent with what one computes by hand
(3-D error from the rendered depth, where-exact = score_answers), the files have the stated keys.
Behaviour only, never the value of an accuracy."""

import json
import math

import numpy as np
import pytest

from rls3_ros.bench import served as S
from rls3_ros.captions.oracle import CaptionOracle
from rls3_ros.vlm import served_eval as SE
from rls3_ros.vlm.answers import load_model
from rls3_ros.vlm.pretrain import render_corpus
from rls3_ros.vlm.where_metric import score_answers, where_pairs

N = 4


@pytest.fixture(scope="module")
def items():
    return SE.render_heldout(N, S.HELD_OUT_SEED, 160)


@pytest.fixture(scope="module")
def model():
    return load_model("grounded:serving")


def test_heldout_is_the_where_benchs_set_with_its_rendered_depth(items):
    ref = render_corpus(N, S.HELD_OUT_SEED, 160, "mujoco", moves_per_scene=8, desc="held-out")
    assert [it.sample.sample_id for it in items] == [s.sample_id for s in ref]
    for it, s in zip(items, ref):
        assert np.array_equal(it.sample.image, s.image)
        assert [r.terms for r in it.sample.relations] == [r.terms for r in s.relations]
        assert it.depth.shape == it.sample.image.shape[:2] and it.depth.dtype == np.float32
        # the rendered depth at an object's own pixel is near the scene state's depth of its centre
        o = it.sample.scene.object(it.sample.relations[0].subject_id)
        u, v = it.sample.scene.camera.project(np.asarray([o.position]))[0]
        z_img = float(it.depth[int(v), int(u)])
        z_state = SE.object_centre(it.sample.scene, o)[2]
        assert abs(z_img - z_state) < 0.3, (z_img, z_state)


def test_point3d_error_is_the_depth_in_box_centre_against_the_true_centre(items, model):
    from rls3_ros.vlm import depth_centre as D
    from rls3_ros.vlm import grounding as G

    locs = S.locations(model, items)
    recs = S.object_records(items, locs)
    assert recs and all(r["error_m"] is not None for r in recs)
    for r in recs:  # the node's 3-D point with a depth image: the centre from the depths in the located box
        s, depth = items[r["sample"]]
        loc = locs[(r["sample"], r["object"])]
        k = G.Intrinsics.of_camera(s.scene.camera)
        truth = SE.object_centre(s.scene, s.scene.object(r["object"]))
        c = D.object_centre(depth, loc.box, loc.point, k)
        assert r["error_m"] == pytest.approx(float(np.linalg.norm(np.subtract(c.point, truth))), abs=1e-9)
        t = D.object_centre(depth, s.scene.object(r["object"]).bbox, loc.point, k)
        assert r["error_m_true_box"] == pytest.approx(float(np.linalg.norm(np.subtract(t.point, truth))), abs=1e-9)
    r = recs[0]
    s, depth = items[r["sample"]]
    o = s.scene.object(r["object"])
    u, v = model.locate(s.image, o.description).point
    assert (u, v) == pytest.approx(r["point"])
    # by hand: median depth within 2 px, pinhole back-projection, centre moved into the optical frame
    iu, iv = int(math.floor(u)), int(math.floor(v))
    win = depth[max(0, iv - 2): iv + 3, max(0, iu - 2): iu + 3].astype(float)
    z = float(np.median(win[np.isfinite(win) & (win > 0.01) & (win < 100)]))
    c = s.scene.camera
    p = np.array([(u - c.cx) * z / c.fx, (v - c.cy) * z / c.fy, z])
    rot = c.rotation()
    truth = rot.T @ (np.asarray(o.position) - np.asarray(c.position))
    assert r["error_m_point_depth"] == pytest.approx(float(np.linalg.norm(p - truth)), abs=1e-6)
    # the camera -> world transform is the inverse of the scene's world -> camera
    assert np.allclose(SE.camera_to_world(s.scene, truth), o.position, atol=1e-9)


def test_geometry_terms_on_the_true_centres_are_the_oracles_terms_without_contact(items):
    oracle = CaptionOracle()
    checked = 0
    for s, _ in items:
        for r in s.relations:
            a, b = s.scene.object(r.subject_id), s.scene.object(r.reference_id)
            got = SE.geometry_terms(oracle, s.scene, a, b, SE.object_centre(s.scene, a), SE.object_centre(s.scene, b))
            if not ({"on", "under"} & set(r.terms)):
                assert got == list(r.terms)
                checked += 1
            else:
                assert not ({"on", "under"} & set(got))
    assert checked > 0
    assert SE.geometry_terms(oracle, items[0].sample.scene, a, b, None, (0.0, 0.0, 1.0)) == []


def test_evaluate_model_figures_agree_with_the_where_metric_and_the_records(items, model):
    f = S.evaluate_model(model, items)
    samples = [it.sample for it in items]
    ref = score_answers(where_pairs(model, samples))
    assert f["where_exact"] == ref["exact"]
    assert f["where_per_term"] == {t: d["accuracy"] for t, d in ref["per_term"].items()}
    assert f["where_per_axis"] == ref["per_axis"]
    recs = S.object_records(items, S.locations(model, items))
    assert f["pointing"] == pytest.approx(np.mean([r["hit"] for r in recs]))
    assert f["iou50"] == pytest.approx(np.mean([r["iou"] >= 0.5 for r in recs]))
    assert f["point3d_median_m"] == pytest.approx(np.median([r["error_m"] for r in recs]))
    assert f["mc_accuracy"] == pytest.approx(model.evaluate(samples).accuracy)
    assert f["n"]["images"] == N and f["n"]["relations"] == sum(len(s.relations) for s in samples)
    assert f["n"]["objects"] == len(recs)
    assert f["point3d_median_m_true_box"] == pytest.approx(np.median([r["error_m_true_box"] for r in recs]))
    for k in ("where_exact_geometry", "ece", "iou_mean", "point3d_median_m_true_pixel", "point3d_median_m_point_depth",
              "where_hybrid_share"):
        assert math.isfinite(f[k]), k
    # the hybrid is the node's policy on the text head's terms and the two depth-in-box centres
    from rls3_ros.vlm.where_geometry import hybrid_terms, points_terms

    text = where_pairs(model, samples)
    locs, want, j = S.locations(model, items), [], 0
    for i, (s, depth) in enumerate(items):
        k = SE.intrinsics(s.scene)
        for r in s.relations:
            pa, pb = (SE.centre_point(depth, locs[(i, o)], k) for o in (r.subject_id, r.reference_id))
            want.append((list(r.terms), hybrid_terms(text[j][1], points_terms(s.scene.camera, pa, pb))[0]))
            j += 1
    hyb = score_answers(want)
    assert f["where_exact_hybrid"] == hyb["exact"] and f["where_per_axis_hybrid"] == hyb["per_axis"]
    assert f["where_per_term_hybrid"] == {t: d["accuracy"] for t, d in hyb["per_term"].items()}


def test_goal_met_reads_the_issues_direction():
    assert S.goal_met("where_exact", 0.8) is True and S.goal_met("where_exact", 0.79) is False
    assert S.goal_met("ece", 0.04) is True and S.goal_met("ece", 0.06) is False
    assert S.goal_met("where_per_term", {"on": 0.9, "under": 0.6}) is False
    assert S.goal_met("mc_accuracy", 0.5) is None and S.goal_met("pointing", float("nan")) is None


def test_cli_quick_writes_both_sizes_side_by_side(tmp_path):
    base = "grounded:serving"
    assert S.cli_bench_served(["--quick", "--out", str(tmp_path), "--models", f"old={base}", base]) == 0
    doc = json.loads((tmp_path / "served_model_quick.json").read_text())
    assert set(doc["sizes"]) == {"160", "224"} and doc["quick"] is True
    assert doc["models"]["base"] == {"label": "old", "spec": base} and doc["models"]["new"]["spec"] == base
    for size, per in doc["sizes"].items():
        assert set(per) == {"base", "new"}
        for role in ("base", "new"):
            f = per[role]
            for k in ("where_exact", "where_per_term", "where_per_axis", "mc_accuracy", "pointing", "iou_mean", "iou50",
                      "ece", "point3d_median_m", "n", "where_exact_geometry", "where_exact_hybrid",
                      "where_per_term_hybrid", "point3d_median_m_true_box", "goals_met"):
                assert k in f, (size, role, k)
        assert per["base"]["where_exact"] == per["new"]["where_exact"]  # the same model twice
    assert doc["machine"]["nproc"] >= 1 and len(doc["machine"]["loadavg_start"]) == 3
    assert doc["seconds"]["render_160"] >= 0 and "new_224" in doc["seconds"]
    md = (tmp_path / "served_model_quick.md").read_text()
    assert "## 160 px" in md and "## 224 px" in md and "| figure | goal | base | new | met? |" in md
