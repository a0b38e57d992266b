"""Contrastive spatial VLMs: the embedded matching model and CLIP / SigLIP, one implementation.

A contrastive model gives a matching logit for an (image, caption) pair. Everything else is
shared here:

- training objective ("dual loss"): hard-negative loss (softmax over the true caption and the
  oracle's negatives for the same pair, target = the true caption) + ``infonce_weight`` x
  image-caption InfoNCE over the batch (both directions, identical captions masked);
- evaluation: multiple choice among the true caption and its negatives (``relation.negatives``;
  the oracle's ``hard_negatives`` when a relation carries none): correct = the true caption
  scores highest, loss = its cross-entropy, confidence = its softmax probability;
- queries: candidate captions over every term set the oracle can state, softmax, then the
  probability of each term / of the asked relation (see ``queries``).

Subclasses implement ``_encode_images`` (no grad, cacheable) and ``_pair_logits`` (with grad).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from rls3_ros.captions import terms as T
from rls3_ros.captions.negatives import candidate_groups, relation_candidates
from rls3_ros.core.scene import Sample, SpatialRelation
from rls3_ros.vlm import queries as Q
from rls3_ros.vlm.interface import FineTuneResult, ProgressCallback, RelationScore, SpatialVLM
from rls3_ros.vlm.lora import AdapterHost, HostedAdapter, LoraSettings
from rls3_ros.vlm.pixels import normalized_pixels


class ContrastiveVLM(HostedAdapter, SpatialVLM):
    """Shared scoring / training / query logic of every contrastive model."""

    family = "contrastive"

    def __init__(self, base_model, lora: Optional[LoraSettings] = None, base_spec: str = "",
                 infonce_weight: float = 0.5, infonce_batch: int = 16, pair_batch: int = 512, seed: int = 0):
        self.host = AdapterHost(base_model, lora or LoraSettings(), self.family, base_spec)
        self.infonce_weight = float(infonce_weight)
        self.infonce_batch = int(infonce_batch)  # items of a batch that enter the InfoNCE matrix
        self.pair_batch = int(pair_batch)
        self._rng = np.random.default_rng(seed)
        self.replay: List[Sample] = []
        self.replay_fraction = 0.0

    # -- to implement ----------------------------------------------------------------------
    def _encode_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        raise NotImplementedError

    def _pair_logits(self, image_inputs: torch.Tensor, image_index: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """Logit of caption i for image ``image_inputs[image_index[i]]`` (differentiable)."""
        raise NotImplementedError

    def _matrix_logits(self, image_inputs: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """(n_images, n_captions) logits; default: every pair through ``_pair_logits``."""
        n, m = image_inputs.shape[0], len(captions)
        idx = torch.arange(n).repeat_interleave(m)
        caps = list(captions) * n
        return self._pair_logits(image_inputs, idx, caps).view(n, m)

    # -- adapters ----------------------------------------------------------------------------
    def set_replay(self, samples: Sequence[Sample], fraction: float = 0.25) -> None:
        """Mix ``fraction`` of each fine-tuning batch from ``samples`` (against forgetting)."""
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"replay fraction must be in [0, 1), got {fraction}")
        self.replay = [s for s in samples if s.valid and s.relations]
        self.replay_fraction = float(fraction) if self.replay else 0.0

    # -- scoring -------------------------------------------------------------------------------
    def _candidate_logits(self, images: Sequence[np.ndarray], groups: Sequence[Tuple[int, List[str]]]) -> List[torch.Tensor]:
        """For each (image index, candidate captions) group, the candidates' logits (no grad)."""
        inputs = self._encode_images(images)
        flat_idx: List[int] = []
        flat_caps: List[str] = []
        for i, caps in groups:
            flat_idx += [i] * len(caps)
            flat_caps += caps
        out: List[torch.Tensor] = []
        with self.host.lock, torch.inference_mode():
            for j in range(0, len(flat_caps), self.pair_batch):
                out.append(self._pair_logits(inputs, torch.tensor(flat_idx[j: j + self.pair_batch]),
                                             flat_caps[j: j + self.pair_batch]).float())
        logits = torch.cat(out) if out else torch.zeros(0)
        res, k = [], 0
        for _, caps in groups:
            res.append(logits[k: k + len(caps)])
            k += len(caps)
        return res

    def score(self, samples: Sequence[Sample]) -> List[RelationScore]:
        images, groups, rels = candidate_groups(samples)
        if not groups:
            return []
        out = []
        for (sid, r), (_, caps), lg in zip(rels, groups, self._candidate_logits(images, groups)):
            logp = torch.log_softmax(lg, 0)
            best = int(torch.argmax(lg))
            out.append(RelationScore(sample_id=sid, caption=caps[0], terms=list(r.terms), predicted=caps[best],
                                     loss=float(-logp[0]), correct=bool(len(lg) == 1 or lg[0] > lg[1:].max()),
                                     confidence=float(logp[0].exp())))
        return out

    # -- queries ------------------------------------------------------------------------------
    def relation_distribution(self, image: np.ndarray, subject: str, reference: str) -> Tuple[List[Tuple[str, ...]], np.ndarray]:
        """Softmax over every term set the oracle can state, for subject relative to reference."""
        sets, caps = Q.candidate_captions(subject, reference)
        lg = self._candidate_logits([image], [(0, caps)])[0]
        return sets, torch.softmax(lg, 0).numpy()

    def where(self, image: np.ndarray, subject: str, reference: str) -> Dict[str, float]:
        sets, p = self.relation_distribution(image, subject, reference)
        return Q.term_marginals(sets, p)

    def where_caption(self, image: np.ndarray, subject: str, reference: str) -> Tuple[str, List[str], float]:
        """Most probable full answer: (caption, terms, probability)."""
        sets, p = self.relation_distribution(image, subject, reference)
        k = int(np.argmax(p))
        return T.make_caption(subject, sets[k], reference), list(sets[k]), float(p[k])

    def check(self, image: np.ndarray, subject: str, relation: str, reference: str) -> Tuple[bool, float]:
        asked = Q.parse_relation(relation)
        sets, p = self.relation_distribution(image, subject, reference)
        prob = Q.holds_probability(sets, p, asked)
        return prob >= 0.5, prob

    def what(self, image: np.ndarray, relation: str, reference: str, candidates: Sequence[str]) -> List[Tuple[str, float]]:
        asked = Q.parse_relation(relation)
        cands = [c for c in candidates if c != reference]
        if not cands:
            return []
        sets = Q.candidate_term_sets()
        groups = [(0, [T.make_caption(c, ts, reference) for ts in sets]) for c in cands]
        res = []
        for c, lg in zip(cands, self._candidate_logits([image], groups)):
            res.append((c, Q.holds_probability(sets, torch.softmax(lg, 0).numpy(), asked)))
        return sorted(res, key=lambda cp: -cp[1])

    # -- training -----------------------------------------------------------------------------
    def _items(self, samples: Sequence[Sample]) -> Tuple[List[np.ndarray], List[Tuple[int, SpatialRelation, List[str]]]]:
        images: List[np.ndarray] = []
        items = []
        for s in samples:
            if not s.valid or not s.relations:
                continue
            images.append(s.image)
            for r in s.relations:
                items.append((len(images) - 1, r, relation_candidates(r)))
        return images, items

    def batch_loss(self, inputs: torch.Tensor, batch: Sequence[Tuple[int, SpatialRelation, List[str]]],
                   image_captions: Dict[int, set]) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Dual loss on one batch: hard-negative CE + infonce_weight x InfoNCE."""
        idx: List[int] = []
        caps: List[str] = []
        sizes: List[int] = []
        for i, _, cands in batch:
            idx += [i] * len(cands)
            caps += cands
            sizes.append(len(cands))
        logits = self._pair_logits(inputs, torch.tensor(idx), caps)
        hn, k = [], 0
        for n in sizes:
            hn.append(-torch.log_softmax(logits[k: k + n], 0)[0])
            k += n
        hn_loss = torch.stack(hn).mean()
        stats = {"hard_negative": float(hn_loss.detach())}
        loss = hn_loss
        batch = batch[: self.infonce_batch]
        if self.infonce_weight > 0:
            img_ids = sorted({i for i, _, _ in batch})
            if len(img_ids) > 1:
                pos = {i: j for j, i in enumerate(img_ids)}
                texts = [c[0] for _, _, c in batch]
                mat = self._matrix_logits(inputs[torch.tensor(img_ids)], texts)  # (U, B)
                target = torch.tensor([pos[i] for i, _, _ in batch])
                # a caption that is also true of another image in the batch is not a negative there
                valid = torch.tensor([[t in image_captions.get(i, ()) or pos[i] == target[b]
                                       for b, t in enumerate(texts)] for i in img_ids])
                true_pair = torch.zeros_like(valid)
                true_pair[target, torch.arange(len(texts))] = True
                mask_other = valid & ~true_pair
                m = mat.masked_fill(mask_other, -1e4)
                t2i = F.cross_entropy(m.t(), target)
                # image -> captions: every caption of the image counts as positive
                pos_mask = valid
                lse_all = torch.logsumexp(mat, 1)
                lse_pos = torch.logsumexp(mat.masked_fill(~pos_mask, -1e4), 1)
                i2t = (lse_all - lse_pos).mean()
                nce = 0.5 * (t2i + i2t)
                stats["infonce"] = float(nce.detach())
                loss = loss + self.infonce_weight * nce
        return loss, stats

    def train_steps(self, samples: Sequence[Sample], steps: int, params: List[torch.nn.Parameter],
                    lr: float, batch_size: int, progress: Optional[ProgressCallback] = None,
                    cancel: Optional[threading.Event] = None, weight_decay: float = 0.0,
                    warmup: int = 0, replay: Sequence[Sample] = (), replay_fraction: float = 0.0,
                    time_budget: float = 0.0) -> FineTuneResult:
        """AdamW on ``params`` with the dual loss (cosine schedule); used by fine_tune and pretraining.

        ``time_budget`` > 0 [s]: the cosine schedule follows elapsed time and training stops when
        the budget is spent (or after ``steps``, whichever comes first).
        """
        images, items = self._items(samples)
        if not items:
            raise ValueError("no valid captioned relations to train on")
        r_images, r_items = self._items(replay) if replay_fraction > 0 else ([], [])
        offset = len(images)
        all_images = images + r_images
        r_items = [(i + offset, r, c) for i, r, c in r_items]
        inputs = self._encode_images(all_images)
        image_captions: Dict[int, set] = {}
        for i, r, c in items + r_items:
            image_captions.setdefault(i, set()).add(c[0])
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        t0 = time.monotonic()

        def frac(s: int) -> float:
            if time_budget > 0:
                return min(1.0, max((time.monotonic() - t0) / time_budget, s / max(1, steps)))
            return min(s, steps) / max(1, steps)

        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * frac(s))))
        n_replay = int(round(batch_size * replay_fraction)) if r_items else 0
        n_main = max(1, batch_size - n_replay)
        losses: List[float] = []
        used = 0
        cancelled = False
        order = self._rng.permutation(len(items))
        pos = 0
        for step in range(steps):
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            if time_budget > 0 and time.monotonic() - t0 > time_budget:
                break
            if pos + n_main > len(order):
                order = self._rng.permutation(len(items))
                pos = 0
            batch = [items[j] for j in order[pos: pos + n_main]]
            pos += n_main
            if n_replay:
                batch += [r_items[j] for j in self._rng.integers(0, len(r_items), n_replay)]
            with self.host.lock:
                loss, _ = self.batch_loss(inputs, batch, image_captions)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
            sched.step()
            used += len(batch)
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1, steps, losses[-1])
        return FineTuneResult(steps=len(losses), samples_used=used, final_loss=losses[-1] if losses else float("nan"),
                              losses=losses, cancelled=cancelled)

    def fine_tune(self, samples: Sequence[Sample], steps: int, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[threading.Event] = None) -> FineTuneResult:
        self.host.ensure_adapter()
        params = self.host.trainable_parameters()
        return self.train_steps(samples, steps, params, self.host.lora.learning_rate, self.host.lora.batch_size,
                                progress, cancel, replay=self.replay, replay_fraction=self.replay_fraction)


# ---------------------------------------------------------------------------------------------
class EmbeddedVLM(ContrastiveVLM):
    """The embedded default: frozen EfficientNet-Lite0 + MiniLM features into ``SpatialMatchModel``."""

    def __init__(self, model, lora: Optional[LoraSettings] = None, base_spec: str = "embedded", **kw):
        from rls3_ros.vlm.embedded import shared_encoders

        if lora is None:
            lora = LoraSettings(target_modules=["q_proj", "v_proj", "fc1", "fc2"], r=8, alpha=16,
                                learning_rate=2e-3, batch_size=32)
        super().__init__(model, lora, base_spec, **kw)
        self.config = model.config
        self.encoders = shared_encoders(model.config)

    def _encode_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return self.encoders.image_features(images)

    def _pair_logits(self, image_inputs, image_index, captions):
        txt, mask, seg = self.encoders.text_features(captions)
        model = self.host.model
        uniq, inv = torch.unique(image_index, return_inverse=True)
        tokens = self.host.base.encode_image_tokens(image_inputs[uniq])  # peft wraps the same modules in place
        return model(image_features=None, text_features=txt, text_mask=mask, text_segments=seg, image_tokens=tokens,
                     image_index=inv)

    def _matrix_logits(self, image_inputs, captions):
        n, m = image_inputs.shape[0], len(captions)
        idx = torch.arange(n).repeat_interleave(m)
        return self._pair_logits(image_inputs, idx, list(captions) * n).view(n, m)


# ---------------------------------------------------------------------------------------------
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class DualEncoderVLM(ContrastiveVLM):
    """CLIPModel / SiglipModel (transformers): score = scaled cosine similarity (+ SigLIP bias)."""

    def __init__(self, model, tokenizer, image_size: int, mean=CLIP_MEAN, std=CLIP_STD,
                 lora: Optional[LoraSettings] = None, base_spec: str = "", max_length: int = 64,
                 pad_to_max: bool = False, **kw):
        if lora is None:
            lora = LoraSettings(target_modules=["q_proj", "v_proj"], r=8, alpha=16, learning_rate=1e-4, batch_size=16)
        super().__init__(model, lora, base_spec, **kw)
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.max_length = int(max_length)
        self.pad_to_max = pad_to_max
        self.is_siglip = "siglip" in type(model).__name__.lower()

    def _encode_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return normalized_pixels(images, self.image_size, self.mean, self.std)

    def _embeddings(self, pixel_values: torch.Tensor, captions: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(captions), padding="max_length" if self.pad_to_max else True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        enc.pop("token_type_ids", None)
        model = self.host.model
        out = model(input_ids=enc["input_ids"], attention_mask=None if self.is_siglip else enc["attention_mask"],
                    pixel_values=pixel_values, return_dict=True)
        return F.normalize(out.image_embeds, dim=-1), F.normalize(out.text_embeds, dim=-1)

    def _scale_bias(self):
        base = self.host.base
        scale = base.logit_scale.exp()
        bias = base.logit_bias if self.is_siglip and hasattr(base, "logit_bias") else 0.0
        return scale, bias

    def _pair_logits(self, image_inputs, image_index, captions):
        uniq, inv = torch.unique(image_index, return_inverse=True)
        img, txt = self._embeddings(image_inputs[uniq], captions)
        scale, bias = self._scale_bias()
        return scale * (img[inv] * txt).sum(-1) + bias

    def _matrix_logits(self, image_inputs, captions):
        img, txt = self._embeddings(image_inputs, captions)
        scale, bias = self._scale_bias()
        return scale * img @ txt.t() + bias
