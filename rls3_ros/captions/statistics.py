"""Relation statistics: counts per term and per term count, so imbalance is visible.

``relation_statistics(samples_or_relations)`` -> dict; ``statistics_markdown(stats)`` ->
Markdown tables; ``plot_statistics(stats, path)`` -> PNG (matplotlib, Agg) with a bar
chart of term counts, a bar chart of 1/2/3-term counts and a radar of the 8 horizontal
sectors.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Union

from rls3_ros.captions import terms as T
from rls3_ros.core.scene import Sample, SpatialRelation


def _relations(items: Iterable[Union[Sample, SpatialRelation]]) -> List[SpatialRelation]:
    out: List[SpatialRelation] = []
    for it in items:
        if isinstance(it, Sample):
            out.extend(it.relations)
        else:
            out.append(it)
    return out


def relation_statistics(items: Iterable[Union[Sample, SpatialRelation]]) -> Dict[str, Any]:
    """Counts over relations (or over all relations of samples).

    Returns ``{"relations": n, "samples": n_samples (or None), "per_term": {term: n},
    "per_term_count": {"1": n, "2": n, "3": n}, "per_sector": {sector name: n},
    "per_vertical": {"above"/"below"/"on"/"under"/"level": n}, "relations_per_sample":
    {k: n}}``. Every term of ``TERMS`` appears (0 when absent).
    """
    items = list(items)
    samples = [s for s in items if isinstance(s, Sample)]
    rels = _relations(items)
    per_term = Counter({t: 0 for t in T.TERMS})
    per_count = Counter({"1": 0, "2": 0, "3": 0})
    per_sector = Counter({n: 0 for n in T.SECTOR_NAMES})
    per_sector["none (vertical only)"] = 0
    per_vertical = Counter({"above": 0, "below": 0, "on": 0, "under": 0, "level": 0})
    for r in rels:
        per_term.update(r.terms)
        per_count[str(len(r.terms))] += 1
        h = tuple(t for t in T.canonical_terms(r.terms) if t in T.HORIZONTAL_TERMS)
        per_sector[" and ".join(h) if h else "none (vertical only)"] += 1
        v = [t for t in r.terms if t in T.VERTICAL_TERMS]
        per_vertical[v[0] if v else "level"] += 1
    per_sample = Counter(str(len(s.relations)) for s in samples)
    return {
        "relations": len(rels),
        "samples": len(samples) if samples else None,
        "per_term": dict(per_term),
        "per_term_count": dict(per_count),
        "per_sector": dict(per_sector),
        "per_vertical": dict(per_vertical),
        "relations_per_sample": dict(sorted(per_sample.items(), key=lambda kv: int(kv[0]))),
    }


def _table(title: str, counts: Dict[str, int], total: int) -> List[str]:
    lines = [f"| {title} | count | share |", "| --- | ---: | ---: |"]
    for k, n in counts.items():
        share = 100.0 * n / total if total else 0.0
        lines.append(f"| {k} | {n} | {share:.1f} % |")
    return lines


def statistics_markdown(stats: Dict[str, Any]) -> str:
    """Markdown tables of a ``relation_statistics`` result (shares are of all relations)."""
    n = stats["relations"]
    head = f"{n} relations" + (f" in {stats['samples']} samples" if stats.get("samples") else "")
    out = [head, ""]
    out += _table("term", stats["per_term"], n) + [""]
    out += _table("terms per caption", stats["per_term_count"], n) + [""]
    out += _table("horizontal sector", stats["per_sector"], n) + [""]
    out += _table("vertical band", stats["per_vertical"], n)
    if stats.get("relations_per_sample"):
        out += [""] + _table("relations per sample", stats["relations_per_sample"], stats.get("samples") or 0)
    return "\n".join(out) + "\n"


def plot_statistics(stats: Dict[str, Any], path: Union[str, Path], title: str = "") -> Path:
    """PNG with term counts, term-count counts and a radar of horizontal sectors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig = plt.figure(figsize=(13, 4.2))
    ax1 = fig.add_subplot(1, 3, 1)
    terms = list(stats["per_term"])
    ax1.bar(terms, [stats["per_term"][t] for t in terms], color="tab:blue")
    ax1.set_title("relations per term")
    ax1.tick_params(axis="x", rotation=45)
    ax2 = fig.add_subplot(1, 3, 2)
    ks = list(stats["per_term_count"])
    ax2.bar([f"{k} term{'s' if k != '1' else ''}" for k in ks], [stats["per_term_count"][k] for k in ks], color="tab:orange")
    ax2.set_title("terms per caption")
    ax3 = fig.add_subplot(1, 3, 3, projection="polar")
    # sector k is centred on bearing 180 - 45 k deg of B from A (0 = toward camera);
    # drawn with "toward the camera" at the bottom and image right on the right.
    vals = [stats["per_sector"].get(nm, 0) for nm in T.SECTOR_NAMES]
    theta = np.mod(np.radians([180.0 - 45.0 * k for k in range(8)]), 2 * np.pi)
    ax3.set_theta_zero_location("S")
    ax3.set_theta_direction(1)
    ax3.bar(theta, vals, width=np.radians(40), color="tab:green", alpha=0.7)
    ax3.set_xticks(theta)
    ax3.set_thetalim(0.0, 2 * np.pi)
    ax3.set_xticklabels([f"A {nm}" for nm in T.SECTOR_NAMES], fontsize=7)
    ax3.set_title("where B lies around A (camera at bottom);\nlabels: A's terms", fontsize=9)
    fig.suptitle(title or f"{stats['relations']} relations")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
