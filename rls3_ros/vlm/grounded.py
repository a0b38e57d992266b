"""Grounded spatial VLM: find A and B in the image by their descriptions, then classify the relation.

Why this model exists: the embedded fusion model (``embedded.py`` + ``contrastive.py``) scores
(image, caption) pairs end-to-end and, in a few CPU minutes, learns which objects go with which
captions but not *where* the subject and the reference are; on held-out scenes it is at or below
chance (models/README.md). This model makes the binding explicit:

1. frozen ImageNet EfficientNet-Lite0 stride-16 features (160 px -> 10 x 10 grid, 112 channels,
   cached per image by content hash) + a learned 2D position embedding;
2. each object description ("red mug") -> bag of word embeddings (explicit vocabulary of the
   simulator's colours and category nouns, hashed buckets for other words) -> ``q_proj`` query;
   dot with ``k_proj`` grid keys -> softmax attention over the grid -> attended ``v_proj``
   feature, expected (x, y) position (soft-argmax) and spread (size proxy) for A and for B.
   When the simulator's 2D boxes are known (pretraining, fine-tuning on RL samples) the
   attention map is also supervised towards the object's box cells;
3. relation head ``fc1`` -> ``fc2`` -> ``out_proj`` on [feat_A, feat_B, pos_A, pos_B,
   pos_B - pos_A, spread_A, spread_B] -> independent softmaxes over three axes:
   vertical {none, above, below, on, under}, depth {none, in front, behind},
   lateral {none, left, right}. log p(term set | image, A, B) = sum of the axis log-probs.

SpatialVLM semantics:
- ``score``: every candidate caption (the true one + ``relation.negatives``, or the oracle's
  hard negatives) is parsed into (subject, terms, reference) and scored with its own
  subject/reference order, so the swapped negative is a real alternative. Loss = cross-entropy
  of the true caption among the candidates (the RL reward J2), correct = strictly highest.
- ``where`` = per-term marginals; ``check`` = product of the asked terms' axis probabilities;
  ``what`` = candidates ranked by p(relation | candidate, reference).
- LoRA (peft) on ``q_proj``, ``k_proj``, ``v_proj``, ``fc1``, ``fc2``; adapters saved atomically in
  standard peft format (``PeftModel.from_pretrained(GroundedRelationModel(...), dir)`` loads them).

Use: ``py:rls3_ros.vlm.grounded:load`` (optionally ``:<model dir>``), e.g.
``rls3 train --set run.vlm=py:rls3_ros.vlm.grounded:load``. Build the base with
``python -m rls3_ros.vlm.grounded_pretrain`` (see ``grounded_pretrain.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rls3_ros.captions import terms as T
from rls3_ros.core.scene import Sample, SpatialRelation
from rls3_ros.vlm.feature_cache import FeatureCache, image_key
from rls3_ros.vlm.interface import FineTuneResult, ProgressCallback, RelationScore, SpatialVLM
from rls3_ros.vlm.lora import ADAPTER_META, AdapterHost, HostedAdapter, LoraSettings  # noqa: F401 (ADAPTER_META re-exported)
from rls3_ros.vlm.model_dirs import default_dirs as model_dirs
from rls3_ros.vlm.vocabulary import default_vocabulary

FAMILY = "grounded"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"

# Axes of the relation head (index 0 = no term on that axis).
VERTICAL = ("", T.ABOVE, T.BELOW, T.ON, T.UNDER)
DEPTH = ("", T.IN_FRONT, T.BEHIND)
LATERAL = ("", T.LEFT, T.RIGHT)
AXES = (VERTICAL, DEPTH, LATERAL)
AXIS_SLICES = ((0, 5), (5, 8), (8, 11))
N_OUT = 11
_TERM_AXIS = {t: (a, i) for a, ax in enumerate(AXES) for i, t in enumerate(ax) if t}
UNPARSABLE = -1e4  # log-prob given to a candidate caption that does not parse
DENSE_GROUND_MAX = 8192  # queries x images up to which grounding scores every query against every image


@dataclass
class GroundedConfig:
    image_size: int = 160
    image_stage: str = "stride16"
    feat_channels: int = 112
    grid: int = 10
    dim: int = 64  # attention / feature width
    word_dim: int = 48
    hidden: int = 128
    hash_buckets: int = 64
    vocabulary: List[str] = field(default_factory=default_vocabulary)

    def __post_init__(self) -> None:
        # the grid is what the frozen encoder gives at this image size ("same" padding): never free
        stride = {"stride8": 8, "stride16": 16, "stride32": 32}.get(self.image_stage, 16)
        self.grid = -(-int(self.image_size) // stride)

    def to_json(self) -> str:
        return json.dumps(dict(asdict(self), family=FAMILY), indent=1)

    @staticmethod
    def from_dict(d: Dict) -> "GroundedConfig":
        d = {k: v for k, v in d.items() if k in GroundedConfig.__dataclass_fields__}
        return GroundedConfig(**d)


class GroundedRelationModel(nn.Module):
    """Description-grounded attention over a frozen feature grid + a relation head (~70 k params)."""

    def __init__(self, config: GroundedConfig):
        super().__init__()
        self.config = config
        c, d, g = config.feat_channels, config.dim, config.grid
        self.word_index = {w: i for i, w in enumerate(config.vocabulary)}
        self.word_emb = nn.Embedding(len(config.vocabulary) + config.hash_buckets + 1, config.word_dim)
        self.feat_norm = nn.LayerNorm(c)
        self.pos_emb = nn.Parameter(torch.zeros(g * g, d))
        self.q_proj = nn.Linear(config.word_dim, d)
        self.k_proj = nn.Linear(c, d)
        self.v_proj = nn.Linear(c, d)
        self.fc1 = nn.Linear(2 * d + 10, config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.hidden)
        self.out_proj = nn.Linear(config.hidden, N_OUT)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, g), torch.linspace(-1, 1, g), indexing="ij")
        self.register_buffer("coords", torch.stack([xs.reshape(-1), ys.reshape(-1)], 1), persistent=False)
        nn.init.normal_(self.pos_emb, std=0.3)
        nn.init.normal_(self.word_emb.weight, std=1.0)

    # -- text -----------------------------------------------------------------------------
    @staticmethod
    def words(description: str) -> List[str]:
        """The words of a description the model embeds (lower case, no punctuation or articles)."""
        out = []
        for w in description.lower().replace("-", " ").split():
            w = w.strip(".,;:!?\"'")
            if w and w not in ("the", "a", "an"):
                out.append(w)
        return out

    def word_ids(self, description: str) -> List[int]:
        ids = []
        nv = len(self.config.vocabulary)
        for w in self.words(description):
            i = self.word_index.get(w)
            ids.append(i if i is not None else nv + zlib.crc32(w.encode()) % self.config.hash_buckets)
        return ids or [nv + self.config.hash_buckets]

    def describe(self, descriptions: Sequence[str]) -> torch.Tensor:
        """(N, word_dim) mean word embedding of each description."""
        ids, offsets = [], []
        for dsc in descriptions:
            offsets.append(len(ids))
            ids += self.word_ids(dsc)
        dev = self.word_emb.weight.device
        return F.embedding_bag(torch.tensor(ids, device=dev), self.word_emb.weight,
                               torch.tensor(offsets, device=dev), mode="mean")

    # -- grounding ------------------------------------------------------------------------
    def keys_values(self, feats: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """feats (B, C, G, G) -> keys (B, G*G, d) with position, values (B, G*G, d)."""
        x = self.feat_norm(feats.float().flatten(2).transpose(1, 2))
        return self.k_proj(x) + self.pos_emb, self.v_proj(x)

    def ground(self, keys: torch.Tensor, values: torch.Tensor, img: torch.Tensor, text: torch.Tensor):
        """Attention of each query text (N, word_dim) over its image ``img`` (N,) -> (attn logits, feat, stats)."""
        q = self.q_proj(text)  # (N, d)
        b, k, d = keys.shape
        if len(q) * b <= DENSE_GROUND_MAX:
            # few images (a training batch): every query against every image's keys in one matmul, its own
            # image's block picked out; backward is two matmuls instead of a scatter into (N, G*G, d)
            pick = F.one_hot(img, b).to(q.dtype)  # (N, B)
            logits = ((q @ keys.reshape(b * k, d).T).view(-1, b, k) * pick[:, :, None]).sum(1) / math.sqrt(d)
            a = torch.softmax(logits, -1)
            feat = (a[:, None, :] * pick[:, :, None]).reshape(-1, b * k) @ values.reshape(b * k, d)
        else:
            logits = torch.einsum("nkd,nd->nk", keys[img], q) / math.sqrt(d)
            a = torch.softmax(logits, -1)
            feat = torch.einsum("nk,nkd->nd", a, values[img])
        pos = a @ self.coords
        spread = (a @ self.coords.pow(2) - pos.pow(2)).clamp_min(0).add(1e-4).sqrt()
        return logits, feat, torch.cat([pos, spread], 1)

    def forward(self, feats: torch.Tensor, img: torch.Tensor, subj: Sequence[str], ref: Sequence[str]):
        """Axis logits (N, 11) for subject ``subj[i]`` relative to ``ref[i]`` in image ``img[i]``,
        plus the grounding attention logits of subjects and references (N, G*G) each."""
        keys, values = self.keys_values(feats)
        text = self.describe(list(subj) + list(ref))
        n = len(subj)
        img2 = torch.cat([img, img])
        att, feat, stats = self.ground(keys, values, img2, text)
        fa, fb, sa, sb = feat[:n], feat[n:], stats[:n], stats[n:]
        x = torch.cat([fa, fb, sa[:, :2], sb[:, :2], sb[:, :2] - sa[:, :2], sa[:, 2:], sb[:, 2:]], 1)
        h = F.gelu(self.fc1(x))
        h = F.gelu(self.fc2(h)) + h
        return self.out_proj(h), att[:n], att[n:]


def axis_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """(N, 11) logits -> per-axis log-softmax, same layout."""
    return torch.cat([torch.log_softmax(logits[:, a:b], -1) for a, b in AXIS_SLICES], 1)


def term_indices(terms: Sequence[str]) -> Tuple[int, int, int]:
    """Column (in the 11-wide layout) of each axis' class for a term set."""
    cls = [0, 0, 0]
    for t in terms:
        a, i = _TERM_AXIS[t]
        cls[a] = i
    return tuple(AXIS_SLICES[a][0] + cls[a] for a in range(3))  # type: ignore[return-value]


