"""A model's own locator calibration (locator.json): fitted on real renders, saved, loaded with the
model, used by locate, refused when malformed, dropped when the weights are rebuilt."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rls3_ros.vlm import grounding as G
from rls3_ros.vlm.grounded.loader import load
from rls3_ros.vlm.grounded.persistence import LOCATOR, load_locator_settings, save_locator_settings, save_model
from rls3_ros.vlm.locator_fit import CALIBRATION_SEED, fit_locator
from rls3_ros.vlm.model_dirs import default_dirs
from rls3_ros.vlm.pretrain import render_corpus


@pytest.fixture(scope="module")
def serving_copy(tmp_path_factory):
    src = next(d for d in default_dirs("grounded_serving") if (d / "config.json").is_file())
    dst = tmp_path_factory.mktemp("model") / "serving"
    shutil.copytree(src, dst)
    (dst / LOCATOR).unlink(missing_ok=True)
    return dst


def test_fit_save_load_and_locate_with_the_models_own_settings(serving_copy):
    vlm = load(str(serving_copy))
    assert vlm.locator_settings is None
    samples = render_corpus(6, CALIBRATION_SEED, 160, "mujoco", moves_per_scene=2, desc="calibration")
    settings, n = fit_locator(vlm, samples)
    assert n > 0 and settings != G.DEFAULT_SETTINGS
    save_locator_settings(settings, serving_copy, {"images": len(samples), "objects": n})
    again = load(str(serving_copy))
    assert again.locator_settings == settings
    loc = again.locate(samples[0].image, samples[0].relations[0].subject_description)
    x0, y0, x1, y1 = loc.box
    w, h = samples[0].image.shape[1], samples[0].image.shape[0]
    maps, boxes = again.grounding(samples[0].image, [samples[0].relations[0].subject_description])
    # the confidence is the fitted logistic of the attention mass at the peak
    assert loc.confidence == pytest.approx(G.locate_in_attention(maps[0], again.config.grid, w, h, settings).confidence)
    if boxes is not None:  # a box head: its own box, not the fixed size
        from rls3_ros.vlm.grounded.vlm import pixel_box

        assert loc.box == pixel_box(boxes[0], w, h)
        return
    # the box is the fitted size (clipped at the image border at most)
    assert (x1 - x0) <= round(settings.box_width * w) + 1
    if settings.box_width != G.DEFAULT_SETTINGS.box_width and 0 < x0 and x1 < w:
        assert abs((x1 - x0) - settings.box_width * w) <= 1.5


def test_malformed_or_out_of_range_calibration_is_refused_with_the_file_named(tmp_path):
    (tmp_path / LOCATOR).write_text("{not json")
    with pytest.raises(ValueError, match=LOCATOR):
        load_locator_settings(tmp_path)
    bad = dict(G.DEFAULT_SETTINGS.to_dict(), box_width=7.0)
    (tmp_path / LOCATOR).write_text(json.dumps({"settings": bad}))
    with pytest.raises(ValueError, match="out of range"):
        load_locator_settings(tmp_path)
    (tmp_path / LOCATOR).write_text(json.dumps({"settings": dict(G.DEFAULT_SETTINGS.to_dict(), conf_slope=float("nan"))}))
    with pytest.raises(ValueError):
        load_locator_settings(tmp_path)
    assert load_locator_settings(tmp_path / "nowhere") is None


def test_rebuilding_the_weights_drops_the_old_fit(serving_copy, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(serving_copy, d)
    save_locator_settings(G.DEFAULT_SETTINGS, d, {"images": 0})
    (d / "README.md").write_text("kept")
    save_model(load(str(d)).base, d)
    assert not (d / LOCATOR).exists() and (d / "README.md").read_text() == "kept"
    assert np.isfinite(load(str(d)).locate(np.zeros((160, 160, 3), np.uint8), "red mug").confidence)
