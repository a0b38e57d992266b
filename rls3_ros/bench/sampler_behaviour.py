"""What each sampler did, and whether there was a signal to learn: ``rls3 bench behaviour``.

Reads the run directories a learning benchmark kept (``results/learning_runs/<sampler>-seed<k>``)
and answers the questions behind "why does (or doesn't) RL beat random?":

- **Did the agent change its behaviour?** Per sampler, the share of each move kind (stack /
  place / swap), the valid fraction and the mean extrinsic reward J2 in the first and the last
  third of its episodes. An RL agent that learned to target the VLM's weak relations moves
  away from the uniform mix of the random agent.
- **Was there anything to learn?** Over the *random* agent's episodes (its moves are uniform, so
  the comparison is unbiased), the mean J2 of an episode by how many of its moves were stacks
  (the move that makes "on"/"under" and most "above"/"below" relations), as a residual against
  the mean J2 of the same run and fine-tuning iteration (the VLM gets better during a run, which
  would otherwise swamp the effect).

Writes ``learning_behaviour.json``, ``learning_behaviour.md`` and ``learning_behaviour.png``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

KINDS = ("stack", "place", "swap")


def _episodes(run_dir: Path) -> List[Dict[str, Any]]:
    out = []
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("type") == "episode":
            out.append(m)
    return out


def _phase(eps: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    moves = {k: sum(int((e.get("move_kinds") or {}).get(k, 0)) for e in eps) for k in KINDS}
    n_moves = sum(moves.values())
    renders = sum(int(e.get("renders", 0)) for e in eps)
    valid = sum(int(e.get("valid", 0)) for e in eps)
    j2 = [float(e["j2"]) for e in eps if e.get("j2") is not None and not math.isnan(float(e["j2"]))]
    out = {f"{k}_share": (moves[k] / n_moves if n_moves else float("nan")) for k in KINDS}
    out.update({"valid_per_render": valid / renders if renders else float("nan"),
                "mean_j2": float(np.mean(j2)) if j2 else float("nan"), "episodes": len(eps)})
    return out


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return float(np.mean(xs)) if xs else float("nan")


def analyse(runs_root: Path) -> Dict[str, Any]:
    """Behaviour per sampler (mean over seeds) and the stack-vs-J2 signal of the random agent."""
    per: Dict[str, List[Dict[str, Dict[str, float]]]] = defaultdict(list)
    residual_by_stacks: Dict[int, List[float]] = defaultdict(list)
    for run in sorted(p for p in Path(runs_root).iterdir() if p.is_dir() and "-seed" in p.name):
        sampler = run.name.split("-seed")[0]
        eps = _episodes(run)
        if len(eps) < 3:
            continue
        k = len(eps) // 3
        per[sampler].append({"first": _phase(eps[:k]), "last": _phase(eps[-k:])})
        if sampler == "random":
            by_it: Dict[int, List[float]] = defaultdict(list)
            for e in eps:
                if e.get("j2") is not None and not math.isnan(float(e["j2"])):
                    by_it[int(e.get("iteration", 0))].append(float(e["j2"]))
            for e in eps:
                if e.get("j2") is None or math.isnan(float(e["j2"])):
                    continue
                stacks = int((e.get("move_kinds") or {}).get("stack", 0))
                residual_by_stacks[min(stacks, 4)].append(float(e["j2"]) - float(np.mean(by_it[int(e.get("iteration", 0))])))
    samplers = {}
    for name, runs in per.items():
        samplers[name] = {ph: {key: _mean([r[ph][key] for r in runs]) for key in runs[0][ph]}
                          for ph in ("first", "last")}
        samplers[name]["seeds"] = len(runs)
    signal = {str(n): {"episodes": len(v), "mean_residual_j2": float(np.mean(v)),
                       "sem": float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")}
              for n, v in sorted(residual_by_stacks.items())}
    return {"samplers": samplers, "random_j2_residual_by_stack_moves": signal}


def write_markdown(doc: Dict[str, Any], path: Path) -> str:
    lines = ["### What the samplers did (first third → last third of each run's episodes, mean over seeds)", "",
             "| sampler | stack moves | place moves | swap moves | valid / render | mean J2 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, s in doc["samplers"].items():
        f, l = s["first"], s["last"]
        lines.append(f"| {name} | " + " | ".join(f"{f[k + '_share']:.2f} → {l[k + '_share']:.2f}" for k in KINDS)
                     + f" | {f['valid_per_render']:.2f} → {l['valid_per_render']:.2f} | "
                       f"{f['mean_j2']:.2f} → {l['mean_j2']:.2f} |")
    sig = doc["random_j2_residual_by_stack_moves"]
    if sig:
        lines += ["", "Signal available to an agent (random agent's episodes): J2 of an episode relative to the mean "
                      "of its run and iteration, by stack moves in the episode (4 = 4 or more):", "",
                  "| stack moves | episodes | J2 residual (± s.e.) |", "| --- | --- | --- |"]
        for n, d in sig.items():
            lines.append(f"| {n} | {d['episodes']} | {d['mean_residual_j2']:+.3f} ± {d['sem']:.3f} |")
    lines += ["", "![behaviour](learning_behaviour.png)", ""]
    text = "\n".join(lines)
    path.write_text(text)
    return text


def plot(doc: Dict[str, Any], runs_root: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"sac": "tab:blue", "ppo": "tab:green", "random": "tab:orange", "miner": "tab:purple"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    ax = axes[0]
    bins = 6
    curves: Dict[str, List[np.ndarray]] = defaultdict(list)
    for run in sorted(p for p in Path(runs_root).iterdir() if p.is_dir() and "-seed" in p.name):
        eps = _episodes(run)
        if len(eps) < bins:
            continue
        chunks = np.array_split(np.arange(len(eps)), bins)
        curves[run.name.split("-seed")[0]].append(np.array([_phase([eps[i] for i in c])["stack_share"] for c in chunks]))
    x = (np.arange(bins) + 0.5) / bins
    for name, cs in curves.items():
        m = np.nanmean(np.stack(cs), axis=0)
        ax.plot(x, m, "o-", color=colours.get(name), label=f"{name} ({len(cs)} seeds)")
    ax.axhline(0.25, color="grey", ls=":", label="uniform action: 0.25")
    ax.set_xlabel("fraction of the run (episodes)")
    ax.set_ylabel("share of stack moves")
    ax.set_title("Did the sampler shift towards stacking?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    sig = doc["random_j2_residual_by_stack_moves"]
    if sig:
        ks = list(sig)
        ax.bar(ks, [sig[k]["mean_residual_j2"] for k in ks], yerr=[sig[k]["sem"] for k in ks], color="tab:orange")
        for i, k in enumerate(ks):
            ax.text(i, 0, f"n={sig[k]['episodes']}", ha="center", va="bottom", fontsize=8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("stack moves in the episode (random agent; 4 = 4+)")
    ax.set_ylabel("episode J2 − mean J2 of its run & iteration")
    ax.set_title("Signal: does stacking raise the VLM's loss (reward)?")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run_analysis(runs_root: Path, out_dir: Path) -> Dict[str, Any]:
    doc = analyse(runs_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "learning_behaviour.json").write_text(json.dumps(doc, indent=2) + "\n")
    write_markdown(doc, out_dir / "learning_behaviour.md")
    plot(doc, runs_root, out_dir / "learning_behaviour.png")
    return doc


def cli_bench_behaviour(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="rls3 bench behaviour", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="results/learning_runs", help="run directories of a learning benchmark")
    p.add_argument("--out", default="results", help="output directory (default results/)")
    a = p.parse_args(argv)
    runs = Path(a.runs)
    if not runs.is_dir() or not any(runs.iterdir()):
        print(f"rls3 bench behaviour: no runs in {runs} (run `rls3 bench learning` first)")
        return 2
    doc = run_analysis(runs, Path(a.out))
    print(Path(a.out, "learning_behaviour.md").read_text())
    return 0 if doc["samplers"] else 2
