"""Parse captions (ours, or a generative VLM's answers) back into (subject, terms, reference).

Accepted: the oracle's template "The A is <phrase> the B." and lenient variants a model
may produce: any case, extra spaces, missing "The"/"the"/final period, "of" present or
not, "on the left of" / "left of" / "to the left side of", "beneath", "underneath",
"on top of", terms joined by commas and/or "and". Terms come back in canonical order.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from rls3_ros.captions import terms as T


class CaptionParseError(ValueError):
    """Text is not a caption of the form "The A is <terms> the B."."""


# Order matters: longer / more specific forms first ("on the left" before "on").
_TERM_PATTERNS: List[Tuple[str, re.Pattern]] = [
    (T.LEFT, re.compile(r"(?:to|on|at)\s+the\s+left(?:\s+side)?(?:\s+of)?|left(?:\s+of)?")),
    (T.RIGHT, re.compile(r"(?:to|on|at)\s+the\s+right(?:\s+side)?(?:\s+of)?|right(?:\s+of)?")),
    (T.IN_FRONT, re.compile(r"in\s+front(?:\s+of)?")),
    (T.BEHIND, re.compile(r"behind")),
    (T.ABOVE, re.compile(r"above")),
    (T.BELOW, re.compile(r"below|beneath")),
    (T.ON, re.compile(r"on\s+top\s+of|on(?:to)?")),
    (T.UNDER, re.compile(r"underneath|under")),
]
_SEP = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+")
_WORD_END = re.compile(r"(?=\s|,|\.|$)")


def _match_term(text: str, pos: int) -> Optional[Tuple[str, int]]:
    for term, pat in _TERM_PATTERNS:
        m = pat.match(text, pos)
        if m and _WORD_END.match(text, m.end()):
            return term, m.end()
    return None


def _parse_phrase(text: str) -> Optional[Tuple[List[str], str]]:
    """Terms at the start of ``text`` and the rest (the reference), or None."""
    found: List[str] = []
    pos = 0
    while True:
        hit = _match_term(text, pos)
        if hit is None:
            return None if not found else (found, text[pos:])
        term, end = hit
        found.append(term)
        sep = _SEP.match(text, end)
        if sep and _match_term(text, sep.end()):
            pos = sep.end()
            continue
        return found, text[end:]


def _clean_desc(s: str) -> str:
    s = s.strip().rstrip(".!").strip()
    s = re.sub(r"^(?:the|a|an)\s+", "", s, flags=re.I)
    return " ".join(s.split())


def parse_caption(text: str) -> Tuple[str, List[str], str]:
    """(subject_description, terms, reference_description) of a caption.

    Raises CaptionParseError if no "<A> is <terms> <B>" reading exists or the terms
    contradict each other.
    """
    s = " ".join(str(text).strip().split())
    low = s.lower()
    for m in re.finditer(r"\s(?:is|are)\s+(?:located\s+|positioned\s+|placed\s+|situated\s+)?", low):
        subject = _clean_desc(s[: m.start()])
        if not subject:
            continue
        parsed = _parse_phrase(low[m.end():])
        if parsed is None:
            continue
        found, rest_low = parsed
        reference = _clean_desc(s[len(s) - len(rest_low):])
        if not reference:
            continue
        try:
            terms = T.canonical_terms(found)
        except ValueError as e:
            raise CaptionParseError(f"{text!r}: {e}") from None
        return subject, terms, reference
    raise CaptionParseError(f"not a spatial caption: {text!r}")


def try_parse_caption(text: str) -> Optional[Tuple[str, List[str], str]]:
    """``parse_caption`` that returns None instead of raising."""
    try:
        return parse_caption(text)
    except CaptionParseError:
        return None


def extract_terms(text: str) -> List[str]:
    """Lenient: canonical terms mentioned anywhere in ``text`` (e.g. a bare VLM answer
    "above and to the left"); contradictory mentions keep the first of each axis."""
    low = " " + " ".join(str(text).lower().split()) + " "
    hits = []
    pos = 0
    while pos < len(low):
        if pos == 0 or not low[pos - 1].isalnum():
            hit = _match_term(low, pos)
            if hit:
                hits.append((pos, hit[0]))
                pos = hit[1]
                continue
        pos += 1
    out: List[str] = []
    for _, t in hits:
        axis = next(a for a in (T.VERTICAL_TERMS, T.DEPTH_TERMS, T.LATERAL_TERMS) if t in a)
        if not any(x in axis for x in out):
            out.append(t)
    return T.canonical_terms(out)
