"""``GroundedVLM``: the SpatialVLM over ``GroundedRelationModel`` (scoring, queries, grounding, adapters).

- ``score``: every candidate caption (the true one + ``relation.negatives``, or the oracle's
  hard negatives) is parsed into (subject, terms, reference) and scored with its own
  subject/reference order, so the swapped negative is a real alternative. Loss = cross-entropy
  of the true caption among the candidates (the RL reward J2), correct = strictly highest.
- ``where`` = per-term marginals; ``check`` = product of the asked terms' axis probabilities;
  ``what`` = candidates ranked by p(relation | candidate, reference).
- training (``fine_tune``, ``train_steps``): ``rls3_ros.vlm.grounded.training``.
"""

from __future__ import annotations

import math
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from rls3_ros.captions import terms as T
from rls3_ros.captions.negatives import candidate_groups
from rls3_ros.core.scene import Sample
from rls3_ros.vlm.feature_cache import FeatureCache, image_key
from rls3_ros.vlm.grounded.axes import AXIS_SLICES, N_OUT, TERM_AXIS, axis_log_probs, term_indices
from rls3_ros.vlm.grounded.config import FAMILY
from rls3_ros.vlm.grounded.model import GroundedRelationModel
from rls3_ros.vlm.grounded.persistence import base_fingerprint
from rls3_ros.vlm.grounded.segments import segment_log_softmax
from rls3_ros.vlm.grounded.training import GroundedTraining, default_lora
from rls3_ros.vlm.interface import RelationScore, SpatialVLM
from rls3_ros.vlm.lora import AdapterHost, HostedAdapter, LoraSettings

UNPARSABLE = -1e4  # log-prob given to a candidate caption that does not parse
POINT_SOURCES = ("peak", "box")
REFIT_HINT = ("serve it with that base (e.g. the RLS3 loop's adapters with model 'grounded', not "
              "'grounded:serving')")


def pixel_box(b: Sequence[float], width: int, height: int) -> Tuple[int, int, int, int]:
    """A box head's (cx, cy, w, h) in image fractions -> (x0, y0, x1, y1) pixels, clipped, at least 1 px."""
    cx, cy, bw, bh = (float(v) for v in b)
    x0 = int(round(min(max((cx - bw / 2) * width, 0.0), width - 1)))
    y0 = int(round(min(max((cy - bh / 2) * height, 0.0), height - 1)))
    x1 = int(round(min(max((cx + bw / 2) * width, x0 + 1), width)))
    y1 = int(round(min(max((cy + bh / 2) * height, y0 + 1), height)))
    return x0, y0, x1, y1


