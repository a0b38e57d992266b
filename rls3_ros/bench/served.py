"""The served model measured as a robot uses it (issue 27): ``rls3 bench served``.

    rls3 bench served [--n 300] [--sizes 160 224] [--models [label=]spec ...] [--quick]

Held-out images: the pretraining held-out set (``render_corpus(n, seed 7919, size)``: MuJoCo scenes
of other seeds than any training image, every relation the caption oracle states; the set of
``rls3 bench where``), rendered at each image size together with the renderer's depth image
(``rls3_ros.vlm.served_eval.render_heldout``). Per size and model:

- ``where_exact`` / ``where_per_term`` / ``where_per_axis``: the open "where" answer of the
  ``spatial_query`` node (``where_metric.where_pairs`` + ``score_answers``) vs the oracle's terms;
- ``where_exact_hybrid`` (+ ``where_per_term_hybrid`` / ``where_per_axis_hybrid``): the answer of
  the node with a depth image and the camera pose (``where_geometry.hybrid_terms``: "on"/"under"
  from the text head, the axes its policy says from the two depth-in-box centres);
  ``where_hybrid_share``: the share of answers that used the geometry (answer_source
  "model+geometry");
- ``where_exact_geometry`` (+ per term / axis): the answer taken from the caption oracle applied to
  the two depth-in-box centres alone (moved to the world with the scene's camera pose, as a robot
  with TF would); two points know no support contact, so this never says "on"/"under";
- ``mc_accuracy``: multiple-choice accuracy (``SpatialVLM.evaluate``: true caption among its
  hard negatives);
- ``pointing`` (predicted point inside the true box), ``iou_mean``, ``iou50`` (share of boxes with
  IoU >= 0.5), ``ece`` (calibration of "the point is on the object"), over every object a
  relation names (``bench.grounding.located_objects``), located by ``model.locate_many``;
- ``point3d_median_m``: median distance between the node's 3-D point with a depth image, the
  object's centre from the RENDERED depth inside the predicted box (``depth_centre.object_centre``),
  and the object's 3-D box centre (scene state, camera optical frame);
  ``point3d_median_m_true_box``: the same with the true box (the floor of the method);
  ``point3d_median_m_point_depth``: the earlier way, the predicted point back-projected with the
  depth there (``grounding.depth_at``: the surface, not the centre), and
  ``point3d_median_m_true_pixel`` that from the true centre's own pixel.

Goals of issue 27 are printed beside each figure. Writes results/served_model.json and .md
(``--quick``: results/served_model_quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.bench.grounding import located_objects
from rls3_ros.vlm import grounding as G
from rls3_ros.vlm.where_metric import score_answers, where_pairs

HELD_OUT_SEED = 7919  # the pretraining held-out set's seed (pretrain seed 0 + 7919), as rls3 bench where
DEFAULT_SIZES = (160, 224)
BASE_LABEL = "serving@c4747a0 (4,800 renders)"

# issue 27's goals: figure -> (comparison, threshold); where_per_term: every term
GOALS: Dict[str, Tuple[str, float]] = {
    "where_exact": (">=", 0.80), "where_per_term": (">=", 0.70), "pointing": (">=", 0.90),
    "iou50": (">=", 0.60), "ece": ("<=", 0.05), "point3d_median_m": ("<=", 0.05),
}


def goal_met(key: str, value: Any) -> Optional[bool]:
    """Whether ``value`` meets issue 27's goal for ``key`` (None: no goal or no value)."""
    if key not in GOALS:
        return None
    op, thr = GOALS[key]
    vals = list(value.values()) if isinstance(value, dict) else [value]
    if not vals or any(v is None or not np.isfinite(v) for v in vals):
        return None
    return all(v >= thr for v in vals) if op == ">=" else all(v <= thr for v in vals)


def locations(model, items) -> Dict[Tuple[int, str], Any]:
    """(sample index, object id) -> ``model.locate_many``'s Location of every object a relation names."""
    out: Dict[Tuple[int, str], Any] = {}
    for i, it in enumerate(items):
        s = it.sample
        ids = list(dict.fromkeys([r.subject_id for r in s.relations] + [r.reference_id for r in s.relations]))
        objs = [s.scene.object(o) for o in ids]
        locs = model.locate_many(s.image, [o.description for o in objs])
        if len(locs) != len(objs) or any(l is None for l in locs):
            raise RuntimeError(f"{s.sample_id}: the model does not locate every named object")
        out.update({(i, o.id): l for o, l in zip(objs, locs)})
    return out


