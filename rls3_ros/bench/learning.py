"""Does RL-selected data beat random data? ``rls3 bench learning [--quick]``.

For each sampler (SAC, PPO, random, hard-example miner) and seed, the same RLS3 loop
(``rls3_ros.rl.loop.run_inprocess``) runs from the same pretrained base with the same sample
budget and fine-tuning settings, and is evaluated on the same fixed held-out test set
(balanced over terms and scene types, generated once from fixed seeds, never trained on).

Writes ``results/learning.json`` (stable keys: ``budget``, ``base_accuracy``,
``samplers.<name>.final_accuracy`` = one value per seed), ``results/learning.md`` and plots
``results/learning_curves.png`` (test accuracy vs generated samples, mean ± std per sampler)
and ``results/learning_terms.png`` (per-term accuracy before/after and term counts generated
by each sampler: the paper's spider plot as bars).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

SAMPLERS = ("sac", "ppo", "random", "miner")


def _nan(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def bench_config(sampler: str, seed: int, budget: int, quick: bool, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """The loop configuration of one benchmark run: the main job's, with the benchmark's budget."""
    from rls3_ros.train_cli import apply_sets, load_train_config

    cfg = load_train_config(quick=quick)
    cfg["run"]["agent"] = sampler
    cfg["run"]["seed"] = int(seed)
    cfg["loop"]["seed"] = int(seed)
    cfg["loop"]["budget_valid_samples"] = int(budget)
    cfg["loop"]["budget_renders"] = 0
    cfg["loop"]["max_iterations"] = 0
    cfg["loop"]["patience"] = 0  # same number of fine-tunes for every sampler
    return apply_sets(cfg, list(overrides))


def curve(run_dir: str) -> List[Dict[str, Any]]:
    """(valid samples, test accuracy, per term) after every fine-tune of a run (iteration 0 = base)."""
    from rls3_ros.rl.run_dir import RunDir

    its = [m for m in RunDir(run_dir).read_metrics() if m.get("type") == "iteration"]
    return [{"iteration": int(m["iteration"]), "valid_samples": int(m.get("valid_samples", 0)),
             "renders": int(m.get("renders", 0)), "test_accuracy": _nan(m.get("test_accuracy")),
             "test_per_term": m.get("test_per_term") or {}} for m in its]


def samples_to_reach(points: List[Dict[str, Any]], target: float) -> Optional[int]:
    for p in points:
        if p["iteration"] > 0 and p["test_accuracy"] >= target:
            return p["valid_samples"]
    return None


def _mean_std(v: Sequence[float]) -> Dict[str, float]:
    a = np.asarray([x for x in v if not math.isnan(x)], dtype=float)
    if a.size == 0:
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": float(a.mean()), "std": float(a.std(ddof=0))}


def summarise(runs: Dict[str, List[Dict[str, Any]]], budget: int) -> Dict[str, Any]:
    """The stable JSON document from the per-run summaries."""
    bases = [r["base_accuracy"] for rs in runs.values() for r in rs]
    base = float(np.mean(bases))
    base_per_term: Dict[str, List[float]] = {}
    for rs in runs.values():
        for r in rs:
            for t, v in (r["base_per_term"] or {}).items():
                base_per_term.setdefault(t, []).append(_nan(v))
    out: Dict[str, Any] = {
        "budget": budget,
        "budget_unit": "valid samples",
        "base_accuracy": base,
        "base_per_term": {t: float(np.mean(v)) for t, v in sorted(base_per_term.items())},
        "samplers": {},
    }
    for name, rs in runs.items():
        finals = [r["final_accuracy"] for r in rs]
        per_term: Dict[str, List[float]] = {}
        gen_terms: Dict[str, List[float]] = {}
        for r in rs:
            for t, v in (r["final_per_term"] or {}).items():
                per_term.setdefault(t, []).append(_nan(v))
            for t, v in (r.get("generated_terms") or {}).items():
                gen_terms.setdefault(t, []).append(float(v))
        out["samplers"][name] = {
            "final_accuracy": finals,
            "final_accuracy_mean_std": _mean_std(finals),
            "gain_over_base": _mean_std([f - r["base_accuracy"] for f, r in zip(finals, rs)]),
            "final_per_term": {t: _mean_std(v) for t, v in sorted(per_term.items())},
            "generated_terms_mean": {t: float(np.mean(v)) for t, v in sorted(gen_terms.items())},
            "renders": [r["renders"] for r in rs],
            "valid_samples": [r["valid_samples"] for r in rs],
            "iterations": [r["iterations"] for r in rs],
            "wall_s": [round(r["wall_s"], 1) for r in rs],
            "curves": [r["curve"] for r in rs],
        }
    rnd = out["samplers"].get("random")
    if rnd:
        g_rand = rnd["gain_over_base"]["mean"]
        target = rnd["final_accuracy_mean_std"]["mean"]
        for name, s in out["samplers"].items():
            g = s["gain_over_base"]["mean"]
            s["gain_ratio_vs_random"] = (g / g_rand) if g_rand and not math.isnan(g_rand) and abs(g_rand) > 1e-9 else None
            reach = [samples_to_reach(c, target) for c in s["curves"]]
            s["samples_to_reach_random_final"] = reach
    return out


def write_markdown(doc: Dict[str, Any], path: Path) -> None:
    lines = [f"# Learning benchmark: RL-selected vs random samples", "",
             f"VLM: `{doc.get('vlm', 'embedded')}`. Budget: {doc['budget']} {doc['budget_unit']} per run, {doc['seeds']} seed(s) per sampler; "
             "same base model, same fine-tuning settings, same held-out test set (fixed seeds, balanced over terms). "
             f"Machine: {doc['host']['cpus']} CPUs ({doc['host']['machine']}), wall {doc['wall_s'] / 60:.1f} min.", "",
             f"Base model accuracy: **{doc['base_accuracy']:.3f}**", "",
             "| sampler | final accuracy (mean ± std) | gain over base | gain / random's gain | samples to reach random's final | renders | valid |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in doc["samplers"].items():
        fa, g = s["final_accuracy_mean_std"], s["gain_over_base"]
        ratio = s.get("gain_ratio_vs_random")
        reach = s.get("samples_to_reach_random_final") or []
        reach_s = ", ".join("–" if r is None else str(r) for r in reach)
        lines.append(f"| {name} | {fa['mean']:.3f} ± {fa['std']:.3f} | {g['mean']:+.3f} ± {g['std']:.3f} | "
                     f"{'–' if ratio is None else f'{ratio:.2f}'} | {reach_s} | {int(np.mean(s['renders']))} | "
                     f"{int(np.mean(s['valid_samples']))} |")
    terms = sorted({t for s in doc["samplers"].values() for t in s["final_per_term"]} | set(doc["base_per_term"]))
    lines += ["", "Per-term test accuracy (mean over seeds):", "",
              "| term | base | " + " | ".join(doc["samplers"]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in doc["samplers"]) + " |"]
    for t in terms:
        row = [f"{doc['base_per_term'].get(t, float('nan')):.3f}"]
        for s in doc["samplers"].values():
            row.append(f"{s['final_per_term'].get(t, {}).get('mean', float('nan')):.3f}")
        lines.append(f"| {t} | " + " | ".join(row) + " |")
    lines += ["", "Relations generated per term (mean over seeds; what each sampler fed the fine-tuning):", "",
              "| term | " + " | ".join(doc["samplers"]) + " |", "| --- | " + " | ".join("---" for _ in doc["samplers"]) + " |"]
    gterms = sorted({t for s in doc["samplers"].values() for t in s["generated_terms_mean"]})
    for t in gterms:
        lines.append(f"| {t} | " + " | ".join(f"{s['generated_terms_mean'].get(t, 0):.0f}" for s in doc["samplers"].values()) + " |")
    lines += ["", "![curves](learning_curves.png)", "", "![terms](learning_terms.png)", ""]
    path.write_text("\n".join(lines))


def plot(doc: Dict[str, Any], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"sac": "tab:blue", "ppo": "tab:green", "random": "tab:orange", "miner": "tab:purple"}
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for name, s in doc["samplers"].items():
        curves = s["curves"]
        n = min(len(c) for c in curves)
        xs = np.mean([[p["valid_samples"] for p in c[:n]] for c in curves], axis=0)
        ys = np.array([[p["test_accuracy"] for p in c[:n]] for c in curves])
        m, sd = ys.mean(axis=0), ys.std(axis=0)
        ax.plot(xs, m, "o-", color=colours.get(name), label=f"{name} ({len(curves)} seeds)")
        ax.fill_between(xs, m - sd, m + sd, color=colours.get(name), alpha=0.15)
    ax.axhline(doc["base_accuracy"], color="grey", ls=":", label=f"base {doc['base_accuracy']:.3f}")
    ax.set_xlabel("generated valid samples")
    ax.set_ylabel("test accuracy (multiple choice)")
    ax.set_title("Test accuracy vs generated samples (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "learning_curves.png", dpi=110)
    plt.close(fig)

    terms = sorted(doc["base_per_term"])
    names = list(doc["samplers"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    w = 0.8 / (len(names) + 1)
    x = np.arange(len(terms))
    ax = axes[0]
    ax.bar(x, [doc["base_per_term"][t] for t in terms], w, color="grey", label="base")
    for i, name in enumerate(names):
        pt = doc["samplers"][name]["final_per_term"]
        ax.bar(x + (i + 1) * w, [pt.get(t, {}).get("mean", np.nan) for t in terms], w,
               yerr=[pt.get(t, {}).get("std", 0) for t in terms], color=colours.get(name), label=name)
    ax.set_xticks(x + w * len(names) / 2, terms, rotation=30)
    ax.set_ylabel("test accuracy")
    ax.set_title("Per-term accuracy: base vs after fine-tuning")
    ax.legend(fontsize=8)
    ax = axes[1]
    gterms = sorted({t for s in doc["samplers"].values() for t in s["generated_terms_mean"]})
    x = np.arange(len(gterms))
    for i, name in enumerate(names):
        g = doc["samplers"][name]["generated_terms_mean"]
        ax.bar(x + i * w, [g.get(t, 0) for t in gterms], w, color=colours.get(name), label=name)
    ax.set_xticks(x + w * (len(names) - 1) / 2, gterms, rotation=30)
    ax.set_ylabel("relations generated (mean per run)")
    ax.set_title("What each sampler generated, per term")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "learning_terms.png", dpi=110)
    plt.close(fig)


def run_benchmark(samplers: Sequence[str], seeds: Sequence[int], budget: int, quick: bool, out_dir: Path,
                  overrides: Sequence[str] = (), keep_runs: bool = True, log=print) -> Dict[str, Any]:
    from rls3_ros.rl.loop import ensure_pretrained, run_inprocess

    out_dir.mkdir(parents=True, exist_ok=True)
    runs_root = out_dir / ("learning_runs_quick" if quick else "learning_runs")
    if runs_root.exists():
        shutil.rmtree(runs_root)
    vlm_spec = bench_config(samplers[0], 0, budget, quick, overrides)["run"]["vlm"]
    if vlm_spec == "embedded":
        ensure_pretrained("embedded", log)
    t0 = time.monotonic()
    runs: Dict[str, List[Dict[str, Any]]] = {}
    total = len(samplers) * len(seeds)
    k = 0
    for seed in seeds:  # seeds outermost: a partial benchmark still compares every sampler
        for name in samplers:
            k += 1
            cfg = bench_config(name, seed, budget, quick, overrides)
            run_path = runs_root / f"{name}-seed{seed}"
            log(f"[bench learning] run {k}/{total}: {name}, seed {seed}, budget {budget} valid samples "
                f"({(time.monotonic() - t0) / 60:.1f} min so far)")
            t = time.monotonic()
            summary = run_inprocess(cfg, str(run_path), progress=False, log=lambda m: None)
            summary["curve"] = curve(str(run_path))
            runs.setdefault(name, []).append(summary)
            log(f"[bench learning]   {name} seed {seed}: base {summary['base_accuracy']:.3f} -> final "
                f"{summary['final_accuracy']:.3f} ({summary['iterations']} fine-tunes, {summary['renders']} renders, "
                f"{time.monotonic() - t:.0f} s)")
    doc = summarise(runs, budget)
    doc.update({
        "seeds": len(seeds),
        "quick": quick,
        "wall_s": time.monotonic() - t0,
        "config_overrides": list(overrides),
        "vlm": vlm_spec,
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "rls3 bench learning" + (" --quick" if quick else ""),
    })
    name = "learning_quick" if quick else "learning"
    (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    plot(doc, out_dir)
    write_markdown(doc, out_dir / f"{name}.md")
    if not quick:  # what each sampler did, from the same runs: appended to the benchmark's Markdown
        from rls3_ros.bench.sampler_behaviour import run_analysis

        run_analysis(runs_root, out_dir)
        md = out_dir / f"{name}.md"
        md.write_text(md.read_text().rstrip() + "\n\n" + (out_dir / "learning_behaviour.md").read_text())
    if not keep_runs:
        shutil.rmtree(runs_root, ignore_errors=True)
    from rls3_ros.bench.readme_results import is_repo_results, update_readme

    if not quick and is_repo_results(out_dir):
        update_readme(out_dir)
    return doc


def cli_bench_learning(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="rls3 bench learning", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="plumbing check: 1 seed, tiny budget (< 5 min)")
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    p.add_argument("--seeds", type=int, default=None, help="seeds per sampler (default 3, quick 1)")
    p.add_argument("--budget", type=int, default=None, help="valid samples per run (default 300, quick 24)")
    p.add_argument("--out", default="results", help="output directory (default results/)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a loop setting for every run, e.g. --set loop.E=2")
    a = p.parse_args(argv)
    seeds = list(range(a.seeds if a.seeds is not None else (1 if a.quick else 3)))
    budget = a.budget if a.budget is not None else (24 if a.quick else 300)
    doc = run_benchmark(a.samplers, seeds, budget, a.quick, Path(a.out), a.sets)
    print(f"\nbase accuracy {doc['base_accuracy']:.3f}")
    for name, s in doc["samplers"].items():
        fa, g = s["final_accuracy_mean_std"], s["gain_over_base"]
        r = s.get("gain_ratio_vs_random")
        print(f"{name:>7}: final {fa['mean']:.3f} ± {fa['std']:.3f}  gain {g['mean']:+.3f}"
              + (f"  x random {r:.2f}" if r is not None else ""))
    print(f"wrote {a.out}/{'learning_quick' if a.quick else 'learning'}.json, .md, learning_curves.png, learning_terms.png")
    return 0
