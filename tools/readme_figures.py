"""The README's figures, generated from the project's own result files (never hand-edited).

    .venv/bin/python tools/readme_figures.py record RUN_DIR   # a `make run` directory -> results/main_job.json
    .venv/bin/python tools/readme_figures.py write             # rewrite the README's generated blocks
    .venv/bin/python tools/readme_figures.py check             # exit 1 if a block differs from its sources

A generated block sits between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` in README.md:

| block | source |
| --- | --- |
| ``main_job`` | ``results/main_job.json`` (``record`` of a main-job run: its ``served_gain.json``, ``metrics.jsonl``) |
| ``served`` | ``results/served_model.json`` (``rls3 bench served``), ``results/where_over_ros.json`` (``tools/ask_over_ros.py``) |
| ``models`` | ``models/*/pretrain_metrics.json`` (``rls3 pretrain``) and ``results/where_accuracy.json`` (``rls3 bench where``) |

Everything outside the blocks is prose the README's authors write; everything inside is this file's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAIN_JOB = ROOT / "results/main_job.json"
SERVED = ROOT / "results/served_model.json"
WHERE = ROOT / "results/where_accuracy.json"
OVER_ROS = ROOT / "results/where_over_ros.json"
SPLIT_NAMES = {"test": "balanced test", "tail": "tail", "val": "validation, the gate's split"}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _pt(d: dict) -> str:
    return f"{100 * d['gain']:+.1f} pt [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


# -- record: one main-job run -> results/main_job.json ------------------------------------------------------------
def record(run_dir: Path) -> dict:
    """What the README states of a main-job run, from the run's own files."""
    gain = _load(run_dir / "served_gain.json")
    with open(run_dir / "metrics.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    episodes = [r for r in rows if r.get("type") == "episode"]
    iterations = [r for r in rows if r.get("type") == "iteration"]
    stop = next((r for r in reversed(rows) if r.get("type") == "stop"), {})
    cfg_text = (run_dir / "config.yaml").read_text(encoding="utf-8") if (run_dir / "config.yaml").is_file() else ""

    def cfg(key: str) -> str:
        m = re.search(rf"^\s+{key}:\s*(\S+)", cfg_text, re.M)
        return m.group(1) if m else ""

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    last_ep = episodes[-1] if episodes else {}
    return {
        "command": "make run (rls3 train, config/train.yaml)",
        "commit": commit, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "agent": cfg("agent"), "seed": cfg("seed"), "vlm": cfg("vlm"),
        "valid_samples": last_ep.get("valid_samples"), "renders": last_ep.get("total_renders"),
        "fine_tunes": len([r for r in iterations if r.get("iteration", 0) > 0]),
        "loop_min": round(float(stop.get("wall_s", 0.0)) / 60.0, 2),
        "machine": {"nproc": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]},
        "served_gain": gain,
    }


# -- blocks --------------------------------------------------------------------------------------------------------
def main_job_block(m: dict) -> str:
    g = m["served_gain"]
    served_it = g.get("served_iteration", 0)
    last = (g.get("last") or {}).get("splits", {})
    head = "after the run" if served_it else "after the run (the base: no adapter passed)"
    out = [_row(["split (relations)", "base `grounded:serving`", f"served {head}", "gain, 95 % paired interval",
                 "last fine-tune (if not served)"]), "| --- | --- | --- | --- | --- |"]
    names = list(g.get("splits", {})) + [n for n in last if n not in g.get("splits", {})]
    for name in names:
        d = g["splits"].get(name)
        ld = last.get(name)
        base = (d or ld)["base"]
        out.append(_row([f"{SPLIT_NAMES.get(name, name)} ({(d or ld)['n']})", f"{base:.3f}",
                         f"{d['tuned']:.3f}" if d else "–", _pt(d) if d and served_it else "–",
                         f"{ld['tuned']:.3f}, {_pt(ld)}" if ld else "–"]))
    if "where_exact" in g:
        d = g["where_exact"]
        out.append(_row([f"where-exact on the test split ({d['n']})", f"{d['base']:.3f}", f"{d['tuned']:.3f}",
                         _pt(d) if served_it else "–", "–"]))
    gates = g.get("gate", [])
    promoted = sum(1 for x in gates if x.get("promoted"))
    out += ["", f"{m['agent'].upper() or 'the sampler'}, seed {m['seed']}: {m['valid_samples']} valid samples from "
            f"{m['renders']} renders, {m['fine_tunes']} fine-tunes, {promoted} of {len(gates)} candidates promoted "
            f"by the gate; loop {m['loop_min']:.1f} min on {m['machine']['nproc']} cores (load average "
            f"{m['machine']['loadavg'][0]:.1f} at the record); commit {m['commit']}, {m['date_utc'][:10]}. "
            "Source: `results/main_job.json`."]
    return "\n".join(out)


SERVED_ROWS = [  # (key in a size's "new" record, label, goal key, format)
    ("where_exact", "where-exact, text head", "where_exact", "{:.3f}"),
    ("where_exact_hybrid", "where-exact, text head + 3-D geometry (with depth)", "where_exact", "{:.3f}"),
    ("mc_accuracy", "multiple choice", None, "{:.3f}"),
    ("pointing", "pointing (point inside the object's box)", "pointing", "{:.3f}"),
    ("iou50", "boxes with IoU >= 0.5", "iou50", "{:.3f}"),
    ("ece", "confidence calibration error (ECE)", "ece", "{:.3f}"),
    ("point3d_median_m", "3-D point median error [m], from a depth image", "point3d_median_m", "{:.3f}"),
]


