"""Spatial-term vocabulary of the caption oracle (paper section 2, plus "on"/"under").

A relation's terms describe the subject A relative to the reference B
("The A is <terms> the B."). Terms are kept in a canonical order:
vertical first, then front/behind, then left/right.

Horizontal sectors (paper figure): centred on A, 8 sectors of the camera-aligned ground
plane, named by the terms A gets when B lies in that sector. ``HORIZONTAL_SECTORS[k]`` is
centred on the bearing ``180 - 45 k`` degrees of B seen from A (0 = toward the camera,
+90 = image right): k = 0 means B lies away from the camera, so A is "in front" of B;
k = 4 means B lies toward the camera, so A is "behind" B ("behind" faces the camera).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

LEFT = "left"
RIGHT = "right"
IN_FRONT = "in front"
BEHIND = "behind"
ABOVE = "above"
BELOW = "below"
ON = "on"  # extension: A rests on B (ObjectState.supported_by == B.id)
UNDER = "under"  # extension: B rests on A

PAPER_TERMS: Tuple[str, ...] = (LEFT, RIGHT, IN_FRONT, BEHIND, ABOVE, BELOW)
EXTENSION_TERMS: Tuple[str, ...] = (ON, UNDER)
TERMS: Tuple[str, ...] = PAPER_TERMS + EXTENSION_TERMS

VERTICAL_TERMS: Tuple[str, ...] = (ABOVE, BELOW, ON, UNDER)
DEPTH_TERMS: Tuple[str, ...] = (IN_FRONT, BEHIND)
LATERAL_TERMS: Tuple[str, ...] = (LEFT, RIGHT)
HORIZONTAL_TERMS: Tuple[str, ...] = DEPTH_TERMS + LATERAL_TERMS

# Sector k is centred on bearing (180 - 45 k) deg of B seen from A (see module docstring).
HORIZONTAL_SECTORS: Tuple[Tuple[str, ...], ...] = (
    (IN_FRONT,),
    (IN_FRONT, LEFT),
    (LEFT,),
    (BEHIND, LEFT),
    (BEHIND,),
    (BEHIND, RIGHT),
    (RIGHT,),
    (IN_FRONT, RIGHT),
)
SECTOR_NAMES: Tuple[str, ...] = tuple(" and ".join(s) for s in HORIZONTAL_SECTORS)
VERTICAL_BANDS: Tuple[str, ...] = (ABOVE, "", BELOW)

# Natural surface form of each term when it is the last one before the reference.
SURFACE_FORMS: Dict[str, str] = {
    LEFT: "to the left of",
    RIGHT: "to the right of",
    IN_FRONT: "in front of",
    BEHIND: "behind",
    ABOVE: "above",
    BELOW: "below",
    ON: "on",
    UNDER: "under",
}
# Surface form when another term follows ("in front and to the left of", as in the
# paper's sector label "in front and left"). Only "in front" changes.
NONFINAL_SURFACE_FORMS: Dict[str, str] = dict(SURFACE_FORMS, **{IN_FRONT: "in front"})

# The term B gets relative to A when A has the key term relative to B.
INVERSE: Dict[str, str] = {
    LEFT: RIGHT,
    RIGHT: LEFT,
    IN_FRONT: BEHIND,
    BEHIND: IN_FRONT,
    ABOVE: BELOW,
    BELOW: ABOVE,
    ON: UNDER,
    UNDER: ON,
}
# Opposite term used to build hard negatives (same as INVERSE for this vocabulary).
FLIP: Dict[str, str] = dict(INVERSE)

_ORDER = {t: i for i, t in enumerate((ABOVE, BELOW, ON, UNDER, IN_FRONT, BEHIND, LEFT, RIGHT))}


def canonical_terms(terms: Iterable[str]) -> List[str]:
    """Terms deduplicated and sorted into canonical order (vertical, depth, lateral).

    Raises ValueError on an unknown term or on contradictory terms (two of one axis).
    """
    out: List[str] = []
    for t in terms:
        if t not in _ORDER:
            raise ValueError(f"unknown spatial term {t!r}; known: {', '.join(TERMS)}")
        if t not in out:
            out.append(t)
    for axis in (VERTICAL_TERMS, DEPTH_TERMS, LATERAL_TERMS):
        if sum(t in axis for t in out) > 1:
            raise ValueError(f"contradictory terms {out!r}")
    return sorted(out, key=_ORDER.__getitem__)


def inverse_terms(terms: Sequence[str]) -> List[str]:
    """Terms of B relative to A, given the terms of A relative to B."""
    return canonical_terms(INVERSE[t] for t in terms)


def relation_phrase(terms: Sequence[str]) -> str:
    """Surface phrase of 1-3 terms, e.g. "above, behind and to the left of"."""
    ts = canonical_terms(terms)
    if not ts:
        raise ValueError("a relation needs at least one term")
    words = [NONFINAL_SURFACE_FORMS[t] for t in ts[:-1]] + [SURFACE_FORMS[ts[-1]]]
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def make_caption(subject_description: str, terms: Sequence[str], reference_description: str) -> str:
    """Paper template "The [A] is [vertical] and [horizontal] [B]." with natural surface forms."""
    return f"The {subject_description} is {relation_phrase(terms)} the {reference_description}."
