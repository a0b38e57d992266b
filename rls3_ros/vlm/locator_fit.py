"""Per-model locator calibration: how a model's attention maps become boxes and confidences.

``rls3_ros.vlm.grounding.LocatorSettings`` turns an attention map into a box (a fixed size around the
peak) and a confidence (a logistic of the attention mass at the peak). Both depend on the model: the
defaults were fitted on the weak base ``grounded``. A model directory may hold its own fit in
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
        maps = vlm.attention_maps(s.image, [o.description for o in objs])
        h, w = np.asarray(s.image).shape[:2]
        for o, a in zip(objs, maps):
            recs.append({"attention": a, "box": tuple(float(v) for v in o.bbox), "width": w, "height": h,
                         "category": o.category, "scene_type": s.scene.scene_type})
    return recs


def fit_calibration(recs: Sequence[Dict[str, Any]], grid: int) -> G.LocatorSettings:
    """Box size and confidence logistic fitted on ``recs`` (the validation split)."""
    base = G.DEFAULT_SETTINGS
    peaks = [G.attention_peak(r["attention"], grid, base.window) for r in recs]
    w, h = recs[0]["width"], recs[0]["height"]
    centres = np.array([(cx * r["width"], cy * r["height"]) for (cx, cy, _), r in zip(peaks, recs)])
    boxes = np.array([r["box"] for r in recs])
    fw, fh, _ = G.fit_box_size(centres, boxes, w, h)
    hits = [G.point_in_box(c, b) for c, b in zip(centres, boxes)]
    a, b = G.fit_confidence([m for _, _, m in peaks], hits)
    return replace(base, box_width=round(fw, 4), box_height=round(fh, 4), conf_slope=round(a, 3), conf_bias=round(b, 3))


def fit_locator(vlm, samples) -> Tuple[G.LocatorSettings, int]:
    """Locator settings fitted on every object the relations of ``samples`` name; (settings, objects)."""
    objs = located_objects(samples)
    if not objs:
        raise ValueError("no located objects to fit the locator on")
    return fit_calibration(attention_records(vlm, samples, objs), vlm.config.grid), len(objs)


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
    settings, n_objects = fit_locator(vlm, samples)
    fitted_on = {"images": len(samples), "objects": n_objects, "seed": CALIBRATION_SEED, "image_size": a.image_size,
                 "command": " ".join(["python -m rls3_ros.vlm.locator_fit", *(argv if argv is not None else sys.argv[1:])]),
                 "seconds": round(time.monotonic() - t0, 1)}
    save_locator_settings(settings, a.model_dir, fitted_on)
    print(f"wrote {a.model_dir / LOCATOR}: {json.dumps(settings.to_dict())} ({n_objects} objects, {len(samples)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