def relation_candidates(rel: SpatialRelation) -> List[str]:
    """[true caption] + negatives (the oracle's hard negatives if the relation carries none)."""
    caption = rel.caption or T.make_caption(rel.subject_description, rel.terms, rel.reference_description)
    negs = list(rel.negatives)
    if not negs:
        from rls3_ros.captions.negatives import hard_negatives

        negs = hard_negatives(rel)
    return [caption] + [n for n in negs if n != caption]


def box_target(bbox, width: int, height: int, grid: int) -> Optional[np.ndarray]:
    """Uniform distribution over the grid cells whose centres fall in ``bbox`` (pixels); None if no box."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    if x1 <= x0 or y1 <= y0 or width <= 0 or height <= 0:
        return None
    centres = (np.arange(grid) + 0.5) / grid
    cx = (centres >= x0 / width) & (centres <= x1 / width)
    cy = (centres >= y0 / height) & (centres <= y1 / height)
    m = np.outer(cy, cx).astype(np.float32)
    if m.sum() == 0:  # box smaller than a cell: its nearest cell
        i = min(grid - 1, int((y0 + y1) / 2 / height * grid))
        j = min(grid - 1, int((x0 + x1) / 2 / width * grid))
        m[i, j] = 1.0
    return (m / m.sum()).reshape(-1)


def default_lora(**overrides) -> LoraSettings:
    """The grounded model's LoRA settings (``overrides``: any ``LoraSettings`` field)."""
    d = dict(
        # out_proj too: the base never saw the rare terms, so their output rows must move
        target_modules=["q_proj", "k_proj", "v_proj", "fc1", "fc2", "out_proj"],
        # 3e-3: on 240 natural-distribution samples (10 fine-tunes x 20 steps) held-out 0.41 -> 0.72;
        # 1e-3 -> 0.45 (too slow); 1e-2 -> 0.73 but flat after 100 samples (models/grounded/README.md)
        learning_rate=3e-3, batch_size=32)
    d.update(overrides)
    return LoraSettings(**d)


