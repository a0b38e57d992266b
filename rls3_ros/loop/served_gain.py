"""What a run gained for the robot: the served model against the untuned base, paired (pure Python).

At the end of a run the served model (the adapter that last passed the promotion gate, or the base
when none did) is compared with the base on the same relations of every evaluated split (the
balanced test split, the tail split when the run evaluates it) and on the robot's metric, the exact
"where" term set (``rls3_ros.vlm.where_metric``) on the test split's relations. Each difference comes
with a 95 % paired bootstrap interval (relations resampled, both models' answers kept together).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

BOOTSTRAP = 2000


def paired_difference(base: Sequence[bool], tuned: Sequence[bool], n_boot: int = BOOTSTRAP,
                      seed: int = 0) -> Dict[str, float]:
    """Accuracy of both, their difference and its 95 % paired bootstrap interval (points are fractions)."""
    a = np.asarray(base, dtype=float)
    b = np.asarray(tuned, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison of {a.size} and {b.size} answers")
    n = a.size
    if n == 0:
        return {"n": 0, "base": float("nan"), "tuned": float("nan"), "gain": float("nan"), "low": float("nan"),
                "high": float("nan")}
    d = b - a
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, size=(n_boot, n))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"n": int(n), "base": float(a.mean()), "tuned": float(b.mean()), "gain": float(d.mean()),
            "low": float(lo), "high": float(hi)}


def _bits(s: str) -> List[bool]:
    return [c == "1" for c in s]


def where_exact_answers(vlm, samples) -> List[bool]:
    """Per relation of ``samples``: the model's "where" answer has exactly the oracle's terms."""
    from rls3_ros.vlm.where_metric import where_pairs

    return [set(t) == set(a) for t, a in where_pairs(vlm, samples)]


def served_gain(history: Sequence[Any], served_iteration: int, vlm=None, test_samples=None,
                load_adapter: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """The served iteration's paired gains over the base (iteration 0) on every split both evaluated,
    and on where-exact when ``vlm`` (with ``load_adapter``: "" = base) and the test samples are given."""
    base, served = history[0], history[served_iteration] if served_iteration else history[0]
    out: Dict[str, Any] = {"served_iteration": int(served_iteration), "adapter": served.adapter_path, "splits": {}}
    for name, rec in base.splits.items():
        other = served.splits.get(name)
        if name == "val" or other is None or not rec.get("correct") or len(rec["correct"]) != len(other.get("correct", "")):
            continue  # validation chose the served adapter: its gain there is not an unbiased estimate
        out["splits"][name] = paired_difference(_bits(rec["correct"]), _bits(other["correct"]))
    last = history[-1]
    if len(history) > 1 and last is not served:
        # what the gate held back: the last fine-tune against the base on every split (validation included)
        out["last"] = {"iteration": int(last.iteration), "adapter": last.adapter_path, "splits": {
            name: paired_difference(_bits(rec["correct"]), _bits(last.splits[name]["correct"]))
            for name, rec in base.splits.items()
            if rec.get("correct") and len(rec["correct"]) == len(last.splits.get(name, {}).get("correct", ""))}}
    if vlm is not None and test_samples and load_adapter is not None:
        load_adapter("")
        b = where_exact_answers(vlm, test_samples)
        if served_iteration:
            load_adapter(served.adapter_path)
            t = where_exact_answers(vlm, test_samples)
        else:
            t = b
        out["where_exact"] = paired_difference(b, t)
    return out


def format_gain(g: Dict[str, Any]) -> List[str]:
    """Lines for the log and the report: one per split and for where-exact."""
    what = f"iteration {g['served_iteration']}" if g["served_iteration"] else "the base (no adapter passed the gate)"
    lines = [f"served model: {what}"]
    rows = list(g["splits"].items()) + ([("where-exact", g["where_exact"])] if "where_exact" in g else [])
    for name, d in rows:
        lines.append(f"  {name:11s} {d['base']:.3f} -> {d['tuned']:.3f}  gain {100 * d['gain']:+.1f} pt "
                     f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] (95 % paired bootstrap, n={d['n']})")
    if g.get("last"):
        lines.append(f"last fine-tune (iteration {g['last']['iteration']}, not served) against the base:")
        for name, d in g["last"]["splits"].items():
            lines.append(f"  {name:11s} {d['base']:.3f} -> {d['tuned']:.3f}  gain {100 * d['gain']:+.1f} pt "
                         f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] (n={d['n']})")
    return lines


def report_section(g: Dict[str, Any]) -> str:
    """The run report's section: the served model's gains and every gate decision (``g["gate"]``)."""
    out = ["", "## Served model (promotion gate)", "", "```", *format_gain(g), "```", "",
           "| iteration | validation served -> candidate | gained | lost | p | promoted |", "|---|---|---|---|---|---|"]
    for d in g.get("gate", []):
        out.append(f"| {d['iteration']} | {d['served_accuracy']:.3f} -> {d['candidate_accuracy']:.3f} | {d['wins']} | "
                   f"{d['losses']} | {d['p_value']:.3g} | {'yes' if d['promoted'] else 'no'} |")
    return "\n".join(out) + "\n"
