"""The spatial-VLM interface every model family implements (pure Python, no ROS).

The RL reward (J2) comes from ``score``; the scheduler calls ``fine_tune`` and
``evaluate``; the query node calls ``where`` / ``check`` / ``what``.
Relation terms are the caption oracle's vocabulary (``rls3_ros.captions.terms``).
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.core.scene import Sample, SpatialRelation


@dataclass
class RelationScore:
    """How the model did on one captioned relation of one sample."""

    sample_id: str
    caption: str
    terms: List[str]
    predicted: str  # the caption / term set the model chose or generated
    loss: float  # per-relation loss [nats]
    correct: bool
    confidence: float  # probability given to the ground truth [0..1]
    term_score: float = float("nan")  # generative family: Jaccard overlap of answered vs true terms [0..1]


@dataclass
class Evaluation:
    accuracy: float  # fraction of relations answered correctly
    per_term: Dict[str, float]  # term -> accuracy on relations containing that term
    counts: Dict[str, int]  # term -> number of relations containing it
    mean_loss: float
    n: int
    per_term_loss: Dict[str, float] = field(default_factory=dict)  # term -> mean loss of its relations
    per_combo: Dict[str, float] = field(default_factory=dict)  # "above+in front" -> accuracy
    combo_counts: Dict[str, int] = field(default_factory=dict)
    per_combo_loss: Dict[str, float] = field(default_factory=dict)
    # per relation, in scoring order: answered correctly (the promotion gate pairs two models on it)
    correct: List[bool] = field(default_factory=list)


def combo_key(terms: Sequence[str]) -> str:
    """One name per term combination, order-free: ("in front", "above") -> "above+in front"."""
    return "+".join(sorted(terms))


@dataclass
class FineTuneResult:
    steps: int
    samples_used: int
    final_loss: float
    losses: List[float] = field(default_factory=list)
    cancelled: bool = False


# progress(step, total_steps, loss) -> None
ProgressCallback = Callable[[int, int, float], None]


def evaluation_of(scores: Sequence[RelationScore]) -> Evaluation:
    """Accuracy overall and per term, and the mean loss, of relation scores."""
    per_hits: Dict[str, int] = {}
    per_n: Dict[str, int] = {}
    per_loss: Dict[str, float] = {}
    c_hits: Dict[str, int] = {}
    c_n: Dict[str, int] = {}
    c_loss: Dict[str, float] = {}
    for s in scores:
        for t in s.terms:
            per_n[t] = per_n.get(t, 0) + 1
            per_hits[t] = per_hits.get(t, 0) + int(s.correct)
            per_loss[t] = per_loss.get(t, 0.0) + float(s.loss)
        c = combo_key(s.terms)
        c_n[c] = c_n.get(c, 0) + 1
        c_hits[c] = c_hits.get(c, 0) + int(s.correct)
        c_loss[c] = c_loss.get(c, 0.0) + float(s.loss)
    n = len(scores)
    return Evaluation(
        accuracy=float(np.mean([s.correct for s in scores])) if n else float("nan"),
        per_term={t: per_hits[t] / per_n[t] for t in per_n},
        counts=per_n,
        mean_loss=float(np.mean([s.loss for s in scores])) if n else float("nan"),
        n=n,
        per_term_loss={t: per_loss[t] / per_n[t] for t in per_n},
        per_combo={c: c_hits[c] / c_n[c] for c in c_n},
        combo_counts=c_n,
        per_combo_loss={c: c_loss[c] / c_n[c] for c in c_n},
        correct=[bool(s.correct) for s in scores],
    )


class SpatialVLM(abc.ABC):
    """A vision-language model that can be scored, fine-tuned (LoRA) and queried."""

    family: str = "abstract"  # "contrastive" | "generative"

    @abc.abstractmethod
    def score(self, samples: Sequence[Sample]) -> List[RelationScore]:
        """Score every relation of every sample (in order)."""

    def evaluate(self, samples: Sequence[Sample]) -> Evaluation:
        """Accuracy overall and per term over all relations of ``samples``."""
        return evaluation_of(self.score(samples))

    @abc.abstractmethod
    def fine_tune(
        self,
        samples: Sequence[Sample],
        steps: int,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[threading.Event] = None,
    ) -> FineTuneResult:
        """LoRA fine-tuning on the relations of ``samples`` (adds an adapter if none is active)."""

    @abc.abstractmethod
    def where(self, image: np.ndarray, subject: str, reference: str) -> Dict[str, float]:
        """Probability of each relation term for 'subject relative to reference' in ``image``."""

    @abc.abstractmethod
    def check(self, image: np.ndarray, subject: str, relation: str, reference: str) -> Tuple[bool, float]:
        """Does 'subject is <relation> reference' hold in ``image``? -> (holds, probability)."""

    @abc.abstractmethod
    def what(
        self, image: np.ndarray, relation: str, reference: str, candidates: Sequence[str]
    ) -> List[Tuple[str, float]]:
        """Rank ``candidates`` for 'what is <relation> reference?', best first, with scores in [0, 1]."""

    def unknown_words(self, description: str) -> List[str]:
        """Words of an object description this model has never learnt (it cannot ground them).

        Default ``[]``: a model that embeds any text. A query without a scene state to check
        names against is refused when this is not empty."""
        return []

    def vocabulary(self) -> List[str]:
        """The words this model knows for object descriptions ([] = any text; for messages)."""
        return []

    def locate(self, image: np.ndarray, description: str):
        """Where is the object described by ``description`` in ``image``, by the model's own grounding?
        -> ``rls3_ros.vlm.grounding.Location`` (box (x0, y0, x1, y1) [px], point (u, v) [px],
        confidence [0..1]), or None when the model does not ground descriptions (the default)."""
        return None

    def locate_many(self, image: np.ndarray, descriptions: Sequence[str]) -> List:
        """``locate`` for several descriptions in one image (models may batch it)."""
        return [self.locate(image, d) for d in descriptions]

    @abc.abstractmethod
    def save_adapter(self, directory: str) -> str:
        """Save the active LoRA adapter in standard peft format (atomically); return the directory."""

    @abc.abstractmethod
    def load_adapter(self, directory: str) -> None:
        """Activate the adapter saved in ``directory`` (raises ValueError with a reason if unusable)."""

    @abc.abstractmethod
    def reset_adapter(self) -> None:
        """Back to the base model (drop the active adapter)."""

    def ensure_adapter(self) -> None:
        """Build now the fresh LoRA adapter the next ``fine_tune`` would build (no-op if one is active).

        Building layers draws their initial weights from torch's process-wide generator, which
        other threads (the SAC agent's sampling) draw from too: a caller that fine-tunes in a
        thread calls this first, so those draws keep their order. Default: nothing (a model that
        builds no layers when it first fine-tunes)."""

    @property
    def adapter(self) -> str:
        """Directory of the active adapter ("" = base model)."""
        return getattr(self, "_adapter_path", "")


def relation_terms(rel: SpatialRelation) -> List[str]:
    return list(rel.terms)