class GroundedVLM(GroundedTraining, HostedAdapter, SpatialVLM):
    """SpatialVLM over ``GroundedRelationModel``; its peft LoRA adapter lives in ``self.host``.

    The model is always called as ``self.base``: peft injects the LoRA layers into the base's own
    modules, so the active adapter (if any) takes part."""

    family = FAMILY

    def __init__(self, model: GroundedRelationModel, lora: Optional[LoraSettings] = None, base_spec: str = "",
                 grounding_weight: float = 0.5, candidate_weight: float = 1.0, seed: int = 0, locator_settings=None,
                 box_weight: float = 1.0, point_source: str = "peak"):
        model.eval()
        # this model's LocatorSettings (locator.json of its directory), or None: the defaults
        self.locator_settings = locator_settings
        # where a located point comes from with a box head: "peak" (attention) or "box" (the box's centre);
        # locator.json says which one hit the object more often for this model (rls3_ros.vlm.locator_fit)
        if point_source not in POINT_SOURCES:
            raise ValueError(f"point_source must be one of {POINT_SOURCES}, got {point_source!r}")
        self.point_source = point_source
        self.box_weight = float(box_weight)
        self.host = AdapterHost(model, lora or default_lora(), self.family, base_spec,
                                base_fingerprint=base_fingerprint(model), refit_hint=REFIT_HINT)
        self.config = model.config
        self.features = FeatureCache.shared(self.config.image_size, self.config.image_stage)
        self.grounding_weight = float(grounding_weight)
        self.candidate_weight = float(candidate_weight)
        # (image key, descriptions, attention logits, boxes or None) of the last axis_probs pass
        # (attention_maps / grounding reuse it)
        self._att_memo: Optional[Tuple[str, List[str], torch.Tensor, Optional[torch.Tensor]]] = None
        self._rng = np.random.default_rng(seed)
        self._parse_cache: Dict[str, Optional[Tuple[str, Tuple[str, ...], str]]] = {}
        self.replay: List[Sample] = []
        self.replay_fraction = 0.0

    @property
    def base(self) -> GroundedRelationModel:
        return self.host.base

    @property
    def lock(self) -> threading.RLock:
        return self.host.lock

    @property
    def lora(self) -> LoraSettings:
        return self.host.lora

    @property
    def base_spec(self) -> str:
        return self.host.base_spec

    @property
    def base_fingerprint(self) -> str:
        return self.host.base_fingerprint

    def unknown_words(self, description: str) -> List[str]:
        """Words outside the vocabulary: they only hash into buckets that pre-training never
        used (its captions name objects with vocabulary words), so they carry no meaning."""
        words = self.base.words(description)
        if not words:  # only articles / punctuation: nothing to ground
            return [description.strip()]
        return [w for w in words if w not in self.base.word_index]

    def vocabulary(self) -> List[str]:
        return list(self.config.vocabulary)

    # -- helpers ------------------------------------------------------------------------------
    def parse(self, caption: str) -> Optional[Tuple[str, Tuple[str, ...], str]]:
        if caption not in self._parse_cache:
            from rls3_ros.captions.parse import try_parse_caption

            r = try_parse_caption(caption)
            if len(self._parse_cache) >= 50000:  # bounded: cleared before the new entry, which is returned
                self._parse_cache.clear()
            self._parse_cache[caption] = None if r is None else (r[0].lower(), tuple(r[1]), r[2].lower())
        return self._parse_cache[caption]

    def _axis_logp(self, feats: torch.Tensor, img: Sequence[int], subj: Sequence[str], ref: Sequence[str],
                   chunk: int = 2048) -> torch.Tensor:
        out = []
        for j in range(0, len(subj), chunk):
            lg, _, _ = self.base(feats, torch.as_tensor(list(img[j: j + chunk]), dtype=torch.long),
                                 subj[j: j + chunk], ref[j: j + chunk])
            out.append(axis_log_probs(lg))
        return torch.cat(out) if out else torch.zeros(0, N_OUT)

    def _candidate_values(self, feats: torch.Tensor, groups: Sequence[Tuple[int, List[str]]],
                          grad: bool = False) -> torch.Tensor:
        """log p(term set | image, subject, reference) of every candidate caption of every group, flat
        (groups' candidates one after the other; ``UNPARSABLE`` for a caption that does not parse)."""
        pairs: Dict[Tuple[int, str, str], int] = {}
        rows, cols = [], []
        for img, caps in groups:
            for c in caps:
                p = self.parse(c)
                if p is None or not p[1]:
                    rows.append(-1)
                    cols.append((0, 5, 8))
                    continue
                k = (img, p[0], p[2])
                if k not in pairs:
                    pairs[k] = len(pairs)
                rows.append(pairs[k])
                cols.append(term_indices(p[1]))
        keys = list(pairs)
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            lp = self._axis_logp(feats, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
            r = torch.tensor(rows, dtype=torch.long)
            v = lp[r.clamp_min(0)].gather(1, torch.tensor(cols, dtype=torch.long)).sum(1) if len(lp) else \
                torch.zeros(len(rows))
            return torch.where(r < 0, torch.full_like(v, UNPARSABLE), v)

    def _candidate_logps(self, feats: torch.Tensor, groups: Sequence[Tuple[int, List[str]]],
                         grad: bool = False) -> List[torch.Tensor]:
        """:meth:`_candidate_values` split per group."""
        return list(torch.split(self._candidate_values(feats, groups, grad), [len(c) for _, c in groups]))

    # -- SpatialVLM -----------------------------------------------------------------------------
    def score(self, samples: Sequence[Sample]) -> List[RelationScore]:
        images, groups, rels = candidate_groups(samples)
        if not groups:
            return []
        with self.lock:
            feats = self.features(images)
            logp, raw = segment_log_softmax(self._candidate_values(feats, groups), [len(c) for _, c in groups])
            best = raw.argmax(1).tolist()
            correct = (raw[:, 0] > raw[:, 1:].max(1).values).tolist() if raw.shape[1] > 1 else [True] * len(groups)
            loss = (-logp[:, 0]).tolist()
            conf = logp[:, 0].exp().tolist()
        return [RelationScore(sample_id=sid, caption=caps[0], terms=list(r.terms), predicted=caps[b], loss=lo,
                              correct=bool(ok), confidence=cf)
                for (sid, r), (_, caps), b, ok, lo, cf in zip(rels, groups, best, correct, loss, conf)]

    def axis_probs(self, image: np.ndarray, pairs: Sequence[Tuple[str, str]]) -> np.ndarray:
        """(N, 11) per-axis probabilities for each (subject, reference) in ``image``.

        The forward pass also grounds every subject and reference; those attention logits are kept
        for the next :meth:`attention_maps` call on the same image and the same descriptions (a
        query answered and then located: ``where`` + ``locate_many`` run one forward pass)."""
        subj, ref = [p[0].lower() for p in pairs], [p[1].lower() for p in pairs]
        with self.lock, torch.no_grad():
            feats = self.features([image])
            if 0 < len(pairs) <= 2048:
                out = self.base(feats, torch.zeros(len(pairs), dtype=torch.long), subj, ref,
                                with_boxes=self.config.box_hidden > 0)
                lp = axis_log_probs(out[0])
                boxes = torch.cat([out[3], out[4]]) if len(out) > 3 else None
                self._att_memo = (image_key(image), subj + ref, torch.cat([out[1], out[2]]), boxes)
            else:
                lp = self._axis_logp(feats, [0] * len(pairs), subj, ref)
        return lp.exp().numpy()

    def where(self, image: np.ndarray, subject: str, reference: str) -> Dict[str, float]:
        p = self.axis_probs(image, [(subject, reference)])[0]
        return {t: float(p[AXIS_SLICES[a][0] + i]) for t, (a, i) in TERM_AXIS.items()}

    def where_caption(self, image: np.ndarray, subject: str, reference: str) -> Tuple[str, List[str], float]:
        """Most probable term set among the oracle's (caption, terms, probability)."""
        from rls3_ros.vlm import queries as Q

        p = self.axis_probs(image, [(subject, reference)])[0]
        best = max(Q.candidate_term_sets(), key=lambda ts: sum(math.log(p[c] + 1e-12) for c in term_indices(ts)))
        prob = float(np.prod([p[c] for c in term_indices(best)]))
        return T.make_caption(subject, best, reference), list(best), prob

    @staticmethod
    def _holds(p: np.ndarray, asked: Sequence[str]) -> float:
        return float(np.prod([p[AXIS_SLICES[TERM_AXIS[t][0]][0] + TERM_AXIS[t][1]] for t in asked]))

    def check(self, image: np.ndarray, subject: str, relation: str, reference: str) -> Tuple[bool, float]:
        from rls3_ros.vlm import queries as Q

        asked = Q.parse_relation(relation)
        prob = self._holds(self.axis_probs(image, [(subject, reference)])[0], asked)
        return prob >= 0.5, prob

    def what(self, image: np.ndarray, relation: str, reference: str, candidates: Sequence[str]) -> List[Tuple[str, float]]:
        from rls3_ros.vlm import queries as Q

        asked = Q.parse_relation(relation)
        cands = [c for c in dict.fromkeys(candidates) if c != reference]
        if not cands:
            return []
        p = self.axis_probs(image, [(c, reference) for c in cands])
        return sorted(((c, self._holds(pi, asked)) for c, pi in zip(cands, p)), key=lambda cp: -cp[1])

    # -- grounding ------------------------------------------------------------------------------
    def grounding(self, image: np.ndarray, descriptions: Sequence[str]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(N, G*G) grounding attention of each description over ``image``'s feature grid (row-major
        y, x), with the active adapter (the same attention the relation head reads), and the box head's
        (N, 4) boxes (centre x, centre y, width, height; fractions of the image), None without a box head."""
        g = self.config.grid
        if not descriptions:
            return np.zeros((0, g * g), np.float32), (np.zeros((0, 4), np.float32) if self.config.box_hidden else None)
        with self.lock, torch.no_grad():
            memo, self._att_memo = self._att_memo, None  # used once: the weights may change after
            if memo is not None and memo[1] == [d.lower() for d in descriptions] and memo[0] == image_key(image):
                # the same logits (and boxes) this pass would compute
                return torch.softmax(memo[2], -1).numpy(), None if memo[3] is None else memo[3].numpy()
            feats = self.features([image]).float()
            keys, values = self.base.keys_values(feats)
            text = self.base.describe([d.lower() for d in descriptions])
            logits, feat, stats = self.base.ground(keys, values, torch.zeros(len(descriptions), dtype=torch.long), text)
            boxes = self.base.boxes(logits, feat, stats).numpy() if self.config.box_hidden > 0 else None
            return torch.softmax(logits, -1).numpy(), boxes

    def attention_maps(self, image: np.ndarray, descriptions: Sequence[str]) -> np.ndarray:
        """(N, G*G) grounding attention of each description (:meth:`grounding` without the boxes)."""
        return self.grounding(image, descriptions)[0]

    def locate_many(self, image: np.ndarray, descriptions: Sequence[str]) -> List:
        """Without a box head: ``grounding.locate_in_attention`` (fixed-size box around the attention peak).
        With one: the head's box, the point from ``point_source`` and the locator's confidence
        (logistic of the attention mass around the peak)."""
        from rls3_ros.vlm import grounding as Gr

        h, w = np.asarray(image).shape[:2]
        settings = self.locator_settings or Gr.DEFAULT_SETTINGS
        maps, boxes = self.grounding(image, list(descriptions))
        if boxes is None:
            return [Gr.locate_in_attention(a, self.config.grid, w, h, settings) for a in maps]
        out = []
        for a, b in zip(maps, boxes):
            loc = Gr.locate_in_attention(a, self.config.grid, w, h, settings)
            box = pixel_box(b, w, h)
            if self.point_source == "box":
                u, v = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
                point = (float(min(max(u, 0.0), w - 1e-3)), float(min(max(v, 0.0), h - 1e-3)))
            else:
                point = loc.point
            out.append(Gr.Location(box, point, loc.confidence))
        return out

    def locate(self, image: np.ndarray, description: str):
        """Box, point and confidence of ``description`` from its attention map (``rls3_ros.vlm.grounding``)."""
        return self.locate_many(image, [description])[0]

    # -- adapters (AdapterHost) ---------------------------------------------------------------------
    # Every weight change drops the attention memo of axis_probs (it holds the old weights' logits).
    def ensure_adapter(self) -> None:
        with self.lock:
            self._att_memo = None
            self.host.ensure_adapter()

    def load_adapter(self, directory: str) -> None:
        with self.lock:
            self._att_memo = None
            self.host.load(directory)
            self._att_memo = None

    def reset_adapter(self) -> None:
        with self.lock:
            self._att_memo = None
            self.host.reset()
