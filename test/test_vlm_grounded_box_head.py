"""The grounded model's box head and finer feature grid (issue 27): real MuJoCo renders, real
EfficientNet features, a small config trained a few steps; models without a box head (the weak base
models/grounded, every model built before it) load and locate exactly as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rls3_ros.vlm import grounded as G
from rls3_ros.vlm import grounding as Gr
from rls3_ros.vlm.grounded.vlm import pixel_box
from rls3_ros.vlm.locator_fit import located_objects

REPO_MODEL = Path(__file__).resolve().parents[1] / "models" / "grounded"


@pytest.fixture(scope="module")
def samples():
    from renders import captioned_renders

    return captioned_renders(16, seed=5)


def mean_ious(vlm, samples):
    """(mean IoU of the located boxes, mean IoU of the fixed-size box around the attention peak) with
    the true 2D boxes of every object a relation names."""
    head, fixed = [], []
    for i, o in located_objects(samples):
        im = samples[i].image
        h, w = im.shape[:2]
        loc = vlm.locate(im, o.description)
        head.append(Gr.box_iou(loc.box, o.bbox))
        fixed.append(Gr.box_iou(Gr.locate_in_attention(vlm.attention_maps(im, [o.description])[0],
                                                       vlm.config.grid, w, h).box, o.bbox))
    return float(np.mean(head)), float(np.mean(fixed))


def trained(samples, box_weight, steps=150, stage="stride8+16"):
    torch.manual_seed(0)
    cfg = G.GroundedConfig(image_size=96, image_stage=stage, box_hidden=32)
    vlm = G.GroundedVLM(G.GroundedRelationModel(cfg), seed=0, box_weight=box_weight)
    feats = vlm.features([s.image for s in samples]).float()
    params = list(vlm.base.parameters())
    for p in params:
        p.requires_grad_(True)
    vlm.train_steps(feats, vlm.prepare(samples), steps, params, lr=3e-3, batch_size=32, warmup=10)
    for p in params:
        p.requires_grad_(False)
    return vlm


def test_trained_box_head_boxes_beat_the_fixed_size_box_and_locate_returns_them(samples):
    vlm = trained(samples, box_weight=1.0)
    assert vlm.config.grid == 12 and vlm.config.feat_channels == 152  # 96 px at stride 8, 40 + 112 channels
    head, fixed = mean_ious(vlm, samples)
    assert head > fixed + 0.05, (head, fixed)
    # without the box loss the head stays where it started (a fixed-size box): no better than the fixed box
    untrained_head, untrained_fixed = mean_ious(trained(samples, box_weight=0.0), samples)
    assert untrained_head < untrained_fixed + 0.05 < head, (untrained_head, untrained_fixed, head)
    # locate_many returns the head's box; the point follows point_source
    im, desc = samples[0].image, [samples[0].relations[0].subject_description, samples[0].relations[0].reference_description]
    maps, boxes = vlm.grounding(im, desc)
    h, w = im.shape[:2]
    for src in ("peak", "box"):
        vlm.point_source = src
        for loc, a, b in zip(vlm.locate_many(im, desc), maps, boxes):
            assert loc.box == pixel_box(b, w, h)
            peak = Gr.locate_in_attention(a, vlm.config.grid, w, h)
            centre = ((loc.box[0] + loc.box[2]) / 2, (loc.box[1] + loc.box[3]) / 2)
            assert loc.point == pytest.approx(peak.point if src == "peak" else centre)
            assert loc.confidence == pytest.approx(peak.confidence)
    # the boxes the relation pass memoised are the ones a fresh grounding pass computes
    vlm.axis_probs(im, [tuple(desc)])
    memo_maps, memo_boxes = vlm.grounding(im, desc)
    assert vlm._att_memo is None and np.allclose(memo_boxes, boxes, atol=1e-5) and np.allclose(memo_maps, maps, atol=1e-6)


def test_box_head_model_saves_loads_and_fits_its_locator_point(samples, tmp_path):
    from rls3_ros.vlm.grounded.persistence import LOCATOR, save_locator_settings
    from rls3_ros.vlm.locator_fit import fit_locator_point

    vlm = trained(samples, box_weight=1.0, steps=40, stage="stride8")
    assert vlm.config.feat_channels == 40
    G.save_model(vlm.base, tmp_path / "m")
    settings, point, n, rates = fit_locator_point(vlm, samples)
    assert n > 0 and set(rates) == {"peak", "box"} and rates[point] == max(rates.values())
    save_locator_settings(settings, tmp_path / "m", {"images": len(samples)}, point=point)
    again = G.load(str(tmp_path / "m"))
    assert again.point_source == point and again.config.box_hidden == 32
    im, d = samples[1].image, samples[1].relations[0].subject_description
    vlm.point_source, vlm.locator_settings = point, settings
    assert again.locate(im, d) == vlm.locate(im, d)
    (tmp_path / "m" / LOCATOR).write_text(json.dumps({"settings": settings.to_dict(), "point": "middle"}))
    with pytest.raises(ValueError, match="point"):
        G.load(str(tmp_path / "m"))


def test_models_without_a_box_head_load_and_locate_as_before(samples):
    """models/grounded (no box_hidden in its config.json) gets no box-head modules (strict load of the
    same tensors, same fingerprint as the weights on disk) and its locations are the attention
    locator's: fixed-size box around the attention peak."""
    from safetensors.torch import load_file

    cfg = json.loads((REPO_MODEL / "config.json").read_text())
    assert "box_hidden" not in cfg or cfg["box_hidden"] == 0
    vlm = G.load(str(REPO_MODEL))
    assert vlm.config.box_hidden == 0 and not vlm.base.has_box_head
    assert set(vlm.base.state_dict()) == set(load_file(str(REPO_MODEL / "model.safetensors")))
    im = samples[2].image
    desc = [r.subject_description for r in samples[2].relations]
    maps, boxes = vlm.grounding(im, desc)
    assert boxes is None
    h, w = im.shape[:2]
    settings = vlm.locator_settings or Gr.DEFAULT_SETTINGS
    assert vlm.locate_many(im, desc) == [Gr.locate_in_attention(a, vlm.config.grid, w, h, settings) for a in maps]
    # a default config draws the same initial weights as a config without the new field
    torch.manual_seed(3)
    a = G.GroundedRelationModel(G.GroundedConfig())
    torch.manual_seed(3)
    b = G.GroundedRelationModel(G.GroundedConfig.from_dict({k: v for k, v in json.loads(G.GroundedConfig().to_json()).items()
                                                            if k != "box_hidden"}))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    # three outputs without a box head even when boxes are asked for (callers unpack three)
    assert len(vlm.base(vlm.features([im]).float(), torch.zeros(1, dtype=torch.long), desc[:1], desc[:1],
                        with_boxes=True)) == 3