def object_records(items, locs: Dict[Tuple[int, str], Any]) -> List[Dict[str, Any]]:
    """Per located object with a true box: hit, IoU, confidence and the 3-D points and error."""
    from rls3_ros.vlm import served_eval as SE

    samples = [it.sample for it in items]
    recs = []
    for i, o in located_objects(samples):
        s, depth = items[i]
        loc = locs[(i, o.id)]
        k = SE.intrinsics(s.scene)
        truth = SE.object_centre(s.scene, o)
        pred = SE.centre_point(depth, loc, k)
        on_surface = SE.located_point(depth, loc.point, k)
        true_box = SE.centre_point(depth, G.Location(o.bbox, loc.point, loc.confidence), k)
        uv = s.scene.camera.project(np.asarray([o.position], float))[0]
        at_truth = SE.located_point(depth, uv, k) if np.all(np.isfinite(uv)) else None
        dist = lambda p: None if p is None else float(np.linalg.norm(np.subtract(p, truth)))  # noqa: E731
        recs.append({"sample": i, "object": o.id, "box": tuple(float(v) for v in o.bbox), "point": loc.point,
                     "confidence": float(loc.confidence), "hit": G.point_in_box(loc.point, o.bbox),
                     "iou": G.box_iou(loc.box, o.bbox), "point_cam": pred, "truth_cam": truth,
                     "error_m": dist(pred), "error_m_true_box": dist(true_box),
                     "error_m_point_depth": dist(on_surface), "error_m_true_pixel": dist(at_truth)})
    return recs


def geometry_pairs(items, locs: Dict[Tuple[int, str], Any]) -> List[tuple]:
    """(truth terms, terms of the oracle on the two depth-in-box centres) per relation, in
    ``where_pairs`` order."""
    from rls3_ros.captions.oracle import CaptionOracle
    from rls3_ros.vlm import served_eval as SE

    oracle = CaptionOracle()
    out = []
    for i, (s, depth) in enumerate(items):
        k = SE.intrinsics(s.scene)
        for r in s.relations:
            a, b = s.scene.object(r.subject_id), s.scene.object(r.reference_id)
            pa = SE.centre_point(depth, locs[(i, a.id)], k)
            pb = SE.centre_point(depth, locs[(i, b.id)], k)
            out.append((list(r.terms), SE.geometry_terms(oracle, s.scene, a, b, pa, pb)))
    return out


def hybrid_pairs(where: Sequence[tuple], items, locs: Dict[Tuple[int, str], Any]) -> Tuple[List[tuple], float]:
    """((truth terms, the node's hybrid answer) per relation, share of answers that used the geometry)
    from ``where``: ``where_pairs``' (truth, text head terms)."""
    from rls3_ros.vlm import served_eval as SE
    from rls3_ros.vlm.where_geometry import SOURCE_HYBRID

    answers = SE.hybrid_answers([a for _, a in where], items, locs)
    pairs = [(list(t), list(a)) for (t, _), (a, _) in zip(where, answers)]
    share = float(np.mean([src == SOURCE_HYBRID for _, src in answers])) if answers else float("nan")
    return pairs, share


def _median(xs: Sequence[Optional[float]]) -> float:
    v = [x for x in xs if x is not None]
    return float(np.median(v)) if v else float("nan")


def evaluate_model(model, items) -> Dict[str, Any]:
    """Every figure of one model on one size's held-out items (seconds per part included)."""
    samples = [it.sample for it in items]
    secs: Dict[str, float] = {}
    t = time.monotonic()
    text_pairs = where_pairs(model, samples)
    where = score_answers(text_pairs)
    secs["where"] = time.monotonic() - t
    t = time.monotonic()
    locs = locations(model, items)
    recs = object_records(items, locs)
    geo = score_answers(geometry_pairs(items, locs))
    hyb_pairs, hyb_share = hybrid_pairs(text_pairs, items, locs)
    hyb = score_answers(hyb_pairs)
    secs["locate_3d_geometry"] = time.monotonic() - t
    t = time.monotonic()
    mc = model.evaluate(samples)
    secs["mc"] = time.monotonic() - t
    hits = [r["hit"] for r in recs]
    ious = np.asarray([r["iou"] for r in recs], float)
    errs = [r["error_m"] for r in recs]
    return {
        "where_exact": where["exact"],
        "where_per_term": {t: d["accuracy"] for t, d in where["per_term"].items()},
        "where_per_term_n": {t: d["n"] for t, d in where["per_term"].items()},
        "where_per_axis": where["per_axis"],
        "where_exact_hybrid": hyb["exact"],
        "where_per_term_hybrid": {t: d["accuracy"] for t, d in hyb["per_term"].items()},
        "where_per_axis_hybrid": hyb["per_axis"],
        "where_hybrid_share": hyb_share,
        "where_exact_geometry": geo["exact"],
        "where_per_term_geometry": {t: d["accuracy"] for t, d in geo["per_term"].items()},
        "where_per_axis_geometry": geo["per_axis"],
        "mc_accuracy": float(mc.accuracy),
        "pointing": float(np.mean(hits)) if hits else float("nan"),
        "iou_mean": float(ious.mean()) if ious.size else float("nan"),
        "iou50": float((ious >= 0.5).mean()) if ious.size else float("nan"),
        "ece": G.calibration_error([r["confidence"] for r in recs], hits),
        "point3d_median_m": _median(errs),
        "point3d_within_5cm": float(np.mean([e is not None and e <= 0.05 for e in errs])) if errs else float("nan"),
        "point3d_median_m_true_box": _median([r["error_m_true_box"] for r in recs]),
        "point3d_median_m_point_depth": _median([r["error_m_point_depth"] for r in recs]),
        "point3d_median_m_true_pixel": _median([r["error_m_true_pixel"] for r in recs]),
        "n": {"images": len(samples), "relations": where["n"], "mc_relations": int(mc.n), "objects": len(recs),
              "points_3d": sum(e is not None for e in errs)},
        "seconds": {k: round(v, 1) for k, v in secs.items()},
    }


