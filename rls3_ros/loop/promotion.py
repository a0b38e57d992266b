"""The promotion gate: a fine-tuned adapter is served only if it beats the served model (pure Python).

"Train what you serve, never serve something worse" (DESIGN.md): after every fine-tune the loop
scores the new adapter on the validation split, relation by relation, and compares it with the
model being served (the base until a first promotion) on the *same* relations. The comparison is
paired: only the discordant relations count, those one model gets right and the other wrong
(``wins``: the candidate right, the served model wrong; ``losses``: the reverse). Under "no
difference" each discordant relation is a fair coin, so the one-sided exact sign (McNemar) test
gives ``p = P(Binomial(wins + losses, 1/2) >= wins)``. The candidate is promoted when it wins more
than it loses and ``p < alpha``; otherwise it stays on disk, logged, and the served model stays.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Sequence

DEFAULT_ALPHA = 0.05


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(X >= wins) for X ~ Binomial(wins + losses, 1/2); 1.0 when no pair differs."""
    n = int(wins) + int(losses)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(int(wins), n + 1))
    return min(1.0, tail / 2 ** n)  # integer division: exact for any n (2.0 ** n overflows past 1023)


def two_sided_sign_test_p(a: int, b: int) -> float:
    """Exact two-sided sign test of ``a`` vs ``b`` discordant pairs: twice the one-sided p of the larger count."""
    return min(1.0, 2.0 * sign_test_p(max(a, b), min(a, b)))


@dataclass
class GateDecision:
    """One gate decision, as the run report and the metrics file list it."""

    iteration: int
    candidate: str  # adapter directory of the candidate
    served_before: str  # what was served when the gate ran ("" = the base model)
    n: int  # paired validation relations
    candidate_accuracy: float
    served_accuracy: float
    wins: int
    losses: int
    p_value: float
    alpha: float
    promoted: bool
    reason: str

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def decide(iteration: int, candidate: str, served_before: str, served_correct: Sequence[bool],
           candidate_correct: Sequence[bool], alpha: float = DEFAULT_ALPHA) -> GateDecision:
    """Compare the candidate's and the served model's per-relation correctness on one split."""
    if len(served_correct) != len(candidate_correct):
        raise ValueError(f"the gate compares the same relations: {len(served_correct)} served vs "
                         f"{len(candidate_correct)} candidate answers")
    n = len(served_correct)
    wins = sum(1 for s, c in zip(served_correct, candidate_correct) if c and not s)
    losses = sum(1 for s, c in zip(served_correct, candidate_correct) if s and not c)
    p = sign_test_p(wins, losses)
    acc_c = sum(map(bool, candidate_correct)) / n if n else float("nan")
    acc_s = sum(map(bool, served_correct)) / n if n else float("nan")
    if n == 0:
        promoted, reason = False, "no validation relations: nothing to compare, nothing promoted"
    elif wins <= losses:
        promoted, reason = False, f"not better: {wins} relations gained, {losses} lost"
    elif p >= alpha:
        promoted, reason = False, f"gain not significant: {wins} gained, {losses} lost, p={p:.3f} >= {alpha}"
    else:
        promoted, reason = True, f"better: {wins} gained, {losses} lost, p={p:.3g} < {alpha}"
    return GateDecision(iteration=int(iteration), candidate=candidate, served_before=served_before, n=n,
                        candidate_accuracy=acc_c, served_accuracy=acc_s, wins=wins, losses=losses, p_value=p,
                        alpha=float(alpha), promoted=promoted, reason=reason)
