"""Do selected samples teach the VLM faster than random ones? ``rls3 bench learning [--quick]``.

The protocol (fixed before any sampler ran; change it only with a new results file):

- **Budget in renders** (the real cost: every simulator step renders, valid or not, and the
  miner renders ``k`` candidates per step). Every sampler gets ``R`` renders (default 600);
  the random sampler runs to ``3R``, so its own curve gives the reference points "random with
  2x and 3x the renders".
- **Paired seeds** (default 8): seed ``s`` gives every sampler the same training scenes (the
  env's scene seeds), the same base model, the same fine-tuning schedule (``E`` episodes, one
  optimiser step per generated sample, 30 % replay) and the same fixed evaluation sets.
  Differences are per-seed differences, reported as mean and Student-t 95 % interval.
- **Two test splits, generated once before any sampler runs** and never trained on:
  ``test`` — the balanced split (700 scenes, relations balanced over the eight terms, >= 1,500
  relations; regressions show here); ``tail`` — the pre-registered hard cases of
  :mod:`rls3_ros.loop.tail_split` (vertical and three-term combinations, near sector boundaries,
  occlusion), produced by a generator of its own, not by any sampler's actions or the env's
  decoder. Validation (what the mode samplers read) mirrors both on other seeds.
- **Headlines** per split: accuracy at ``R`` (and paired difference to random at ``R`` and to
  the miner at equal renders), renders needed to reach random's accuracy at ``R``, and the area
  under accuracy-vs-renders over ``0..R`` (``auc``, i.e. mean accuracy over the budget).

Samplers: ``random`` (the paper's baseline), ``upper`` (privileged upper bound: reads the
validation error table), ``teacher`` (learning-progress teacher over generation modes),
``sac`` (SAC made able to learn: entropy from 0.05, 4 gradient steps per step, per-term
validation error in its observation, J2 against the adapter's running mean), ``sac-paper``
(the paper's SAC as first built: automatic entropy from 1.0, 1 gradient step, raw J2),
``ppo`` and ``miner`` (best of 4 random candidates by VLM loss).

Writes ``results/learning.json`` (stable keys: ``budget``, ``base_accuracy``,
``samplers.<name>.final_accuracy`` — one value per seed, balanced split at ``R`` — plus
``renders``, ``renders_to_random_final`` and ``auc`` per split and seed, and ``paired``),
``results/learning.md`` and the plots ``learning_curves.png`` (both splits, mean and 95 %
interval vs renders), ``learning_terms.png`` (per term and what was generated) and
``learning_modes.png`` (how the mode samplers spent their renders).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from rls3_ros.bench.paired import auc, mean_ci, paired, renders_to_reach, value_at

SAMPLERS = ("random", "upper", "teacher", "sac", "sac-yield", "miner")  # also selectable: sac-paper, ppo
REFERENCE = "random"
REFERENCE_MULTIPLE = 3
SPLITS = ("test", "tail")
DEFAULT_BUDGET, QUICK_BUDGET = 600, 40
DEFAULT_SEEDS, QUICK_SEEDS = 8, 1

# the fixed evaluation sets (pre-registered; the cache key follows them)
BENCH_EVAL = {"test_scenes": 700, "test_per_term": 300, "tail_scenes": 300, "val_scenes": 60, "val_per_term": 30,
              "val_tail_scenes": 80, "extra_splits": ["tail", "val"]}
QUICK_EVAL = {"test_scenes": 12, "test_per_term": 10, "tail_scenes": 10, "val_scenes": 6, "val_per_term": 5,
              "val_tail_scenes": 6, "extra_splits": ["tail", "val"]}
SAC_UPDATES = {"gradient_steps": 4, "batch_size": 64, "train_freq": 1}
# the from-scratch regime's recipe (the weak base and the fine-tuning its results were measured with),
# pinned here since the main job (config/train.yaml) tunes the served model with its own recipe
SCRATCH_REGIME = {"run": {"vlm": "grounded"},
                  "loop": {"fine_tune_steps_per_sample": 1.0, "replay_fraction": 0.3, "cumulative": False,
                           "gate": False},
                  "eval": {"replay_scenes": 40, "replay_rare_keep": 0.0}}
# the sampler variants: (agent, overrides); the env settings only matter to SAC/PPO
VARIANTS: Dict[str, Dict[str, Any]] = {
    "random": {"agent": "random"},
    "upper": {"agent": "upper"},
    "teacher": {"agent": "teacher"},
    # SAC_UPDATES: the 4 x 64 gradient steps the learning results were measured with (the main job's
    # default became 1 x 256 for speed, within the seeds' spread: rls3_ros.loop.agents)
    "sac": {"agent": "sac", "env": {"observe_vlm": True, "j2_baseline": "iteration"}, "agent_section": SAC_UPDATES},
    "sac-paper": {"agent": "sac", "env": {"observe_vlm": False, "j2_baseline": "none"},
                  "agent_section": {"sac_ent_coef": "auto", "gradient_steps": 1, "batch_size": 64}},
    "ppo": {"agent": "ppo", "env": {"observe_vlm": True, "j2_baseline": "iteration"}},
    "miner": {"agent": "miner"},
    # added before its first run, from the previous run's numbers: random makes 0.42 valid samples per
    # render, the selectors' +12-22 % valid/render was all they gained, random at 2R is +10 pt. So
    # SAC rewarded only for valid captioned samples (no VLM term) tests whether a learned sampler can
    # win through data per render alone.
    "sac-yield": {"agent": "sac", "env": {"observe_vlm": False, "j2_weight": 0.0, "reward_valid": 1.0,
                                          "reward_invalid": -1.0}, "agent_section": SAC_UPDATES},
}


def _nan(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


REGIMES = ("scratch", "served")


def bench_config(sampler: str, seed: int, budget: int, quick: bool, overrides: Sequence[str] = (),
                 regime: str = "scratch") -> Dict[str, Any]:
    """The loop configuration of one benchmark run: the main job's, with the benchmark's protocol.

    ``regime``: "scratch" = the weak base and its recipe (``SCRATCH_REGIME``, what results/learning.json
    was measured with); "served" = the served model with the main job's recipe for it
    (config/train.yaml: cumulative fine-tuning, 80 % replay of its own distribution, LoRA 1e-3).

    Built through the schema: the edits below and ``overrides`` are validated at the end (a bad value or
    an unknown key raises ``ValueError`` naming it); the dict returned is the validated configuration."""
    from rls3_ros.loop.config import to_dict, validate_config
    from rls3_ros.loop.config_files import apply_sets, load_train_config

    if sampler not in VARIANTS:
        raise ValueError(f"unknown sampler {sampler!r} (choose from {', '.join(VARIANTS)})")
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r} (choose from {', '.join(REGIMES)})")
    v = VARIANTS[sampler]
    cfg = load_train_config(quick=quick)
    if regime == "scratch":
        for section, values in SCRATCH_REGIME.items():
            cfg[section].update(values)
        cfg["run"].pop("lora_learning_rate", None)  # the weak base's own LoRA rate (3e-3)
    cfg["run"]["agent"] = v["agent"]
    cfg["run"]["seed"] = int(seed)
    cfg["run"]["torch_threads"] = 1  # runs go two at a time on two cores
    cfg["run"]["overlap_fine_tune"] = False  # the paper's loop: the protocol the learning results were measured with
    cfg["run"]["freeze_parked"] = False  # physics revision 2: the fixed sets the learning results were measured on
    cfg["loop"]["seed"] = int(seed)
    cfg["loop"]["budget_valid_samples"] = 0
    cfg["loop"]["budget_renders"] = int(budget) * (REFERENCE_MULTIPLE if sampler == REFERENCE else 1)
    cfg["loop"]["max_iterations"] = 0
    cfg["loop"]["patience"] = 0  # the same schedule for every sampler
    cfg["eval"].update(QUICK_EVAL if quick else BENCH_EVAL)
    cfg["env"].update(v.get("env", {}))
    cfg["agent"].update(v.get("agent_section", {}))
    return to_dict(validate_config(apply_sets(cfg, list(overrides))))


def run_curve(summary: Dict[str, Any], split: str) -> List[List[float]]:
    """(renders, accuracy) after every fine-tune of a run on ``split`` (the base at 0 renders first)."""
    out = []
    for p in summary["curve"]:
        acc = (p.get("splits") or {}).get(split, {}).get("accuracy")
        if acc is not None:
            out.append([float(p["renders"]), float(acc)])
    return out


def samples_to_reach(points: List[Dict[str, Any]], target: float) -> Optional[int]:
    """Valid samples at the first fine-tune whose test accuracy reaches ``target`` (not the base)."""
    for p in points:
        if p["iteration"] > 0 and p["test_accuracy"] >= target:
            return p["valid_samples"]
    return None


def summarise(runs: Dict[str, List[Dict[str, Any]]], budget: int) -> Dict[str, Any]:
    """The JSON document from the per-run summaries (runs[sampler] in seed order, paired by seed)."""
    ref = {r["seed"]: r for r in runs.get(REFERENCE, [])}
    base = float(np.mean([r["base_accuracy"] for rs in runs.values() for r in rs]))
    out: Dict[str, Any] = {"budget": budget, "budget_unit": "renders", "reference": REFERENCE,
                           "reference_multiple": REFERENCE_MULTIPLE, "base_accuracy": base, "samplers": {}}
    base_split = {}
    for sp in SPLITS:
        vals = [run_curve(r, sp)[0][1] for rs in runs.values() for r in rs if run_curve(r, sp)]
        base_split[sp] = float(np.mean(vals)) if vals else float("nan")
    out["base_split_accuracy"] = base_split
    base_per_term: Dict[str, List[float]] = {}
    for rs in runs.values():
        for r in rs:
            for t, v in (r["base_per_term"] or {}).items():
                base_per_term.setdefault(t, []).append(_nan(v))
    out["base_per_term"] = {t: float(np.mean(v)) for t, v in sorted(base_per_term.items())}
    # random's accuracy at R, 2R, 3R per seed and split
    ref_at: Dict[str, Dict[int, Dict[str, float]]] = {}
    for sp in SPLITS:
        ref_at[sp] = {s: {f"{k}x": value_at(run_curve(r, sp), k * budget) for k in range(1, REFERENCE_MULTIPLE + 1)}
                      for s, r in ref.items() if run_curve(r, sp)}
    out["reference_at"] = {sp: {k: mean_ci([d[k] for d in ref_at[sp].values()])
                                for k in (f"{m}x" for m in range(1, REFERENCE_MULTIPLE + 1))} for sp in SPLITS}
    finals: Dict[str, Dict[str, List[Optional[float]]]] = {}
    for name, rs in runs.items():
        seeds = [r["seed"] for r in rs]
        s_out: Dict[str, Any] = {"seeds": seeds, "renders": [r["renders"] for r in rs],
                                 "valid_samples": [r["valid_samples"] for r in rs],
                                 "iterations": [r["iterations"] for r in rs],
                                 "wall_s": [round(r["wall_s"], 1) for r in rs],
                                 "accuracy_at_budget": {}, "renders_to_random_final": {}, "auc": {}}
        finals[name] = {}
        for sp in SPLITS:
            curves = [run_curve(r, sp) for r in rs]
            acc = [value_at(c, budget) if c else None for c in curves]
            finals[name][sp] = acc
            s_out["accuracy_at_budget"][sp] = acc
            s_out["renders_to_random_final"][sp] = [
                renders_to_reach(c, ref_at[sp][s]["1x"]) if c and s in ref_at[sp] else None
                for c, s in zip(curves, seeds)]
            s_out["auc"][sp] = [auc(c, budget) if c else None for c in curves]
            s_out.setdefault("curves", {})[sp] = curves
        s_out["final_accuracy"] = finals[name]["test"]  # stable key: balanced split at the budget
        s_out["final_accuracy_mean_ci"] = {sp: mean_ci(finals[name][sp]) for sp in SPLITS}
        s_out["auc_mean_ci"] = {sp: mean_ci(s_out["auc"][sp]) for sp in SPLITS}
        s_out["renders_fraction_to_random_final"] = {
            sp: [None if x is None else x / budget for x in s_out["renders_to_random_final"][sp]] for sp in SPLITS}
        per_term: Dict[str, List[float]] = {}
        for r in rs:
            pt = _at_budget_per_term(r, budget)
            for t, v in pt.items():
                per_term.setdefault(t, []).append(v)
        s_out["per_term_at_budget"] = {t: mean_ci(v) for t, v in sorted(per_term.items())}
        gen: Dict[str, List[float]] = {}
        combos: Dict[str, List[float]] = {}
        modes: Dict[str, List[float]] = {}
        for r in rs:
            for t, v in (r.get("generated_terms") or {}).items():
                gen.setdefault(t, []).append(float(v))
            for t, v in (r.get("generated_combos") or {}).items():
                combos.setdefault(t, []).append(float(v))
            n = float(sum((r.get("mode_counts") or {}).values())) or 1.0
            for t, v in (r.get("mode_counts") or {}).items():
                modes.setdefault(t, []).append(float(v) / n)
        k = max(1, len(rs))
        s_out["generated_terms_mean"] = {t: float(np.sum(v) / k) for t, v in sorted(gen.items())}
        s_out["generated_combos_mean"] = {t: float(np.sum(v) / k) for t, v in sorted(combos.items())}
        s_out["mode_share_mean"] = {t: float(np.sum(v) / k) for t, v in sorted(modes.items())}
        s_out["mode_policy"] = [r.get("mode_policy") for r in rs if r.get("mode_policy")]
        out["samplers"][name] = s_out
    # paired differences at equal renders
    for name, s_out in out["samplers"].items():
        s_out["paired"] = {}
        for other in (REFERENCE, "miner"):
            if other == name or other not in finals:
                continue
            mine = dict(zip(s_out["seeds"], zip(*[finals[name][sp] for sp in SPLITS])))
            theirs = dict(zip(out["samplers"][other]["seeds"], zip(*[finals[other][sp] for sp in SPLITS])))
            common = sorted(set(mine) & set(theirs))
            s_out["paired"][f"vs_{other}"] = {
                sp: paired([mine[s][i] for s in common], [theirs[s][i] for s in common]) for i, sp in enumerate(SPLITS)}
            auc_m = dict(zip(s_out["seeds"], zip(*[s_out["auc"][sp] for sp in SPLITS])))
            auc_t = dict(zip(out["samplers"][other]["seeds"], zip(*[out["samplers"][other]["auc"][sp] for sp in SPLITS])))
            s_out["paired"][f"auc_vs_{other}"] = {
                sp: paired([auc_m[s][i] for s in common], [auc_t[s][i] for s in common]) for i, sp in enumerate(SPLITS)}
    return out


def _at_budget_per_term(summary: Dict[str, Any], budget: int) -> Dict[str, float]:
    """Per-term balanced-split accuracy at the last evaluation at or before the budget."""
    best = None
    for p in summary["curve"]:
        if p["renders"] <= budget * 1.05 or best is None:
            best = p
    return {t: _nan(v) for t, v in ((best or {}).get("test_per_term") or {}).items()}


# ---------------------------------------------------------------------- reporting
def _fmt_ci(d: Dict[str, float], pct: bool = True) -> str:
    k = 100.0 if pct else 1.0
    if not d or d.get("n", 0) == 0 or not math.isfinite(d.get("mean", float("nan"))):
        return "–"
    if not math.isfinite(d.get("lo", float("nan"))):
        return f"{k * d['mean']:+.1f}" if pct else f"{d['mean']:.2f}"
    return f"{k * d['mean']:+.1f} [{k * d['lo']:+.1f}, {k * d['hi']:+.1f}]" if pct else \
        f"{d['mean']:.2f} [{d['lo']:.2f}, {d['hi']:.2f}]"


def _reach_str(xs: Sequence[Optional[float]]) -> str:
    got = [x for x in xs if x is not None]
    med = f"median {np.median(got):.2f}" if got else "never"
    return f"{len(got)}/{len(xs)} seeds, {med}"


def write_markdown(doc: Dict[str, Any], path: Path) -> None:
    R = doc["budget"]
    lines = ["# Learning benchmark: selected vs random samples at equal renders", "",
             f"VLM: `{doc.get('vlm')}`. Budget R = **{R} renders** per run (random to {REFERENCE_MULTIPLE}R), "
             f"{doc['seeds']} paired seeds; same base, schedule and fixed test sets for every sampler. "
             f"Machine: {doc['host']['cpus']} CPUs ({doc['host']['machine']}), {doc.get('jobs', 1)} runs at a time, "
             f"wall {doc['wall_s'] / 60:.1f} min.", "",
             f"Test splits (fixed before any sampler ran): balanced **{doc['split_sizes'].get('test', 0)}** relations, "
             f"tail **{doc['split_sizes'].get('tail', 0)}** relations (rls3_ros/loop/tail_split.py). Base accuracy: "
             f"balanced {doc['base_split_accuracy'].get('test', float('nan')):.3f}, "
             f"tail {doc['base_split_accuracy'].get('tail', float('nan')):.3f}.", "",
             "Random with more renders (mean [95 % interval] over seeds):", "",
             "| split | random at R | at 2R | at 3R |", "| --- | --- | --- | --- |"]
    for sp in SPLITS:
        ra = doc["reference_at"][sp]
        lines.append(f"| {sp} | " + " | ".join(_fmt_ci(ra[f'{m}x'], pct=False) for m in (1, 2, 3)) + " |")
    lines += ["", "Accuracy at R renders; paired difference to random and to the miner at R, in points "
              "(mean [95 % interval]); renders to reach random's accuracy at R, as a fraction of R:", ""]
    for sp in SPLITS:
        lines += [f"**{sp} split**", "",
                  "| sampler | accuracy at R | − random | − miner | AUC − random | reaches random@R (fraction of R) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, s in doc["samplers"].items():
            p = s.get("paired", {})
            lines.append(f"| {name} | {_fmt_ci(s['final_accuracy_mean_ci'][sp], pct=False)} | "
                         f"{_fmt_ci(p.get('vs_random', {}).get(sp, {}))} | {_fmt_ci(p.get('vs_miner', {}).get(sp, {}))} | "
                         f"{_fmt_ci(p.get('auc_vs_random', {}).get(sp, {}))} | "
                         f"{_reach_str(s['renders_fraction_to_random_final'][sp])} |")
        lines.append("")
    names = list(doc["samplers"])
    terms = sorted(doc["base_per_term"])
    lines += ["Per-term balanced-split accuracy at R (mean over seeds):", "",
              "| term | base | " + " | ".join(names) + " |", "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for t in terms:
        lines.append(f"| {t} | {doc['base_per_term'][t]:.3f} | " + " | ".join(
            f"{doc['samplers'][n]['per_term_at_budget'].get(t, {}).get('mean', float('nan')):.3f}" for n in names) + " |")
    lines += ["", "How each sampler spent its renders (share of steps per generation mode, mean over seeds):", "",
              "| mode | " + " | ".join(names) + " |", "| --- | " + " | ".join("---" for _ in names) + " |"]
    from rls3_ros.loop.modes import MODES

    for m in MODES:
        lines.append(f"| {m} | " + " | ".join(f"{doc['samplers'][n]['mode_share_mean'].get(m, 0):.2f}" for n in names) + " |")
    lines += ["", "![curves](learning_curves.png)", "", "![modes](learning_modes.png)", "", "![terms](learning_terms.png)", ""]
    path.write_text("\n".join(lines))


COLOURS = {"random": "tab:orange", "upper": "black", "teacher": "tab:red", "sac": "tab:blue", "sac-paper": "tab:cyan",
           "ppo": "tab:green", "miner": "tab:purple", "sac-yield": "tab:olive"}


def _band(curves: List[List[List[float]]], grid: np.ndarray):
    ys = np.array([[value_at(c, x) for x in grid] for c in curves if c])
    m = ys.mean(axis=0)
    if len(ys) < 2:
        return m, m, m
    from rls3_ros.bench.paired import t975

    h = t975(len(ys) - 1) * ys.std(axis=0, ddof=1) / math.sqrt(len(ys))
    return m, m - h, m + h


def plot(doc: Dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    R = doc["budget"]
    fig, axes = plt.subplots(1, len(SPLITS), figsize=(13, 4.8))
    for ax, sp in zip(axes, SPLITS):
        for name, s in doc["samplers"].items():
            curves = s["curves"][sp]
            top = max(c[-1][0] for c in curves if c) if any(curves) else R
            grid = np.linspace(0, min(top, REFERENCE_MULTIPLE * R if name == REFERENCE else R), 40)
            m, lo, hi = _band(curves, grid)
            ax.plot(grid, m, "-", color=COLOURS.get(name), label=f"{name}", lw=2 if name in ("teacher", REFERENCE) else 1.3)
            ax.fill_between(grid, lo, hi, color=COLOURS.get(name), alpha=0.12)
        for k in range(1, REFERENCE_MULTIPLE + 1):
            ax.axvline(k * R, color="grey", ls=":", lw=0.8)
        ax.set_xlabel("simulator renders")
        ax.set_ylabel(f"{sp} accuracy")
        ax.set_title(f"{sp} split: mean and 95 % interval over {doc['seeds']} seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / "learning_curves.png", dpi=110)
    plt.close(fig)

    from rls3_ros.loop.modes import MODES

    names = list(doc["samplers"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
    ax = axes[0]
    w = 0.8 / max(1, len(names))
    x = np.arange(len(MODES))
    for i, n in enumerate(names):
        ax.bar(x + i * w, [doc["samplers"][n]["mode_share_mean"].get(m, 0) for m in MODES], w, color=COLOURS.get(n), label=n)
    ax.set_xticks(x + w * (len(names) - 1) / 2, MODES)
    ax.set_ylabel("share of steps")
    ax.set_title("Generation modes used (mean over seeds)")
    ax.legend(fontsize=8)
    ax = axes[1]
    for n in ("upper", "teacher"):
        pols = doc["samplers"].get(n, {}).get("mode_policy") or []
        if not pols:
            continue
        for m, ls in (("swap", "-"), ("stack", "--"), ("place_high", ":")):
            xs = [h["renders"] for h in pols[0]]
            ys = np.mean([[h["probs"][m] for h in p[: len(xs)]] for p in pols if len(p) >= len(xs)], axis=0)
            ax.plot(xs, ys, ls, color=COLOURS[n], label=f"{n}: {m}")
    ax.set_xlabel("renders")
    ax.set_ylabel("probability of the mode")
    ax.set_title("Mode policy of the mode samplers (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "learning_modes.png", dpi=110)
    plt.close(fig)

    terms = sorted(doc["base_per_term"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    w = 0.8 / (len(names) + 1)
    x = np.arange(len(terms))
    ax = axes[0]
    ax.bar(x, [doc["base_per_term"][t] for t in terms], w, color="grey", label="base")
    for i, n in enumerate(names):
        pt = doc["samplers"][n]["per_term_at_budget"]
        ax.bar(x + (i + 1) * w, [pt.get(t, {}).get("mean", np.nan) for t in terms], w, color=COLOURS.get(n), label=n)
    ax.set_xticks(x + w * len(names) / 2, terms, rotation=30)
    ax.set_ylabel("balanced-split accuracy at R")
    ax.set_title("Per-term accuracy: base vs after R renders")
    ax.legend(fontsize=7)
    ax = axes[1]
    gterms = sorted({t for s in doc["samplers"].values() for t in s["generated_terms_mean"]})
    x = np.arange(len(gterms))
    for i, n in enumerate(names):
        g = doc["samplers"][n]["generated_terms_mean"]
        k = REFERENCE_MULTIPLE if n == REFERENCE else 1  # random ran to 3R: its count per R
        ax.bar(x + i * w, [g.get(t, 0) / k for t in gterms], w, color=COLOURS.get(n), label=n)
    ax.set_xticks(x + w * (len(names) - 1) / 2, gterms, rotation=30)
    ax.set_ylabel(f"relations generated per {R} renders")
    ax.set_title("What each sampler generated per R renders, per term")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "learning_terms.png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- running
def _one_run(job: Dict[str, Any]) -> Dict[str, Any]:
    """One benchmark run (in a worker process)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from rls3_ros.loop.runner import run_inprocess

    t = time.monotonic()
    summary = run_inprocess(job["cfg"], job["run_path"], progress=False, log=lambda m: None)
    summary["sampler"], summary["seed"] = job["sampler"], job["seed"]
    summary["bench_wall_s"] = time.monotonic() - t
    return summary