def parse_models(specs: Sequence[str]) -> List[Tuple[str, str]]:
    """``[label=]spec`` items -> (label, spec); one model = "new", two = "base" then "new"."""
    if not 1 <= len(specs) <= 2:
        raise SystemExit("--models takes one model (new) or two (base, then new)")
    out = []
    for s in specs:
        label, _, spec = s.partition("=") if "=" in s else (s, "", s)
        out.append((label or spec, spec))
    return out


def run(n: int, sizes: Sequence[int], models: Sequence[Tuple[str, str]], log=print) -> Dict[str, Any]:
    from rls3_ros.vlm.answers import load_model
    from rls3_ros.vlm.served_eval import render_heldout

    roles = ["new"] if len(models) == 1 else ["base", "new"]
    t0 = time.monotonic()
    load0 = os.getloadavg()
    loaded = {role: load_model(spec) for role, (_, spec) in zip(roles, models)}
    doc: Dict[str, Any] = {
        "models": {role: {"label": label, "spec": spec} for role, (label, spec) in zip(roles, models)},
        "held_out": f"render_corpus(n, seed {HELD_OUT_SEED}, size) with the renderer's depth: the pretraining held-out set",
        "goals": {k: f"{op} {thr:g}" + (" (every term)" if k == "where_per_term" else "") for k, (op, thr) in GOALS.items()},
        "sizes": {}, "seconds": {},
    }
    for size in sizes:
        t = time.monotonic()
        items = render_heldout(n, HELD_OUT_SEED, int(size))
        doc["seconds"][f"render_{size}"] = round(time.monotonic() - t, 1)
        per: Dict[str, Any] = {}
        for role in roles:
            t = time.monotonic()
            per[role] = evaluate_model(loaded[role], items)
            per[role]["goals_met"] = {k: goal_met(k, per[role][k]) for k in GOALS}
            doc["seconds"][f"{role}_{size}"] = round(time.monotonic() - t, 1)
            f = per[role]
            log(f"[{size} px] {role} ({doc['models'][role]['label']}): where-exact {f['where_exact']:.3f} "
                f"(hybrid {f['where_exact_hybrid']:.3f}, geometry {f['where_exact_geometry']:.3f}), mc {f['mc_accuracy']:.3f}, pointing {f['pointing']:.3f}, "
                f"IoU {f['iou_mean']:.3f} (>=0.5: {f['iou50']:.3f}), ECE {f['ece']:.3f}, "
                f"3-D median {f['point3d_median_m']:.3f} m, n={f['n']}")
        doc["sizes"][str(size)] = per
    doc["seconds"]["total"] = round(time.monotonic() - t0, 1)
    doc["machine"] = {"nproc": os.cpu_count(), "loadavg_start": [round(x, 2) for x in load0],
                      "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                      "note": "shared machine: other sessions ran tests at the same time"}
    doc["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return doc


ROWS = [("where-exact (text head)", "where_exact"),
        ("where-exact, text head + 3-D geometry (the node with depth: hybrid)", "where_exact_hybrid"),
        ("answers that used the geometry (hybrid)", "where_hybrid_share"),
        ("where-exact from the two 3-D points alone (geometry)", "where_exact_geometry"),
        ("multiple-choice accuracy", "mc_accuracy"), ("pointing (point in the true box)", "pointing"),
        ("box IoU, mean", "iou_mean"), ("boxes with IoU >= 0.5", "iou50"), ("calibration error (ECE)", "ece"),
        ("3-D point median error [m], centre from the rendered depth in the predicted box", "point3d_median_m"),
        ("3-D points within 5 cm", "point3d_within_5cm"),
        ("3-D median error [m], centre from the depth in the TRUE box (floor of the method)", "point3d_median_m_true_box"),
        ("3-D median error [m], depth at the predicted point (the surface: earlier method)", "point3d_median_m_point_depth"),
        ("3-D median error [m], depth at the TRUE centre's pixel (floor of the earlier method)", "point3d_median_m_true_pixel")]


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def _met(v: Optional[bool]) -> str:
    return "" if v is None else ("met" if v else "not met")


def write_markdown(doc: Dict[str, Any], path: Path) -> None:
    roles = list(doc["models"])
    m = doc["models"]
    lines = ["# The served model, measured as a robot uses it (issue 27)", "",
             f"Command: `{doc['command']}`; {doc['date_utc']}; {doc['machine']['nproc']} CPUs, load average "
             f"{doc['machine']['loadavg_start'][0]:.1f} at the start, {doc['machine']['loadavg_end'][0]:.1f} at the end "
             f"({doc['machine']['note']}); {doc['seconds']['total'] / 60:.1f} min.", "",
             f"Held-out images: {doc['held_out']}. "
             + "; ".join(f"{r} = {m[r]['label']} (`{m[r]['spec']}`)" for r in roles)
             + ". 'met?' is for the new model.", ""]
    for size, per in doc["sizes"].items():
        new = per["new"]
        n = new["n"]
        lines += [f"## {size} px", "", f"{n['images']} images, {n['relations']} relations, {n['objects']} named objects "
                  f"({n['points_3d']} with a rendered depth at the predicted point).", "",
                  "| figure | goal | " + " | ".join(roles) + " | met? |", "| --- | --- | " + " | ".join("---" for _ in roles) + " | --- |"]
        for label, key in ROWS:
            lines.append(f"| {label} | {doc['goals'].get(key, '')} | " + " | ".join(_fmt(per[r][key]) for r in roles)
                         + f" | {_met(new['goals_met'].get(key))} |")
        for t in new["where_per_term"]:
            lines.append(f"| where, term '{t}' (n={new['where_per_term_n'][t]}) | {doc['goals']['where_per_term'].split(' (')[0]} | "
                         + " | ".join(_fmt(per[r]["where_per_term"].get(t)) for r in roles)
                         + f" | {_met(goal_met('where_per_term', new['where_per_term'][t]))} |")
        for t in new["where_per_term_hybrid"]:
            lines.append(f"| where hybrid, term '{t}' |  | "
                         + " | ".join(_fmt(per[r]["where_per_term_hybrid"].get(t)) for r in roles) + " |  |")
        for t in new["where_per_term_geometry"]:
            lines.append(f"| where from geometry, term '{t}' |  | "
                         + " | ".join(_fmt(per[r]["where_per_term_geometry"].get(t)) for r in roles) + " |  |")
        for ax in new["where_per_axis"]:
            lines.append(f"| where, {ax} axis right (text head / hybrid / geometry) |  | "
                         + " | ".join(f"{per[r]['where_per_axis'][ax]:.3f} / {per[r]['where_per_axis_hybrid'][ax]:.3f}"
                                      f" / {per[r]['where_per_axis_geometry'][ax]:.3f}" for r in roles) + " |  |")
        ways = {"the text head": new["where_exact"], "the hybrid": new["where_exact_hybrid"],
                "the geometry alone": new["where_exact_geometry"]}
        best = max(ways, key=ways.get)
        lines += ["", f"Which answers 'where' best at {size} px (new model): {best} ("
                  + ", ".join(f"{k} {v:.3f}" for k, v in ways.items()) + "). The geometry alone can never say "
                  "'on'/'under' (two points carry no contact); the hybrid takes those from the text head.", ""]
    path.write_text("\n".join(lines))


def cli_bench_served(argv: Optional[List[str]] = None) -> int:
    import torch

    p = argparse.ArgumentParser(prog="rls3 bench served", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="held-out images per size (default 300 = the where bench's set)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    p.add_argument("--models", nargs="+", default=["grounded:serving"],
                   help="[label=]spec: one model (new) or two (base, then new); default grounded:serving")
    p.add_argument("--quick", action="store_true", help="12 images per size -> results/served_model_quick.*")
    p.add_argument("--out", default="results", help="output directory (default results/)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    n = 12 if a.quick else a.n
    doc = run(n, a.sizes, parse_models(a.models))
    doc["command"] = "rls3 bench served " + " ".join(argv or [])
    doc["quick"] = bool(a.quick)
    name = "served_model_quick" if a.quick else "served_model"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    write_markdown(doc, out / f"{name}.md")
    for size, per in doc["sizes"].items():
        new = per["new"]
        print(f"{size} px, goals (new model): " + ", ".join(f"{k} {_met(v)}" for k, v in new["goals_met"].items()))
    print(f"wrote {out}/{name}.json, {out}/{name}.md")
    return 0