REFIT_HINT = ("serve it with that base (e.g. the RLS3 loop's adapters with model 'grounded', not "
              "'grounded:serving')")


class TrainItem:
    """One relation prepared for training: image index, candidate (subj, terms, ref) list, the axis
    columns of the true term set (``true_cols``), of its inverse (``inv_cols``) and of every candidate
    (``cand_cols``, (K, 3)), box targets."""

    __slots__ = ("img", "cands", "true_cols", "inv_cols", "cand_cols", "subj", "ref", "tgt_s", "tgt_r")

    def __init__(self, img, cands, true_cols, subj, ref, tgt_s, tgt_r):
        self.img, self.cands, self.true_cols, self.subj, self.ref = img, cands, true_cols, subj, ref
        self.tgt_s, self.tgt_r = tgt_s, tgt_r
        self.inv_cols = term_indices(T.inverse_terms([t for t in map(term_of_column, true_cols) if t]))
        self.cand_cols = np.array([term_indices(c[1]) for c in cands], dtype=np.int64).reshape(-1, 3)


def term_of_column(col: int) -> str:
    """The term of a column of the 11-wide axis layout ('' for an axis' "none" class)."""
    for a, (lo, hi) in enumerate(AXIS_SLICES):
        if lo <= col < hi:
            return AXES[a][col - lo]
    return ""


