"""The words a text-grounding model embeds explicitly: the simulator's colours and category nouns."""

from __future__ import annotations

from typing import List


def default_vocabulary() -> List[str]:
    """Colour words and category nouns of the MuJoCo object catalogue (lower case, unique)."""
    words: List[str] = []
    try:
        from rls3_ros.sim import objects as O

        words += list(O.COLORS)
        for name, cat in O.CATEGORIES.items():
            words += str(name).replace("_", " ").split()
            words += str(getattr(cat, "noun", "") or "").split()
    except Exception:  # noqa: BLE001 - the vocabulary only seeds embeddings; hashing covers the rest
        pass
    return sorted({w.lower() for w in words if w})
