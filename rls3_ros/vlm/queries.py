"""Candidate relations and captions for where / check / what queries (pure Python).

Uses the caption oracle's vocabulary (``rls3_ros.captions.terms``): the candidate term sets
are every relation the oracle can state (8 horizontal sectors x {level, above, below}, the
vertical-only "above"/"below", and the support terms "on"/"under"), captions are made with
the oracle's own template (``terms.make_caption``), so a contrastive model is asked exactly what
it was trained on. ``parse_relation`` is the one parser of a relation phrase; captions are parsed
by ``rls3_ros.captions.parse.parse_caption``.
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple

from rls3_ros.captions import terms as T


def candidate_term_sets(include_support: bool = True) -> List[Tuple[str, ...]]:
    """All term sets the oracle can produce, canonical order, no duplicates."""
    out: List[Tuple[str, ...]] = []
    for vert in ("", T.ABOVE, T.BELOW):
        if vert:
            out.append((vert,))
        for sector in T.HORIZONTAL_SECTORS:
            out.append(tuple(T.canonical_terms(([vert] if vert else []) + list(sector))))
    if include_support:
        out += [(T.ON,), (T.UNDER,)]
    return list(dict.fromkeys(out))


def relation_phrase_of(terms: Sequence[str]) -> str:
    """Surface phrase of a term set ("above and to the left of")."""
    return T.relation_phrase(terms)


def candidate_captions(subject: str, reference: str, include_support: bool = True) -> Tuple[List[Tuple[str, ...]], List[str]]:
    sets = candidate_term_sets(include_support)
    return sets, [T.make_caption(subject, ts, reference) for ts in sets]


def term_marginals(term_sets: Sequence[Sequence[str]], probs: Sequence[float]) -> Dict[str, float]:
    """P(term) = total probability of the candidate term sets that contain it (every vocabulary term)."""
    out = {t: 0.0 for t in T.TERMS}
    for ts, p in zip(term_sets, probs):
        for t in ts:
            out[t] = out.get(t, 0.0) + float(p)
    return out


def holds_probability(term_sets: Sequence[Sequence[str]], probs: Sequence[float], asked: Sequence[str]) -> float:
    """Probability that every asked term holds (mass of candidate sets containing all of them)."""
    need = set(asked)
    return float(sum(p for ts, p in zip(term_sets, probs) if need.issubset(ts)))


_PHRASES = sorted(
    [(f, t) for t, f in T.SURFACE_FORMS.items()]
    + [(f, t) for t, f in T.NONFINAL_SURFACE_FORMS.items()]
    + [(t, t) for t in T.TERMS]
    + [("left of", T.LEFT), ("right of", T.RIGHT), ("in front of", T.IN_FRONT), ("on top of", T.ON),
       ("underneath", T.UNDER), ("beneath", T.BELOW), ("over", T.ABOVE), ("front", T.IN_FRONT)],
    key=lambda ft: -len(ft[0]),
)


def parse_relation(relation: str) -> List[str]:
    """Terms of a relation phrase: "left", "to the left of", "above and behind", "in front, left"...

    Raises ValueError if no known term is found or the terms contradict each other.
    """
    text = " " + re.sub(r"[^a-z ]+", " ", relation.lower()) + " "
    text = " ".join(text.split())
    found: List[str] = []
    rest = f" {text} "
    for phrase, term in _PHRASES:
        pat = f" {phrase} "
        while pat in rest:
            found.append(term)
            rest = rest.replace(pat, " | ", 1)
    leftover = [w for w in rest.replace("|", " ").split() if w not in ("and", "to", "the", "of", "is", "a")]
    if not found or leftover:
        raise ValueError(
            f"cannot parse relation {relation!r}; use terms like {', '.join(T.TERMS)} "
            "(combined with 'and')" + (f"; unknown words: {' '.join(leftover)}" if leftover else "")
        )
    return T.canonical_terms(found)