def padded_segments(counts: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``len(counts)`` consecutive segments of a flat vector as a padded (R, K) index into it
    and its mask (K = the longest segment): a per-segment softmax becomes one batched op."""
    c = np.asarray(counts, dtype=np.int64)
    k = int(c.max()) if len(c) else 0
    cols = np.arange(k)
    mask = cols[None, :] < c[:, None]
    index = np.where(mask, (np.cumsum(c) - c)[:, None] + cols[None, :], 0)
    return torch.from_numpy(index), torch.from_numpy(mask)


def segment_log_softmax(values: torch.Tensor, counts: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """log-softmax within each segment of the flat ``values`` -> padded (R, K) log-probs (-inf where
    padded) and the padded raw values (-inf where padded)."""
    index, mask = padded_segments(counts)
    raw = values[index].masked_fill(~mask, float("-inf"))
    return torch.log_softmax(raw, 1), raw


class GroundedVLM(HostedAdapter, SpatialVLM):
    """SpatialVLM over ``GroundedRelationModel``; its peft LoRA adapter lives in ``self.host``.

    The model is always called as ``self.base``: peft injects the LoRA layers into the base's own
    modules, so the active adapter (if any) takes part."""

    family = FAMILY

    def __init__(self, model: GroundedRelationModel, lora: Optional[LoraSettings] = None, base_spec: str = "",
                 grounding_weight: float = 0.5, candidate_weight: float = 1.0, seed: int = 0):
        model.eval()
        self.host = AdapterHost(model, lora or default_lora(), self.family, base_spec,
                                base_fingerprint=base_fingerprint(model), refit_hint=REFIT_HINT)
        self.config = model.config
        self.features = FeatureCache.shared(self.config.image_size, self.config.image_stage)
        self.grounding_weight = float(grounding_weight)
        self.candidate_weight = float(candidate_weight)
        # (image key, descriptions, attention logits) of the last axis_probs pass (attention_maps reuses it)
        self._att_memo: Optional[Tuple[str, List[str], torch.Tensor]] = None
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
            self._parse_cache[caption] = None if r is None else (r[0].lower(), tuple(r[1]), r[2].lower())
            if len(self._parse_cache) > 50000:
                self._parse_cache.clear()
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
        images, groups, rels = [], [], []
        for s in samples:
            if not s.relations:
                continue
            images.append(s.image)
            for r in s.relations:
                groups.append((len(images) - 1, relation_candidates(r)))
                rels.append((s.sample_id, r))
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
                lg, att_s, att_r = self.base(feats, torch.zeros(len(pairs), dtype=torch.long), subj, ref)
                lp = axis_log_probs(lg)
                self._att_memo = (image_key(image), subj + ref, torch.cat([att_s, att_r]))
            else:
                lp = self._axis_logp(feats, [0] * len(pairs), subj, ref)
        return lp.exp().numpy()

    def where(self, image: np.ndarray, subject: str, reference: str) -> Dict[str, float]:
        p = self.axis_probs(image, [(subject, reference)])[0]
        return {t: float(p[AXIS_SLICES[a][0] + i]) for t, (a, i) in _TERM_AXIS.items()}

    def where_caption(self, image: np.ndarray, subject: str, reference: str) -> Tuple[str, List[str], float]:
        """Most probable term set among the oracle's (caption, terms, probability)."""
        from rls3_ros.vlm import queries as Q

        p = self.axis_probs(image, [(subject, reference)])[0]
        best = max(Q.candidate_term_sets(), key=lambda ts: sum(math.log(p[c] + 1e-12) for c in term_indices(ts)))
        prob = float(np.prod([p[c] for c in term_indices(best)]))
        return T.make_caption(subject, best, reference), list(best), prob

    @staticmethod
    def _holds(p: np.ndarray, asked: Sequence[str]) -> float:
        return float(np.prod([p[AXIS_SLICES[_TERM_AXIS[t][0]][0] + _TERM_AXIS[t][1]] for t in asked]))

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
    def attention_maps(self, image: np.ndarray, descriptions: Sequence[str]) -> np.ndarray:
        """(N, G*G) grounding attention of each description over ``image``'s feature grid (row-major
        y, x), with the active adapter: the same attention the relation head reads."""
        if not descriptions:
            return np.zeros((0, self.config.grid ** 2), np.float32)
        with self.lock, torch.no_grad():
            memo, self._att_memo = self._att_memo, None  # used once: the weights may change after
            if memo is not None and memo[1] == [d.lower() for d in descriptions] and memo[0] == image_key(image):
                return torch.softmax(memo[2], -1).numpy()  # the same logits this pass would compute
            feats = self.features([image]).float()
            keys, values = self.base.keys_values(feats)
            text = self.base.describe([d.lower() for d in descriptions])
            logits, _, _ = self.base.ground(keys, values, torch.zeros(len(descriptions), dtype=torch.long), text)
            return torch.softmax(logits, -1).numpy()

    def locate_many(self, image: np.ndarray, descriptions: Sequence[str]) -> List:
        from rls3_ros.vlm import grounding as Gr

        h, w = np.asarray(image).shape[:2]
        settings = getattr(self, "locator_settings", None) or Gr.DEFAULT_SETTINGS
        return [Gr.locate_in_attention(a, self.config.grid, w, h, settings)
                for a in self.attention_maps(image, list(descriptions))]

    def locate(self, image: np.ndarray, description: str):
        """Box, point and confidence of ``description`` from its attention map (``rls3_ros.vlm.grounding``)."""
        return self.locate_many(image, [description])[0]

    # -- training -------------------------------------------------------------------------------
    def prepare(self, samples: Sequence[Sample], image_offset: int = 0) -> List[TrainItem]:
        """Training items of every relation of ``samples`` (image index = offset + sample position)."""
        g = self.config.grid
        items = []
        for si, s in enumerate(samples):
            h, w = np.asarray(s.image).shape[:2]
            boxes = {}
            try:
                boxes = {o.id: o.bbox for o in s.scene.objects}
            except AttributeError:
                pass
            for r in s.relations:
                cands = []
                true = None
                for k, c in enumerate(relation_candidates(r)):
                    p = self.parse(c)
                    if p is None or not p[1]:
                        continue
                    if k == 0:
                        true = p
                    cands.append(p)
                if true is None:
                    continue
                ts = box_target(boxes.get(r.subject_id, (0, 0, 0, 0)), w, h, g)
                tr = box_target(boxes.get(r.reference_id, (0, 0, 0, 0)), w, h, g)
                items.append(TrainItem(image_offset + si, cands, term_indices(true[1]), true[0], true[2], ts, tr))
        return items

    def batch_loss(self, feats: torch.Tensor, batch: Sequence[TrainItem]) -> torch.Tensor:
        """Term CE for (A, B) and the inverse (B, A) + candidate CE + box-grounding CE (mean over the batch).

        Only the batch's images go through the key/value projections; candidates and grounding
        targets of the whole batch are scored in one batched op each."""
        n = len(batch)
        used = sorted({it.img for it in batch})
        local = {g: i for i, g in enumerate(used)}
        subj = [it.subj for it in batch] + [it.ref for it in batch]
        ref = [it.ref for it in batch] + [it.subj for it in batch]
        img = [local[it.img] for it in batch] * 2
        # extra (subject, reference) orders the candidates need (all are (A,B) or (B,A) for oracle negatives)
        pair_index = {(it.img, it.subj, it.ref): i for i, it in enumerate(batch)}
        pair_index.update({(it.img, it.ref, it.subj): n + i for i, it in enumerate(batch)})
        cand_rows = []
        for it in batch:
            for c in it.cands:
                k = (it.img, c[0], c[2])
                row = pair_index.get(k)
                if row is None:
                    row = pair_index[k] = len(subj)
                    subj.append(c[0]), ref.append(c[2]), img.append(local[it.img])
                cand_rows.append(row)
        logits, att_s, att_r = self.base(feats[torch.tensor(used)], torch.tensor(img, dtype=torch.long), subj, ref)
        lp = axis_log_probs(logits)
        true_cols = torch.tensor([it.true_cols for it in batch], dtype=torch.long)
        inv_cols = torch.tensor([it.inv_cols for it in batch], dtype=torch.long)
        term_loss = -(lp[:n].gather(1, true_cols).sum(1) + lp[n:2 * n].gather(1, inv_cols).sum(1)).mean() / 2
        cand = lp[torch.tensor(cand_rows)].gather(1, torch.from_numpy(np.concatenate([it.cand_cols for it in batch])))
        cand_logp, _ = segment_log_softmax(cand.sum(1), [len(it.cands) for it in batch])
        loss = term_loss - self.candidate_weight * cand_logp[:, 0].mean()
        if self.grounding_weight > 0:
            # att_s/att_r rows n.. are the inverse order (same objects): grounding of rows < n suffices
            rows = [i for i, it in enumerate(batch) if it.tgt_s is not None]
            rows += [n + i for i, it in enumerate(batch) if it.tgt_r is not None]
            if rows:
                tgt = np.stack([it.tgt_s for it in batch if it.tgt_s is not None]
                               + [it.tgt_r for it in batch if it.tgt_r is not None])
                att = torch.cat([att_s[:n], att_r[:n]])[torch.tensor(rows)]
                g = -(torch.from_numpy(tgt) * torch.log_softmax(att, 1)).sum(1)
                loss = loss + self.grounding_weight * g.mean()
        return loss

    def train_steps(self, feats: torch.Tensor, items: Sequence[TrainItem], steps: int, params: List[nn.Parameter],
                    lr: float, batch_size: int = 32, progress: Optional[ProgressCallback] = None,
                    cancel: Optional[threading.Event] = None, time_budget: float = 0.0, warmup: int = 30,
                    weight_decay: float = 0.01) -> FineTuneResult:
        """AdamW with warm-up + cosine decay over ``steps`` (or over ``time_budget`` seconds when > 0)."""
        self._att_memo = None
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        t0 = time.monotonic()
        losses: List[float] = []
        step = 0
        cancelled = False
        self.base.train()
        try:
            while step < steps:
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    break
                frac = (time.monotonic() - t0) / time_budget if time_budget > 0 else step / max(1, steps)
                if time_budget > 0 and frac >= 1.0:
                    break
                scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
                for gparam in opt.param_groups:
                    gparam["lr"] = lr * max(scale, 0.02)
                idx = self._rng.choice(len(items), size=min(batch_size, len(items)), replace=False)
                loss = self.batch_loss(feats, [items[i] for i in idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                step += 1
                losses.append(loss.item())
                if progress is not None:
                    progress(step, steps, losses[-1])
        finally:
            self.base.eval()
        return FineTuneResult(steps=step, samples_used=step * min(batch_size, len(items)),
                              final_loss=float(np.mean(losses[-10:])) if losses else float("nan"),
                              losses=losses, cancelled=cancelled)

    def set_replay(self, samples: Sequence[Sample], fraction: float = 0.25) -> None:
        """Optional: mix ``fraction`` of old samples into fine-tuning batches (default: none)."""
        self.replay = list(samples)
        self.replay_fraction = float(fraction)

    def fine_tune(self, samples: Sequence[Sample], steps: int, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[threading.Event] = None) -> FineTuneResult:
        samples = [s for s in samples if s.relations]
        with self.lock:
            self.ensure_adapter()
            if not samples or steps <= 0:
                return FineTuneResult(steps=0, samples_used=0, final_loss=float("nan"))
            pool = list(samples)
            if self.replay and self.replay_fraction > 0:
                k = int(round(len(samples) * self.replay_fraction / max(1e-6, 1 - self.replay_fraction)))
                pick = self._rng.choice(len(self.replay), size=min(k, len(self.replay)), replace=False)
                pool += [self.replay[i] for i in pick]
            feats = self.features([s.image for s in pool]).float()
            items = self.prepare(pool)
            if not items:
                return FineTuneResult(steps=0, samples_used=0, final_loss=float("nan"))
            params = self.host.trainable_parameters()
            return self.train_steps(feats, items, steps, params, lr=self.lora.learning_rate,
                                    batch_size=self.lora.batch_size, progress=progress, cancel=cancel, warmup=5)

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


# ------------------------------------------------------------------------------ persistence
def base_fingerprint(model: GroundedRelationModel) -> str:
    """Short hash of the base weights: an adapter records the base it was trained on."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_model(model: GroundedRelationModel, directory: Path, extra: Optional[Dict] = None) -> Path:
    """config.json + model.safetensors (+ pretrain_metrics.json), written atomically: a hidden temp
    dir, every file fsynced, renamed into place (``rls3_ros.core.atomic_io.atomic_dir``); files of an
    existing directory that are not ours (README.md) are copied into the new one first."""
    from safetensors.torch import save_file

    from rls3_ros.core.atomic_io import atomic_dir

    directory = Path(directory).absolute()
    with atomic_dir(str(directory)) as tmp_dir:
        tmp = Path(tmp_dir)
        (tmp / CONFIG).write_text(model.config.to_json())
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS))
        if extra is not None:
            (tmp / "pretrain_metrics.json").write_text(json.dumps(extra, indent=1))
        if directory.is_dir():  # keep files we do not own (README.md): the old directory stays whole until the swap
            for f in directory.iterdir():
                if f.name not in (CONFIG, WEIGHTS, "pretrain_metrics.json") and not (tmp / f.name).exists():
                    if f.is_dir():
                        shutil.copytree(f, tmp / f.name, symlinks=True)
                    else:
                        shutil.copy2(f, tmp / f.name, follow_symlinks=False)
    return directory


def load_model(directory: Path) -> GroundedRelationModel:
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg_path = directory / CONFIG
    if not cfg_path.is_file() or not (directory / WEIGHTS).is_file():
        raise FileNotFoundError(f"no grounded model in {directory} (need {CONFIG} and {WEIGHTS}); "
                                "build one with: python -m rls3_ros.vlm.grounded_pretrain")
    d = json.loads(cfg_path.read_text())
    if d.get("family", FAMILY) != FAMILY:
        raise ValueError(f"{directory} holds a {d.get('family')!r} model, not {FAMILY!r}")
    model = GroundedRelationModel(GroundedConfig.from_dict(d))
    model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=True)
    return model.eval()


# Named grounded models: ``grounded:<name>`` / ``load("<name>")`` -> the model directory name.
# "serving" is the base trained on every relation that the query server answers with
# (models/grounded_serving/README.md), and what the RLS3 loop fine-tunes by default; the plain
# "grounded" base is the deliberately weak one of the learning benchmark's from-scratch regime
# (models/grounded/README.md).
NAMED_MODELS = {"serving": "grounded_serving"}
SERVING_BUILD = ("rls3 pretrain --out models/grounded_serving --seed 0 --n-train 4800 --n-test 300 "
                 "--rare-keep 1.0 --steps 2000 --force")


def default_dirs(name: str = "grounded") -> List[Path]:
    """Where ``load()`` looks for model directory ``name`` (``rls3_ros.vlm.model_dirs.default_dirs``)."""
    return model_dirs(name)


def load(arg: str = "", lora: Optional[Dict] = None, **options) -> GroundedVLM:
    """Loader for ``py:rls3_ros.vlm.grounded:load[:<model dir>]``.

    ``arg``: model directory ("" = first of ``default_dirs()`` holding a model), or a name of
    ``NAMED_MODELS`` ("serving": the first of ``default_dirs("grounded_serving")`` holding one).
    ``lora``: LoRA options (r, alpha, dropout, target_modules, learning_rate, batch_size).
    Other options: ``grounding_weight``, ``candidate_weight``, ``seed``.
    """
    if arg and arg not in NAMED_MODELS:
        directory = Path(arg)
    else:
        name = NAMED_MODELS.get(arg, "grounded")
        found = [d for d in default_dirs(name) if (d / CONFIG).is_file()]
        if not found:
            how = SERVING_BUILD if arg else "rls3 pretrain (--model grounded)"
            raise FileNotFoundError(f"no grounded {arg or 'base'} model in {[str(d) for d in default_dirs(name)]}; "
                                    f"build one with: {how}")
        directory = found[0]
    import peft  # noqa: F401  (now, not at the first adapter swap: the import takes seconds)

    model = load_model(directory)
    known = {k: options[k] for k in ("grounding_weight", "candidate_weight", "seed") if k in options}
    lo = default_lora(**(lora or {}))
    return GroundedVLM(model, lora=lo, base_spec=f"py:rls3_ros.vlm.grounded:load:{directory}", **known)