def _met(value: float, goal: str) -> str:
    m = re.match(r"\s*(>=|<=)\s*([0-9.]+)", goal or "")
    if not m:
        return ""
    ok = value >= float(m.group(2)) if m.group(1) == ">=" else value <= float(m.group(2))
    return "met" if ok else "**not met**"


def served_block(s: dict) -> str:
    sizes = sorted(s["sizes"], key=int)
    goals = s.get("goals", {})
    out = [_row(["figure (held-out MuJoCo scenes)", "goal"] + [f"{z} px" for z in sizes]),
           "| --- | --- |" + " --- |" * len(sizes)]
    for key, label, goal_key, fmt in SERVED_ROWS:
        vals = [s["sizes"][z]["new"].get(key) for z in sizes]
        if all(v is None for v in vals):
            continue
        goal = goals.get(goal_key, "") if goal_key else ""
        cells = [("–" if v is None else f"{fmt.format(v)} {_met(v, goal)}".strip()) for v in vals]
        out.append(_row([label, goal or "–"] + cells))
    goal = goals.get("where_per_term", ">= 0.7")
    cells = []
    for z in sizes:  # every term's own accuracy is in results/served_model.md; here the weakest one
        per = s["sizes"][z]["new"].get("where_per_term", {})
        t = min(per, key=per.get) if per else None
        cells.append(f"{per[t]:.3f} ({t}) {_met(per[t], goal)}" if t else "–")
    out.append(_row(["where, weakest term (text head)", goal] + cells))
    n = s["sizes"][sizes[0]].get("n") or s["sizes"][sizes[0]]["new"].get("n") or {}
    out += ["", f"{n.get('images', n)} held-out images per size ({n.get('relations', '?')} relations), "
            f"{s['date_utc'][:10]}. Source: `results/served_model.json`; command, base model and every term: "
            "`results/served_model.md`."]
    if OVER_ROS.is_file():
        r = _load(OVER_ROS)
        out += ["", f"Asked from outside (`tools/ask_over_ros.py`): a plain rclpy client sending the node {r['images']} "
                f"`rls3 captions` images at {r['size']} px with the image only gets where-exact {r['exact']:.3f} "
                f"(n={r['n']}), {r['node_vs_direct_disagreements']} answers different from the in-process model's. "
                "Source: `results/where_over_ros.json`."]
    return "\n".join(out)


def models_block(where: dict) -> str:
    out = [_row(["model", "what", "held-out multiple choice", "where-exact", "renders", "build"]),
           "| --- | --- | --- | --- | --- | --- |"]
    rows = [("grounded:serving", "grounded_serving", "served, and what the loop fine-tunes"),
            ("grounded", "grounded", "weak base, only for the learning benchmark's from-scratch regime")]
    for spec, d, what in rows:
        pm = _load(ROOT / "models" / d / "pretrain_metrics.json")
        w = where["models"].get(spec, {})
        build = f"{pm['times_s']['total'] / 60:.0f} min" if "times_s" in pm else "–"
        out.append(_row([f"`{spec}` (`models/{d}/`)", what, f"{pm['held_out']['accuracy']:.3f}",
                         f"{w['exact']:.3f}" if w else "–", pm.get("n_train_kept", "–"), build]))
    out += ["", f"Multiple choice: the model's pretraining held-out set; where-exact: `rls3 bench where` "
            f"({where['relations']} relations of {where['images']} held-out images). Source: "
            "`models/*/pretrain_metrics.json`, `results/where_accuracy.json`."]
    return "\n".join(out)


BLOCKS: Dict[str, Callable[[], Optional[str]]] = {
    "main_job": lambda: main_job_block(_load(MAIN_JOB)) if MAIN_JOB.is_file() else None,
    "served": lambda: served_block(_load(SERVED)) if SERVED.is_file() else None,
    "models": lambda: models_block(_load(WHERE)) if WHERE.is_file() else None,
}


def render(text: str) -> str:
    """``text`` with every generated block replaced by what its sources say now."""
    for name, make in BLOCKS.items():
        pat = re.compile(rf"(<!-- figures:{name} -->\n)(.*?)(<!-- /figures:{name} -->)", re.S)
        if not pat.search(text):
            continue
        body = make()
        if body is None:
            raise SystemExit(f"readme_figures: README has the block '{name}' but its source file is missing")
        text = pat.sub(lambda m: m.group(1) + body + "\n" + m.group(3), text)
    return text


def main(argv: List[str]) -> int:
    if len(argv) >= 2 and argv[0] == "record":
        rec = record(Path(argv[1]))
        MAIN_JOB.write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {MAIN_JOB.relative_to(ROOT)}")
        return 0
    if argv[:1] in (["write"], ["check"]):
        old = README.read_text(encoding="utf-8")
        new = render(old)
        if argv[0] == "check":
            if new != old:
                print("README.md's generated figures differ from their sources: run tools/readme_figures.py write")
                return 1
            return 0
        README.write_text(new, encoding="utf-8")
        print("wrote README.md" if new != old else "README.md unchanged")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
