"""The robot's metric for "where" answers (pure Python, no ROS).

For every relation the model is asked "where is <subject> relative to <reference>?" exactly as the
``spatial_query`` node answers it (``rls3_ros.vlm.answers.answer_query``: per axis the term with
probability >= 0.5), and the answer's term set is compared with the caption oracle's:

- ``exact``: the answer's term set equals the oracle's;
- ``per_term[t]``: among relations whose truth contains t, the fraction answered with t;
- ``per_axis[a]``: the answer's term on axis a (vertical / depth / lateral, "none" included)
  equals the truth's.

Used by ``rls3 bench where`` and by the loop's served-model report.
"""

from __future__ import annotations

from typing import Dict, List, Sequence


def axis_of(terms: Sequence[str]) -> Dict[str, str]:
    from rls3_ros.captions import terms as T

    out = {}
    for name, axis in (("vertical", T.VERTICAL_TERMS), ("depth", T.DEPTH_TERMS), ("lateral", T.LATERAL_TERMS)):
        out[name] = next((t for t in terms if t in axis), "none")
    return out


def score_answers(pairs: Sequence[tuple]) -> Dict[str, object]:
    """pairs: (truth terms, answered terms) per relation -> exact, per_term, per_axis, n."""
    per_term_hit: Dict[str, int] = {}
    per_term_n: Dict[str, int] = {}
    axis_hit = {"vertical": 0, "depth": 0, "lateral": 0}
    exact = 0
    for truth, ans in pairs:
        exact += int(set(truth) == set(ans))
        for t in truth:
            per_term_n[t] = per_term_n.get(t, 0) + 1
            per_term_hit[t] = per_term_hit.get(t, 0) + int(t in ans)
        at, aa = axis_of(truth), axis_of(ans)
        for k in axis_hit:
            axis_hit[k] += int(at[k] == aa[k])
    n = len(pairs)
    return {"n": n, "exact": exact / n if n else float("nan"),
            "per_term": {t: {"accuracy": per_term_hit[t] / per_term_n[t], "n": per_term_n[t]}
                         for t in sorted(per_term_n, key=lambda t: -per_term_n[t])},
            "per_axis": {k: v / n for k, v in axis_hit.items()} if n else {}}


def where_pairs(model, samples) -> List[tuple]:
    from rls3_ros.vlm.answers import QueryRequest, answer_query

    out = []
    for s in samples:
        for r in s.relations:
            ans = answer_query(model, s.image, QueryRequest("where", r.subject_description, r.reference_description))
            if not ans.success:
                raise RuntimeError(f"{s.sample_id}: {ans.message}")
            out.append((list(r.terms), list(ans.terms)))
    return out
