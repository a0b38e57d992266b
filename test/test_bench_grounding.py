"""``rls3 bench grounding`` plumbing on synthetic attention maps with a known answer: the metrics,
the validation fit, the paired sign test and the Markdown table (the real run is the benchmark)."""

from types import SimpleNamespace

import numpy as np
import pytest

from rls3_ros.bench import grounding as B
from rls3_ros.loop.promotion import two_sided_sign_test_p
from rls3_ros.vlm import grounding as G

GRID, W, H = 10, 160, 160


def _records(n: int, hit_rate: float, seed: int):
    """Objects 20 x 22 px centred in a grid cell; the attention peaks on the object with
    probability ``hit_rate``, else on a cell far from it."""
    rng = np.random.default_rng(seed)
    recs = []
    for k in range(n):
        i, j = rng.integers(1, GRID - 1, 2)
        cu, cv = (j + 0.5) * W / GRID, (i + 0.5) * H / GRID
        box = (cu - 10, cv - 11, cu + 10, cv + 11)
        pi, pj = (i, j) if rng.random() < hit_rate else ((i + 5) % GRID, (j + 5) % GRID)
        a = np.full((GRID, GRID), 1e-3)
        a[pi, pj] = 1.0
        recs.append({"attention": (a / a.sum()).reshape(-1), "box": box, "width": W, "height": H,
                     "category": "mug" if k % 2 else "vase", "scene_type": "kitchen"})
    return recs


def test_metrics_fit_and_report_on_a_known_answer(tmp_path):
    val, test = _records(200, 0.8, 0), _records(300, 0.7, 1)
    settings = B.fit_calibration(val, GRID)
    assert settings.box_width == pytest.approx(20 / W, abs=0.0126) and settings.box_height == pytest.approx(22 / H, abs=0.0126)
    m = B.evaluate(test, GRID, settings)
    hits = np.array(m.pop("hits"))
    assert m["n"] == 300 and m["pointing_accuracy"] == pytest.approx(hits.mean())
    assert 0.6 < m["pointing_accuracy"] < 0.8  # ~0.7 by construction
    assert m["box_iou_at_0_5"] == pytest.approx(m["pointing_accuracy"], abs=0.02)  # every hit is a near-perfect box
    assert m["box_iou_mean"] > 0.5 * m["pointing_accuracy"]
    assert m["baselines"]["random_point"] == pytest.approx(20 * 22 / (W * H))
    assert set(m["per_category_pointing"]) == {"mug", "vase"}
    assert two_sided_sign_test_p(10, 10) == 1.0 and two_sided_sign_test_p(0, 10) == pytest.approx(2 / 1024)
    doc = {"models": {"base": m, "tuned": m}, "calibration": settings.to_dict(), "n_test_samples": 300, "n_objects": 300,
           "n_val_objects": 200, "image_size": W, "tuned_from": "test", "wall_s": 1.0, "host": {"cpus": 2},
           "paired": {"n": 300, "base_only": 3, "tuned_only": 5, "sign_test_p": two_sided_sign_test_p(3, 5)}}
    B.write_markdown(doc, tmp_path / "g.md")
    text = (tmp_path / "g.md").read_text()
    assert f"| pointing accuracy (point inside the true box) | {m['pointing_accuracy']:.3f} | {m['pointing_accuracy']:.3f} |" in text
    assert "3 hit only by the base, 5 only by the tuned model" in text


def test_located_objects_are_the_named_ones_with_a_box():
    o = lambda i, box: SimpleNamespace(id=i, bbox=box)  # noqa: E731
    s = SimpleNamespace(relations=[SimpleNamespace(subject_id="a", reference_id="b")],
                        scene=SimpleNamespace(objects=[o("a", (1, 1, 5, 5)), o("b", (0, 0, 0, 0)), o("c", (2, 2, 9, 9))]))
    assert [x.id for _, x in B.located_objects([s])] == ["a"]
