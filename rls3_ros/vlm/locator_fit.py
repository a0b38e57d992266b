"""Per-model locator calibration: how a model's attention maps become boxes and confidences.

``rls3_ros.vlm.grounding.LocatorSettings`` turns an attention map into a box (a fixed size around the
peak) and a confidence (a logistic of the attention mass at the peak). Both depend on the model: the
defaults were fitted on the weak base ``grounded``. A model with a box head gives its own box; for it
the fit also chooses the located point ("peak" of the attention or centre of the "box"): whichever
lands inside the true box more often here, and the confidence is fitted for that point. A model directory may hold its own fit in
``locator.json`` (read by ``rls3_ros.vlm.grounded.persistence.load_locator_settings``), fitted here on
renders no training or evaluation set uses (scene seeds of ``CALIBRATION_SEED``):

    python -m rls3_ros.vlm.locator_fit models/grounded_serving [--n 600]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.vlm import grounding as G
from rls3_ros.vlm.grounded.vlm import pixel_box

# render_corpus seeds: pretraining uses 0 (scene seeds 1, 2, ...), the held-out sets 7919 and the
# pretraining test split seed + 7919: this one is far from all of them
CALIBRATION_SEED = 31337


def located_objects(samples) -> List[Tuple[int, Any]]:
    """(sample index, object) of every object a relation names, once per sample, with a box."""
    out = []
    for i, s in enumerate(samples):
        named = {r.subject_id for r in s.relations} | {r.reference_id for r in s.relations}
        for o in s.scene.objects:
            x0, y0, x1, y1 = o.bbox
            if o.id in named and x1 > x0 and y1 > y0:
                out.append((i, o))
    return out


def attention_records(vlm, samples, objects) -> List[Dict[str, Any]]:
    """Per object: its attention map and image size (computed once per model)."""
    by_sample: Dict[int, List[Any]] = {}
    for i, o in objects:
        by_sample.setdefault(i, []).append(o)
    recs = []
    for i, objs in by_sample.items():
        s = samples[i]
        maps, boxes = vlm.grounding(s.image, [o.description for o in objs])
        h, w = np.asarray(s.image).shape[:2]
        for k, (o, a) in enumerate(zip(objs, maps)):
            recs.append({"attention": a, "box": tuple(float(v) for v in o.bbox), "width": w, "height": h,
                         "category": o.category, "scene_type": s.scene.scene_type,
                         "head_box": None if boxes is None else pixel_box(boxes[k], w, h)})
    return recs


def box_centre(box: Sequence[float]) -> Tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def point_hits(recs: Sequence[Dict[str, Any]], grid: int) -> Dict[str, List[bool]]:
    """Per point source ("peak"; "box" when the records carry the box head's boxes): does the located
    point lie inside the true box, per record."""
    peaks = [G.attention_peak(r["attention"], grid, G.DEFAULT_SETTINGS.window) for r in recs]
    out = {"peak": [G.point_in_box((cx * r["width"], cy * r["height"]), r["box"]) for (cx, cy, _), r in zip(peaks, recs)]}
    if all(r.get("head_box") is not None for r in recs):
        out["box"] = [G.point_in_box(box_centre(r["head_box"]), r["box"]) for r in recs]
    return out


def choose_point(recs: Sequence[Dict[str, Any]], grid: int) -> str:
    """The point source whose points land inside the true boxes most often ("peak" on a tie)."""
    hits = point_hits(recs, grid)
    return max(hits, key=lambda k: (float(np.mean(hits[k])), k == "peak"))


def fit_calibration(recs: Sequence[Dict[str, Any]], grid: int, point: str = "peak") -> G.LocatorSettings:
    """Box size (for the fixed-size box around the peak) and the confidence logistic (attention mass
    at the peak -> P(the ``point`` source's point is inside the true box)) fitted on ``recs``."""
    base = G.DEFAULT_SETTINGS
    peaks = [G.attention_peak(r["attention"], grid, base.window) for r in recs]
    w, h = recs[0]["width"], recs[0]["height"]
    centres = np.array([(cx * r["width"], cy * r["height"]) for (cx, cy, _), r in zip(peaks, recs)])
    boxes = np.array([r["box"] for r in recs])
    fw, fh, _ = G.fit_box_size(centres, boxes, w, h)
    hits = point_hits(recs, grid)[point]
    a, b = G.fit_confidence([m for _, _, m in peaks], hits)
    return replace(base, box_width=round(fw, 4), box_height=round(fh, 4), conf_slope=round(a, 3), conf_bias=round(b, 3))


def fit_locator_point(vlm, samples) -> Tuple[G.LocatorSettings, str, int, Dict[str, float]]:
    """(settings, point source, objects, pointing rate of each point source) fitted on every object the
    relations of ``samples`` name (the point source: :func:`choose_point`)."""
    objs = located_objects(samples)
    if not objs:
        raise ValueError("no located objects to fit the locator on")
    recs = attention_records(vlm, samples, objs)
    point = choose_point(recs, vlm.config.grid)
    rates = {k: round(float(np.mean(v)), 4) for k, v in point_hits(recs, vlm.config.grid).items()}
    return fit_calibration(recs, vlm.config.grid, point), point, len(objs), rates


def fit_locator(vlm, samples) -> Tuple[G.LocatorSettings, int]:
    """Locator settings fitted on every object the relations of ``samples`` name; (settings, objects)."""
    settings, _, n, _ = fit_locator_point(vlm, samples)
    return settings, n


def main(argv: Optional[List[str]] = None) -> int:
    from rls3_ros.vlm.grounded.persistence import LOCATOR, save_locator_settings
    from rls3_ros.vlm.grounded.loader import load
    from rls3_ros.vlm.pretrain import render_corpus

    p = argparse.ArgumentParser(prog="python -m rls3_ros.vlm.locator_fit", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", type=Path, help="a grounded model directory (gets locator.json)")
    p.add_argument("--n", type=int, default=600, help="calibration images (default 600)")
    p.add_argument("--image-size", type=int, default=160)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.monotonic()
    vlm = load(str(a.model_dir))
    vlm.locator_settings = None  # fit from the defaults, not from an earlier fit
    samples = render_corpus(a.n, CALIBRATION_SEED, a.image_size, "mujoco", moves_per_scene=8, desc="calibration images")
    settings, point, n_objects, pointing = fit_locator_point(vlm, samples)
    fitted_on = {"images": len(samples), "objects": n_objects, "seed": CALIBRATION_SEED, "image_size": a.image_size,
                 "pointing": pointing,
                 "command": " ".join(["python -m rls3_ros.vlm.locator_fit", *(argv if argv is not None else sys.argv[1:])]),
                 "seconds": round(time.monotonic() - t0, 1)}
    save_locator_settings(settings, a.model_dir, fitted_on, point=point)
    print(f"wrote {a.model_dir / LOCATOR}: {json.dumps(settings.to_dict())}, point {point} (pointing {pointing}; "
          f"{n_objects} objects, {len(samples)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
