"""Plot and report of a run directory (reads metrics.jsonl only, so it also works on old runs)."""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional

from rls3_ros.loop.run_dir import RunDir, read_yaml


def _iters(metrics: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    # a resumed run may re-log an iteration: keep the last record per iteration number
    by_it: Dict[int, Dict[str, Any]] = {}
    for m in metrics:
        if m.get("type") == "iteration":
            by_it[int(m["iteration"])] = m
    return [by_it[k] for k in sorted(by_it)]


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def served_curve(its: List[Dict[str, Any]]) -> List[float]:
    """Per iteration record: the test accuracy of the model served after it (the iteration named by its
    ``served_iteration``; 0 = the base)."""
    by_it = {int(m["iteration"]): _num(m["test_accuracy"]) for m in its}
    return [by_it.get(int(m.get("served_iteration") or 0), float("nan")) for m in its]


def plot_accuracy(run: RunDir, path: Optional[str] = None) -> str:
    """Test accuracy vs generated (valid) samples: overall and per term -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = _iters(run.read_metrics())
    path = path or run.plot_path
    xs = [m["valid_samples"] for m in its]
    acc = [_num(m["test_accuracy"]) for m in its]
    terms = sorted({t for m in its for t in (m.get("test_per_term") or {})})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ax = axes[0]
    ax.plot(xs, acc, "o-", color="black", lw=2, label="each fine-tune (test)")
    if any("served_iteration" in m for m in its):  # runs with the promotion gate: what a robot is served
        ax.step(xs, served_curve(its), where="post", color="tab:green", lw=2.5, alpha=0.8, label="served (test)")
    vals = [_num(m.get("val_accuracy")) for m in its]
    if any(not math.isnan(v) for v in vals):
        ax.plot(xs, vals, "s--", color="grey", lw=1, label="validation")
    if acc:
        ax.axhline(acc[0], color="tab:red", ls=":", lw=1, label=f"base {acc[0]:.3f}")
    ax.set_xlabel("generated valid samples")
    ax.set_ylabel("accuracy")
    ax.set_title("Test accuracy vs generated samples")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)  # "best": the curves may sit anywhere
    ax = axes[1]
    cmap = plt.get_cmap("tab10")
    for i, t in enumerate(terms):
        ys = [_num((m.get("test_per_term") or {}).get(t)) for m in its]
        ax.plot(xs, ys, "o-", ms=3, color=cmap(i % 10), label=t)
    ax.set_xlabel("generated valid samples")
    ax.set_ylabel("accuracy on relations with the term")
    ax.set_title("Per term")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if terms:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    cfg = read_yaml(run.config_path) if os.path.exists(run.config_path) else {}
    agent = (cfg.get("run") or {}).get("agent", "?")
    fig.suptitle(f"RLS3 run {os.path.basename(run.path)} — agent {agent}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(x, pct=False) -> str:
    x = _num(x)
    if math.isnan(x):
        return "–"
    return f"{100 * x:.1f} %" if pct else f"{x:.3f}"


def sim_split_text(sim: Optional[Dict[str, float]]) -> str:
    """The simulator's own work (``LoopRunner.sim_work``) as a phrase, or "" when not counted."""
    if not sim:
        return ""
    total = sum(sim.values()) or 1.0
    names = {"physics": "physics", "render": "GL passes", "build": "room builds + model compiles",
             "gl_setup": "renderer binds (textures, meshes)", "other": "checks, states and the rest"}
    return ", ".join(f"{names.get(k, k)} {v:.1f} s ({100 * v / total:.0f} %)" for k, v in sim.items())


def _time_split_line(last: Dict[str, Any], split: Optional[Dict[str, float]],
                     background: Optional[Dict[str, float]] = None, sim: Optional[Dict[str, float]] = None) -> str:
    if not split:
        return (f"- time split: fine-tuning {_num(last.get('total_fine_tune_s', 0)) / 60:.1f} min, evaluation "
                f"{_num(last.get('total_eval_s', 0)) / 60:.1f} min, generation + scoring + agent (the rest)")
    total = sum(split.values()) or 1.0
    names = {"sim": "simulator (resets, moves, renders, validity)", "caption": "captions",
             "features": "VLM image features while the simulator works",
             "score": "J2 scoring (VLM)", "fine_tune": "fine-tuning", "eval": "evaluation",
             "agent_update": "agent updates while the simulator works",
             "agent": "agent (policy, other updates) and the rest"}
    if background and any(background.values()):
        names["fine_tune"] = "waiting for a background fine-tune"
    line = "- time split of this session's loop: " + ", ".join(
        f"{names.get(k, k)} {v:.1f} s ({100 * v / total:.0f} %)" for k, v in split.items())
    if background and any(background.values()):
        line += (f"; in a background thread meanwhile (run.overlap_fine_tune): fine-tuning "
                 f"{background.get('fine_tune', 0.0):.1f} s, evaluation {background.get('eval', 0.0):.1f} s")
    if sim:
        line += f"; the simulator's own work (in its worker processes with run.sim_worker): {sim_split_text(sim)}"
    return line


def write_report(run: RunDir, extra: Optional[Dict[str, Any]] = None) -> str:
    """report.md: the tuned model (last and best iteration) against the base, per term."""
    metrics = run.read_metrics()
    its = _iters(metrics)
    cfg = read_yaml(run.config_path) if os.path.exists(run.config_path) else {}
    stops = [m for m in metrics if m.get("type") == "stop"]
    eps = [m for m in metrics if m.get("type") == "episode"]
    lines = [f"# RLS3 run `{os.path.basename(run.path)}`", ""]
    rc = cfg.get("run", {})
    lc = cfg.get("loop", {})
    lines += [
        f"- agent: **{rc.get('agent', '?')}**, VLM: {rc.get('vlm', '?')}, backend: {rc.get('backend', '?')} "
        f"({rc.get('image_size', '?')} px), seed {rc.get('seed', '?')}",
        f"- loop: T={lc.get('T')}, T0={lc.get('T0')}, E={lc.get('E')}, eta={lc.get('eta')}, "
        f"fine-tune steps={lc.get('fine_tune_steps')} (per generated sample: {lc.get('fine_tune_steps_per_sample')}), replay fraction={lc.get('replay_fraction')}, "
        f"patience={lc.get('patience')}",
        f"- budget: {lc.get('budget_valid_samples') or '∞'} valid samples / {lc.get('budget_renders') or '∞'} renders",
    ]
    if not its:
        lines += ["", "No evaluation recorded yet."]
        with open(run.report_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return run.report_path
    base, last = its[0], its[-1]
    best_it = int(last.get("best_iteration") or last["iteration"])
    best = next((m for m in its if int(m["iteration"]) == best_it), last)
    has_val = any(m.get("val_accuracy") is not None for m in its)
    if stops:
        lines.append(f"- stopped: {stops[-1]['reason']} after {stops[-1]['episode']} episodes, "
                     f"{stops[-1]['iteration']} fine-tunes")
    wall = last.get("wall_s")
    if extra and extra.get("wall_s") is not None:
        wall = extra["wall_s"]
    lines += [
        f"- wall time: {_num(wall) / 60:.1f} min; episodes: {last['episodes']}; renders: {last['renders']}; "
        f"valid samples: {last['valid_samples']} (of which {last['trained_samples']} entered fine-tuning); "
        f"valid/render = {last['valid_samples'] / max(1, last['renders']):.2f}",
        _time_split_line(last, (extra or {}).get("time_split"), (extra or {}).get("background_split"),
                         (extra or {}).get("sim_split")),
        "",
        "## Test accuracy (fixed held-out set, balanced over terms and scene types)",
        "",
        "| model | iteration | overall | Δ vs base | test loss |",
        "| --- | --- | --- | --- | --- |",
        f"| base | 0 | {_fmt(base['test_accuracy'], True)} | | {_fmt(base.get('test_loss'))} |",
        f"| tuned (last) | {last['iteration']} | {_fmt(last['test_accuracy'], True)} | "
        f"{100 * (_num(last['test_accuracy']) - _num(base['test_accuracy'])):+.1f} pt | {_fmt(last.get('test_loss'))} |",
        f"| tuned (best on {'validation' if has_val else 'test: no validation set, for reference only'}) | {best['iteration']} | {_fmt(best['test_accuracy'], True)} | "
        f"{100 * (_num(best['test_accuracy']) - _num(base['test_accuracy'])):+.1f} pt | {_fmt(best.get('test_loss'))} |",
        "",
        "## Per term",
        "",
        "| term | relations in test set | base | tuned (last) | Δ | generated (all valid samples) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    gen_terms: Dict[str, int] = (extra or {}).get("generated_terms", {})
    terms = sorted(set(base.get("test_per_term", {})) | set(last.get("test_per_term", {})))
    for t in terms:
        b = _num(base["test_per_term"].get(t))
        a = _num(last["test_per_term"].get(t))
        n = (last.get("test_counts") or {}).get(t, "")
        lines.append(f"| {t} | {n} | {_fmt(b, True)} | {_fmt(a, True)} | {100 * (a - b):+.1f} pt | {gen_terms.get(t, '')} |")
    lines += ["", "## Iterations", "", "| it | valid samples | renders | batch (+replay) | FT loss | test acc | val acc |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in its:
        lines.append(f"| {m['iteration']} | {m['valid_samples']} | {m['renders']} | {m['batch_samples']} (+{m['replay_samples']}) | "
                     f"{_fmt(m.get('fine_tune_loss'))} | {_fmt(m['test_accuracy'], True)} | {_fmt(m.get('val_accuracy'), True)} |")
    if eps:
        inv: Dict[str, int] = {}
        kinds: Dict[str, int] = {}
        for e in eps:
            for k, v in (e.get("invalid") or {}).items():
                inv[k] = inv.get(k, 0) + v
            for k, v in (e.get("move_kinds") or {}).items():
                kinds[k] = kinds.get(k, 0) + v
        j2 = [e["j2"] for e in eps if e.get("j2") is not None]
        lines += ["", "## Generation", "",
                  f"- moves by kind: {dict(sorted(kinds.items()))}",
                  f"- invalid moves by reason: {dict(sorted(inv.items()))}",
                  f"- mean J2 (episode reward from the VLM): first 10 episodes {sum(j2[:10]) / max(1, len(j2[:10])):.3f}, "
                  f"last 10 {sum(j2[-10:]) / max(1, len(j2[-10:])):.3f}" if j2 else "- J2: not computed"]
    if os.path.exists(run.plot_path):
        lines += ["", f"![test accuracy]({os.path.basename(run.plot_path)})"]
    with open(run.report_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return run.report_path