def prepare_sets(cfg: Dict[str, Any], log=print) -> Dict[str, int]:
    """Generate (or load) the fixed evaluation sets once, before any sampler runs."""
    from rls3_ros.loop.runner import build_inprocess
    from rls3_ros.loop.run_dir import RunDir
    import tempfile

    cfg = json.loads(json.dumps(cfg))
    cfg["run"]["agent"] = "upper"  # needs the validation sets too
    with tempfile.TemporaryDirectory() as d:
        runner = build_inprocess(cfg, RunDir(d), progress=False, log=log)
        sizes = {k: sum(len(s.relations) for s in v) for k, v in runner.splits.items()}
        runner.close()
        for s in runner.sources:
            s.close()
    return sizes


def run_benchmark(samplers: Sequence[str], seeds: Sequence[int], budget: int, quick: bool, out_dir: Path,
                  overrides: Sequence[str] = (), keep_runs: bool = True, jobs: int = 0, log=print,
                  regime: str = "scratch") -> Dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = result_name(regime, quick)
    runs_root = out_dir / (name.replace("learning", "learning_runs", 1))
    if runs_root.exists():
        shutil.rmtree(runs_root)
    runs_root.mkdir(parents=True)
    samplers = list(samplers)
    if REFERENCE not in samplers:
        samplers.insert(0, REFERENCE)
    t0 = time.monotonic()
    first = bench_config(samplers[0], seeds[0], budget, quick, overrides, regime)
    log("[bench learning] fixed evaluation sets (generated once, cached):")
    sizes = prepare_sets(first, log=lambda m: log(f"[bench learning]   {m}"))
    jobs = int(jobs) or min(2, os.cpu_count() or 1)
    todo = [{"sampler": n, "seed": s, "cfg": bench_config(n, s, budget, quick, overrides, regime),
             "run_path": str(runs_root / f"{n}-seed{s}")} for s in seeds for n in samplers]
    # the random runs are 3x longer: start them first so the pool stays busy
    todo.sort(key=lambda j: (j["seed"], j["sampler"] != REFERENCE))
    runs: Dict[str, List[Dict[str, Any]]] = {}
    log(f"[bench learning] {len(todo)} runs ({len(samplers)} samplers x {len(seeds)} seeds, R = {budget} renders, "
        f"random to {REFERENCE_MULTIPLE}R), {jobs} at a time")
    done = 0
    if jobs <= 1:
        results = (_one_run(j) for j in todo)
    else:
        pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
        futs = [pool.submit(_one_run, j) for j in todo]
        results = (f.result() for f in concurrent.futures.as_completed(futs))
    try:
        for summary in results:
            done += 1
            runs.setdefault(summary["sampler"], []).append(summary)
            tail = run_curve(summary, "tail")
            log(f"[bench learning] {done}/{len(todo)} {summary['sampler']} seed {summary['seed']}: "
                f"balanced {summary['base_accuracy']:.3f} -> {summary['final_accuracy']:.3f}"
                + (f", tail {tail[0][1]:.3f} -> {tail[-1][1]:.3f}" if tail else "")
                + f" ({summary['renders']} renders, {summary['valid_samples']} valid, {summary['bench_wall_s']:.0f} s; "
                f"{(time.monotonic() - t0) / 60:.1f} min so far)")
    finally:
        if jobs > 1:
            pool.shutdown(wait=True)
    for rs in runs.values():
        rs.sort(key=lambda r: r["seed"])
    order = [n for n in samplers if n in runs]
    doc = summarise({n: runs[n] for n in order}, budget)
    doc.update({
        "seeds": len(seeds),
        "quick": quick,
        "jobs": jobs,
        "split_sizes": sizes,
        "wall_s": time.monotonic() - t0,
        "config_overrides": list(overrides),
        "vlm": first["run"]["vlm"],
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "regime": regime,
        "command": "rls3 bench learning" + (" --quick" if quick else "") + (f" --regime {regime}" if regime != "scratch" else ""),
    })
    (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    plot(doc, out_dir if regime == "scratch" else out_dir / name)  # the served regime's plots in their own folder
    write_markdown(doc, out_dir / f"{name}.md")
    if not keep_runs:
        shutil.rmtree(runs_root, ignore_errors=True)
    return doc  # writes results/ only (docs/results.md lists the files)


def result_name(regime: str, quick: bool) -> str:
    """results/<name>.json: learning (the scratch regime, its stable keys), learning_served; _quick for --quick."""
    return ("learning" if regime == "scratch" else f"learning_{regime}") + ("_quick" if quick else "")


def cli_bench_learning(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="rls3 bench learning", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="plumbing check: 1 seed, tiny budget and sets (~3 min)")
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, default=None, help=f"paired seeds (default {DEFAULT_SEEDS}, quick {QUICK_SEEDS})")
    p.add_argument("--budget", type=int, default=None,
                   help=f"renders per run R (default {DEFAULT_BUDGET}, quick {QUICK_BUDGET}); random runs to 3R")
    p.add_argument("--jobs", type=int, default=0, help="runs at a time (default: 2 or the core count if fewer)")
    p.add_argument("--out", default="results", help="output directory (default results/)")
    p.add_argument("--regime", default="scratch", choices=list(REGIMES),
                   help="scratch: the weak base and its recipe (results/learning.json); served: the served model "
                        "grounded:serving with the main job's recipe (results/learning_served.json)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a loop setting for every run, e.g. --set loop.E=2")
    a = p.parse_args(argv)
    seeds = list(range(a.seeds if a.seeds is not None else (QUICK_SEEDS if a.quick else DEFAULT_SEEDS)))
    budget = a.budget if a.budget is not None else (QUICK_BUDGET if a.quick else DEFAULT_BUDGET)
    doc = run_benchmark(a.samplers, seeds, budget, a.quick, Path(a.out), a.sets, jobs=a.jobs, regime=a.regime)
    print(f"\nbase accuracy: balanced {doc['base_split_accuracy']['test']:.3f}, tail {doc['base_split_accuracy']['tail']:.3f}")
    for name, s in doc["samplers"].items():
        fa = s["final_accuracy_mean_ci"]
        pr = s.get("paired", {}).get("vs_random", {})
        print(f"{name:>10}: at R balanced {fa['test']['mean']:.3f}, tail {fa['tail']['mean']:.3f}"
              + (f"  (vs random: balanced {_fmt_ci(pr['test'])}, tail {_fmt_ci(pr['tail'])} pt)" if pr else ""))
    name = result_name(a.regime, a.quick)
    print(f"wrote {a.out}/{name}.json, .md, " + ("" if a.regime == "scratch" else f"{name}/")
          + "learning_curves.png, learning_modes.png, learning_terms.png")
    return 0