def test_caption_parse_cache_stays_bounded_and_answers_past_its_bound():
    """A corpus with more distinct captions than the parse cache holds (19,200 renders have): the
    caption that overflows it is parsed and returned, not lost with the cleared entries."""
    vlm = G.GroundedVLM(G.GroundedRelationModel(G.GroundedConfig()), seed=0)
    vlm._parse_cache.update({f"caption {i}": None for i in range(50000)})
    assert vlm.parse("The black small pot is in front of the white box.") == ("black small pot", ("in front",), "white box")
    assert len(vlm._parse_cache) == 1


@pytest.mark.parametrize("relation_boxes", [False, True])
def test_relation_head_sees_the_predicted_boxes_only_when_configured(samples, tmp_path, relation_boxes):
    """``relation_boxes``: the relation head's answer depends on the box head's output (moving the
    box head moves the answer); without it the answer is the box head's business only; such a
    model saves and loads to the same answers, and a config without a box head is refused."""
    torch.manual_seed(0)
    cfg = G.GroundedConfig(image_size=96, image_stage="stride8", box_hidden=16, relation_boxes=relation_boxes)
    vlm = G.GroundedVLM(G.GroundedRelationModel(cfg), seed=0)
    im, r = samples[3].image, samples[3].relations[0]
    pair = [(r.subject_description, r.reference_description)]
    before = vlm.axis_probs(im, pair)
    with torch.no_grad():
        vlm.base.box_out.bias.add_(torch.tensor([0.4, -0.3, 0.5, -0.5]))
    after = vlm.axis_probs(im, pair)
    assert (np.abs(after - before).max() > 1e-4) == relation_boxes
    G.save_model(vlm.base, tmp_path / "m")
    again = G.load(str(tmp_path / "m"))
    assert again.config.relation_boxes == relation_boxes
    assert np.allclose(again.axis_probs(im, pair), after, atol=1e-6)
    with pytest.raises(ValueError, match="box head"):
        G.GroundedRelationModel(G.GroundedConfig(image_size=96, image_stage="stride8", relation_boxes=True))
