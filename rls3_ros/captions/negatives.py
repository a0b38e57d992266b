"""Hard-negative captions per relation (contrastive training, multiple-choice evaluation).

``relation_candidates`` is the multiple-choice set every model scores a relation against: the
true caption first, then the negatives.

For a relation "The A is <terms> the B." the negatives are, in this order:
1. subject/reference swapped with the same terms ("The B is <terms> the A.");
2. each term flipped to its opposite, one at a time (``terms.FLIP``);
3. all terms flipped at once (only when there are 2-3 terms; with 1 term it equals 2.).
They are deduplicated and never equal a true description of the pair: neither the
caption itself nor its inverse "The B is <inverse terms> the A." (compared on parsed
(subject, term set, reference), not only on text).
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

from rls3_ros.captions import terms as T
from rls3_ros.core.scene import SpatialRelation

Triple = Tuple[str, Tuple[str, ...], str]


def _norm(subject: str, terms: Sequence[str], reference: str) -> Tuple[str, frozenset, str]:
    return (" ".join(subject.lower().split()), frozenset(terms), " ".join(reference.lower().split()))


def negative_triples(subject: str, terms: Sequence[str], reference: str) -> List[Triple]:
    """(subject, terms, reference) of each hard negative, deduplicated, truth excluded."""
    ts = T.canonical_terms(terms)
    cands: List[Triple] = [(reference, tuple(ts), subject)]
    for i, t in enumerate(ts):
        flipped = list(ts)
        flipped[i] = T.FLIP[t]
        cands.append((subject, tuple(T.canonical_terms(flipped)), reference))
    if len(ts) > 1:
        cands.append((subject, tuple(T.canonical_terms(T.FLIP[t] for t in ts)), reference))
    truth = {_norm(subject, ts, reference), _norm(reference, T.inverse_terms(ts), subject)}
    seen = set(truth)
    out: List[Triple] = []
    for c in cands:
        k = _norm(*c)
        if k in seen:
            continue
        seen.add(k)
        out.append(c)
    return out


def hard_negatives(rel: SpatialRelation) -> List[str]:
    """Hard-negative captions of ``rel`` (see module docstring)."""
    return [T.make_caption(s, ts, r) for s, ts, r in negative_triples(rel.subject_description, rel.terms, rel.reference_description)]


def relation_candidates(rel: SpatialRelation) -> List[str]:
    """[true caption] + negatives (the oracle's hard negatives if the relation carries none)."""
    caption = rel.caption or T.make_caption(rel.subject_description, rel.terms, rel.reference_description)
    negs = list(rel.negatives) or hard_negatives(rel)
    return [caption] + [n for n in negs if n != caption]



def candidate_groups(samples) -> Tuple[List[Any], List[Tuple[int, List[str]]], List[Tuple[str, SpatialRelation]]]:
    """What a model scores for ``samples``: the images that have relations, one group per relation
    (image index, :func:`relation_candidates`) and the (sample id, relation) each group belongs to."""
    images: List[Any] = []
    groups: List[Tuple[int, List[str]]] = []
    rels: List[Tuple[str, SpatialRelation]] = []
    for s in samples:
        if not s.relations:
            continue
        images.append(s.image)
        for r in s.relations:
            groups.append((len(images) - 1, relation_candidates(r)))
            rels.append((s.sample_id, r))
    return images, groups, rels
