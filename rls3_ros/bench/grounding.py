"""How well does the VLM find the objects it is asked about? ``rls3 bench grounding [--quick]``.

The grounded model attends over its image grid to find each description; ``SpatialVLM.locate``
turns that attention into a box, a point and a confidence (``rls3_ros.vlm.grounding``). This
benchmark measures it against the oracle's 2D boxes (``ObjectState.bbox``, from the simulator's
instance segmentation) on the **held-out test scenes of the learning benchmark** (the loop's
fixed ``test`` split, never trained on), for the base model and for the tuned one (the main
job's final LoRA adapter: ``rls3 train`` with ``config/train.yaml``, run here unless
``--adapter`` names one):

- pointing accuracy: predicted point inside the true box;
- box IoU with the true box (mean, and the share >= 0.5);
- confidence calibration: expected calibration error of "the point is on the object";
- baselines: a point drawn uniformly over the image (chance = the box's share of the image) and
  the image centre with the same box size.

Calibration (box size, confidence logistic) is fitted on the loop's ``val`` split with the base
model and then held fixed (``rls3_ros.vlm.grounding.DEFAULT_SETTINGS`` holds the fitted values;
the JSON says whether they still match). Objects evaluated: every object named by a relation of a
test sample, once per sample, with a non-empty box.

Writes ``results/grounding.json`` (stable keys: ``models.<base|tuned>.pointing_accuracy``,
``.box_iou_mean``, ``.box_iou_at_0_5``, ``.ece``; ``calibration``; ``n_objects``) and
``results/grounding.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.loop.promotion import two_sided_sign_test_p
from rls3_ros.vlm import grounding as G
from rls3_ros.vlm.locator_fit import attention_records, fit_calibration, located_objects  # noqa: F401 - also the bench's API


def evaluate(recs: Sequence[Dict[str, Any]], grid: int, settings: G.LocatorSettings) -> Dict[str, Any]:
    """Pointing accuracy, IoU and calibration of the locations from ``recs`` with ``settings``,
    plus the point variants (attention argmax cell, global soft-argmax) and the baselines."""
    hits, ious, confs, arg_hits, glob_hits, centre_hits, centre_ious, chance = [], [], [], [], [], [], [], []
    per_cat: Dict[str, List[bool]] = {}
    coords = (np.arange(grid) + 0.5) / grid
    for r in recs:
        w, h, box = r["width"], r["height"], r["box"]
        loc = G.locate_in_attention(r["attention"], grid, w, h, settings)
        hit = G.point_in_box(loc.point, box)
        hits.append(hit)
        ious.append(G.box_iou(loc.box, box))
        confs.append(loc.confidence)
        per_cat.setdefault(r["category"], []).append(hit)
        a = np.asarray(r["attention"], float).reshape(grid, grid)
        a = a / a.sum()
        i, j = np.unravel_index(int(a.argmax()), a.shape)
        arg_hits.append(G.point_in_box((coords[j] * w, coords[i] * h), box))
        glob_hits.append(G.point_in_box(((a.sum(0) @ coords) * w, (a.sum(1) @ coords) * h), box))
        centre = (w / 2.0, h / 2.0)
        centre_hits.append(G.point_in_box(centre, box))
        centre_ious.append(G.box_iou(G.box_around(*centre, w, h, settings), box))
        chance.append((box[2] - box[0]) * (box[3] - box[1]) / float(w * h))
    ious_a = np.asarray(ious)
    return {
        "n": len(recs),
        "pointing_accuracy": float(np.mean(hits)),
        "box_iou_mean": float(ious_a.mean()),
        "box_iou_median": float(np.median(ious_a)),
        "box_iou_at_0_5": float((ious_a >= 0.5).mean()),
        "mean_confidence": float(np.mean(confs)),
        "ece": G.calibration_error(confs, hits),
        "confidence_auc": G.ranking_auc(confs, hits),
        "pointing_accuracy_confident_half": float(np.mean(np.asarray(hits)[np.argsort(confs)[len(confs) // 2:]])),
        "pointing_accuracy_unconfident_half": float(np.mean(np.asarray(hits)[np.argsort(confs)[: len(confs) // 2]])),
        "hits": [bool(x) for x in hits],
        "pointing_variants": {"local_soft_argmax": float(np.mean(hits)), "argmax_cell": float(np.mean(arg_hits)),
                              "global_soft_argmax": float(np.mean(glob_hits))},
        "baselines": {"random_point": float(np.mean(chance)), "image_centre_point": float(np.mean(centre_hits)),
                      "image_centre_box_iou": float(np.mean(centre_ious))},
        "per_category_pointing": {c: {"accuracy": float(np.mean(v)), "n": len(v)} for c, v in sorted(per_cat.items())},
    }



def main_job_adapter(cfg: Dict[str, Any], run_path: Path, grounding_weight: Optional[float] = None,
                     log=print) -> Tuple[str, Dict[str, Any]]:
    """Run the main job (``rls3 train``'s loop, its configuration) into ``run_path``; its last adapter.
    ``grounding_weight``: the fine-tuning's box-grounding loss weight (None = the model's default, 0.5)."""
    from rls3_ros.loop.runner import run_inprocess
    from rls3_ros.loop.run_dir import RunDir

    vlm = None
    if grounding_weight is not None:
        from rls3_ros.vlm import grounded

        vlm = grounded.load(grounding_weight=float(grounding_weight))
    log(f"[bench grounding] running the main job ({cfg['run']['agent']}, {cfg['loop']['budget_valid_samples']} valid "
        f"samples) for the tuned model -> {run_path}")
    summary = run_inprocess(cfg, str(run_path), progress=False, log=lambda m: None, vlm=vlm)
    path = RunDir(str(run_path)).adapter_path(int(summary["iterations"]))
    if not os.path.isfile(os.path.join(path, "adapter_config.json")):
        raise RuntimeError(f"the main job left no adapter at {path}")
    return path, summary


def splits(cfg: Dict[str, Any], log=print):
    """The loop's cached ``test`` and ``val`` splits (generated once with the loop's own keys)."""
    from rls3_ros.captions.oracle import CaptionOracle
    from rls3_ros.loop.datasets import cached_split
    from rls3_ros.loop.runner import BackendSource, backend_params, split_source_key
    from rls3_ros.sim.factory import make_backend

    rc, ev = cfg["run"], cfg["eval"]
    source = BackendSource(make_backend(rc["backend"], **backend_params(rc, int(rc["seed"]))))
    try:
        scene_types = rc.get("scene_types") or list(source.scene_types)
        key = split_source_key(rc)
        oracle = CaptionOracle()
        cap = lambda scene: oracle.caption_scene(scene)  # noqa: E731 - the loop's deterministic captioner
        test = cached_split(source, cap, "test", int(ev["test_scenes"]), key, int(ev["moves_per_scene"]),
                            int(ev["test_per_term"]), scene_types, log=log)
        val = cached_split(source, cap, "val", int(ev["val_scenes"]), key, int(ev["moves_per_scene"]),
                           int(ev["val_per_term"]), scene_types, log=log)
    finally:
        source.close()
    return test, val


def write_markdown(doc: Dict[str, Any], path: Path) -> None:
    m = doc["models"]
    names = list(m)
    cal = doc["calibration"]
    lines = [
        "# Grounding benchmark: where is the object the query names?", "",
        f"Held-out test scenes of the learning benchmark ({doc['n_test_samples']} images, {doc['n_objects']} named objects, "
        f"{doc['image_size']} px); oracle boxes from the simulator's segmentation. Tuned = {doc['tuned_from']}. "
        f"Calibration fitted on the validation split ({doc['n_val_objects']} objects) with the base model: box "
        f"{cal['box_width']:.3f} x {cal['box_height']:.3f} of the image, confidence = sigmoid({cal['conf_slope']:.2f} "
        f"x peak mass {cal['conf_bias']:+.2f}). Machine: {doc['host']['cpus']} CPUs, wall {doc['wall_s'] / 60:.1f} min.", "",
        "| metric | " + " | ".join(names) + " |", "| --- | " + " | ".join("---" for _ in names) + " |",
    ]
    rows = [("pointing accuracy (point inside the true box)", "pointing_accuracy", "{:.3f}"),
            ("box IoU, mean", "box_iou_mean", "{:.3f}"), ("box IoU, median", "box_iou_median", "{:.3f}"),
            ("boxes with IoU >= 0.5", "box_iou_at_0_5", "{:.3f}"),
            ("mean confidence", "mean_confidence", "{:.3f}"), ("calibration error (ECE)", "ece", "{:.3f}"),
            ("confidence AUC (hit ranked above miss)", "confidence_auc", "{:.3f}"),
            ("pointing accuracy, more confident half", "pointing_accuracy_confident_half", "{:.3f}"),
            ("pointing accuracy, less confident half", "pointing_accuracy_unconfident_half", "{:.3f}")]
    for label, key, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt.format(m[n][key]) for n in names) + " |")
    for label, key in (("point = attention argmax cell centre", "argmax_cell"),
                       ("point = soft-argmax over the whole grid", "global_soft_argmax")):
        lines.append(f"| {label} | " + " | ".join(f"{m[n]['pointing_variants'][key]:.3f}" for n in names) + " |")
    p = doc.get("paired")
    if p:
        lines += ["", f"Paired over the same {p['n']} objects: {p['base_only']} hit only by the base, {p['tuned_only']} only "
                  f"by the tuned model (exact two-sided sign test p = {p['sign_test_p']:.3f})."]
    b = m[names[0]]["baselines"]
    lines += ["", f"Baselines (no model): a uniformly random point lands in the box {b['random_point']:.3f} of the time "
              f"(the boxes' mean share of the image); the image centre {b['image_centre_point']:.3f}, its box IoU "
              f"{b['image_centre_box_iou']:.3f}.", "",
              "Pointing accuracy per category:", "", "| category | n | " + " | ".join(names) + " |",
              "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for c, d in m[names[0]]["per_category_pointing"].items():
        lines.append(f"| {c} | {d['n']} | " + " | ".join(f"{m[n]['per_category_pointing'][c]['accuracy']:.2f}" for n in names) + " |")
    lines.append("")
    path.write_text("\n".join(lines))


def run_benchmark(out_dir: Path, quick: bool = False, adapter: str = "", grounding_weight: Optional[float] = None,
                  log=print) -> Dict[str, Any]:
    import torch

    from rls3_ros.vlm.answers import load_model
    from rls3_ros.loop.config_files import load_train_config

    t0 = time.monotonic()
    cfg = load_train_config(quick=quick)
    torch.set_num_threads(int(cfg["run"].get("torch_threads", 2)))
    out_dir.mkdir(parents=True, exist_ok=True)
    test, val = splits(cfg, log)
    tuned_summary: Optional[Dict[str, Any]] = None
    if adapter:
        tuned_from = f"adapter {adapter}"
    else:
        run_path = out_dir / ("grounding_run_quick" if quick else "grounding_run")
        if run_path.exists():
            import shutil

            shutil.rmtree(run_path)
        adapter, tuned_summary = main_job_adapter(cfg, run_path, grounding_weight, log)
        tuned_from = (f"the main job's final adapter ({cfg['run']['agent']}, {tuned_summary['valid_samples']} valid samples, "
                      f"{tuned_summary['iterations']} fine-tunes; test accuracy {tuned_summary['base_accuracy']:.3f} -> "
                      f"{tuned_summary['final_accuracy']:.3f}"
                      + (f", box-grounding loss weight {grounding_weight}" if grounding_weight is not None else "") + ")")
    vlm = load_model(cfg["run"]["vlm"])
    if not hasattr(vlm, "attention_maps"):
        raise SystemExit(f"model {cfg['run']['vlm']!r} does not ground descriptions (no attention maps)")
    grid = vlm.config.grid
    test_objs, val_objs = located_objects(test), located_objects(val)
    log(f"[bench grounding] {len(test_objs)} test objects ({len(test)} images), {len(val_objs)} validation objects")
    base_val = attention_records(vlm, val, val_objs)
    settings = fit_calibration(base_val, grid)
    recs = {"base": attention_records(vlm, test, test_objs)}
    vlm.load_adapter(adapter)
    recs["tuned"] = attention_records(vlm, test, test_objs)
    models = {name: evaluate(r, grid, settings) for name, r in recs.items()}
    models["base"]["validation_pointing_accuracy"] = evaluate(base_val, grid, settings)["pointing_accuracy"]
    hb, ht = models["base"].pop("hits"), models["tuned"].pop("hits")
    b_only, t_only = sum(x and not y for x, y in zip(hb, ht)), sum(y and not x for x, y in zip(hb, ht))
    paired = {"n": len(hb), "base_only": b_only, "tuned_only": t_only, "sign_test_p": two_sided_sign_test_p(b_only, t_only)}
    doc = {
        "quick": quick, "vlm": cfg["run"]["vlm"], "image_size": int(cfg["run"]["image_size"]),
        "n_test_samples": len(test), "n_objects": len(test_objs), "n_val_objects": len(val_objs),
        "calibration": settings.to_dict(),
        "calibration_matches_code_defaults": settings == G.DEFAULT_SETTINGS,
        "tuned_adapter": adapter, "tuned_from": tuned_from, "tuned_run": tuned_summary and {
            k: tuned_summary[k] for k in ("run_dir", "iterations", "valid_samples", "base_accuracy", "final_accuracy")},
        "models": models,
        "paired": paired,
        "tuned_grounding_weight": grounding_weight,
        "wall_s": time.monotonic() - t0,
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "rls3 bench grounding" + (" --quick" if quick else "")
        + (f" --grounding-weight {grounding_weight:g}" if grounding_weight is not None else "")
        + (f" --adapter {adapter}" if tuned_summary is None else ""),
    }
    name = "grounding_quick" if quick else "grounding"
    (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    write_markdown(doc, out_dir / f"{name}.md")
    return doc


def cli_bench_grounding(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="rls3 bench grounding", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="plumbing check: the quick sets and a 36-sample main job (~3 min)")
    p.add_argument("--adapter", default="", help="tuned model = this LoRA adapter (default: run the main job for it)")
    p.add_argument("--out", default="results", help="output directory (default results/)")
    p.add_argument("--grounding-weight", type=float, default=None,
                   help="ablation: box-grounding loss weight of the main job's fine-tuning (default: the model's, 0.5)")
    a = p.parse_args(argv)
    doc = run_benchmark(Path(a.out), a.quick, a.adapter, a.grounding_weight)
    for n, m in doc["models"].items():
        print(f"{n:>5}: pointing {m['pointing_accuracy']:.3f}  box IoU {m['box_iou_mean']:.3f} "
              f"(>=0.5: {m['box_iou_at_0_5']:.3f})  ECE {m['ece']:.3f}  confidence AUC {m['confidence_auc']:.3f}  n={m['n']}")
    pr = doc["paired"]
    print(f"paired: base-only hits {pr['base_only']}, tuned-only hits {pr['tuned_only']} (sign test p = {pr['sign_test_p']:.3f})")
    b = doc["models"]["base"]["baselines"]
    print(f"chance: random point {b['random_point']:.3f}, image centre {b['image_centre_point']:.3f}")
    if not doc["calibration_matches_code_defaults"]:
        print(f"note: fitted calibration {doc['calibration']} differs from rls3_ros.vlm.grounding.DEFAULT_SETTINGS")
    name = "grounding_quick" if a.quick else "grounding"
    print(f"wrote {a.out}/{name}.json, {a.out}/{name}.md")
    return 0
