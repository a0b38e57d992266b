"""Training the grounded model: relations prepared as items, the loss of a batch, the optimiser loop.

``GroundedTraining`` is the training half of ``GroundedVLM`` (a mixin: it uses the VLM's
``base``, ``host``, ``lock``, ``features``, ``parse``, ``config``, ``lora``, ``_rng`` and
``_att_memo``). Loss = term cross-entropy for (A, B) and the inverse (B, A) + ``candidate_weight``
x cross-entropy of the true caption among its candidates (the RL reward J2) +
``grounding_weight`` x cross-entropy of the attention against the object's box cells, when the
simulator's 2D boxes are known, + ``box_weight`` x (L1 of the normalised (cx, cy, w, h) + (1 - GIoU))
of the box head's boxes against those boxes (a model with a box head only).
"""

from __future__ import annotations

import math
import threading
import time
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from rls3_ros.captions import terms as T
from rls3_ros.captions.negatives import relation_candidates
from rls3_ros.core.scene import Sample
from rls3_ros.vlm.grounded.axes import axis_log_probs, term_indices, term_of_column
from rls3_ros.vlm.grounded.segments import segment_log_softmax
from rls3_ros.vlm.interface import FineTuneResult, ProgressCallback
from rls3_ros.vlm.lora import LoraSettings


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


def box_cxcywh(bbox, width: int, height: int) -> Optional[np.ndarray]:
    """(centre x, centre y, width, height) of ``bbox`` (pixels) as fractions of the image; None if no box."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    if x1 <= x0 or y1 <= y0 or width <= 0 or height <= 0:
        return None
    return np.array([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height],
                    dtype=np.float32)


def box_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per box: L1 of (cx, cy, w, h) (fractions of the image) + 1 - generalised IoU."""
    def corners(b):
        return b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2

    px0, py0, px1, py1 = corners(pred)
    tx0, ty0, tx1, ty1 = corners(true)
    inter = (torch.min(px1, tx1) - torch.max(px0, tx0)).clamp_min(0) * (torch.min(py1, ty1) - torch.max(py0, ty0)).clamp_min(0)
    union = pred[:, 2] * pred[:, 3] + true[:, 2] * true[:, 3] - inter
    hull = (torch.max(px1, tx1) - torch.min(px0, tx0)) * (torch.max(py1, ty1) - torch.min(py0, ty0))
    giou = inter / union.clamp_min(1e-8) - (hull - union) / hull.clamp_min(1e-8)
    return (pred - true).abs().sum(1) + 1 - giou


def _object_targets(batch, subject_attr: str, reference_attr: str):
    """Rows (subjects 0..n-1, then references n..2n-1) of the batch's items that carry a target in
    ``subject_attr`` / ``reference_attr``, and those targets stacked (None when there are none)."""
    n = len(batch)
    rows = [i for i, it in enumerate(batch) if getattr(it, subject_attr) is not None]
    rows += [n + i for i, it in enumerate(batch) if getattr(it, reference_attr) is not None]
    if not rows:
        return rows, None
    return rows, np.stack([getattr(it, subject_attr) for it in batch if getattr(it, subject_attr) is not None]
                          + [getattr(it, reference_attr) for it in batch if getattr(it, reference_attr) is not None])


class TrainItem:
    """One relation prepared for training: image index, candidate (subj, terms, ref) list, the axis
    columns of the true term set (``true_cols``), of its inverse (``inv_cols``) and of every candidate
    (``cand_cols``, (K, 3)), attention targets over the grid cells and (cx, cy, w, h) box targets."""

    __slots__ = ("img", "cands", "true_cols", "inv_cols", "cand_cols", "subj", "ref", "tgt_s", "tgt_r",
                 "box_s", "box_r")

    def __init__(self, img, cands, true_cols, subj, ref, tgt_s, tgt_r, box_s=None, box_r=None):
        self.img, self.cands, self.true_cols, self.subj, self.ref = img, cands, true_cols, subj, ref
        self.tgt_s, self.tgt_r = tgt_s, tgt_r
        self.box_s, self.box_r = box_s, box_r
        self.inv_cols = term_indices(T.inverse_terms([t for t in map(term_of_column, true_cols) if t]))
        self.cand_cols = np.array([term_indices(c[1]) for c in cands], dtype=np.int64).reshape(-1, 3)


class GroundedTraining:
    """Fine-tuning and pre-training steps of ``GroundedVLM`` (see the module docstring)."""

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
                bs, br = boxes.get(r.subject_id, (0, 0, 0, 0)), boxes.get(r.reference_id, (0, 0, 0, 0))
                items.append(TrainItem(image_offset + si, cands, term_indices(true[1]), true[0], true[2],
                                       box_target(bs, w, h, g), box_target(br, w, h, g),
                                       box_cxcywh(bs, w, h), box_cxcywh(br, w, h)))
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
        with_boxes = self.box_weight > 0 and self.config.box_hidden > 0
        out = self.base(feats[torch.tensor(used)], torch.tensor(img, dtype=torch.long), subj, ref, with_boxes=with_boxes)
        logits, att_s, att_r = out[:3]
        lp = axis_log_probs(logits)
        true_cols = torch.tensor([it.true_cols for it in batch], dtype=torch.long)
        inv_cols = torch.tensor([it.inv_cols for it in batch], dtype=torch.long)
        term_loss = -(lp[:n].gather(1, true_cols).sum(1) + lp[n:2 * n].gather(1, inv_cols).sum(1)).mean() / 2
        cand = lp[torch.tensor(cand_rows)].gather(1, torch.from_numpy(np.concatenate([it.cand_cols for it in batch])))
        cand_logp, _ = segment_log_softmax(cand.sum(1), [len(it.cands) for it in batch])
        loss = term_loss - self.candidate_weight * cand_logp[:, 0].mean()
        if self.grounding_weight > 0:
            # att_s/att_r rows n.. are the inverse order (same objects): grounding of rows < n suffices
            rows, tgt = _object_targets(batch, "tgt_s", "tgt_r")
            if rows:
                att = torch.cat([att_s[:n], att_r[:n]])[torch.tensor(rows)]
                g = -(torch.from_numpy(tgt) * torch.log_softmax(att, 1)).sum(1)
                loss = loss + self.grounding_weight * g.mean()
        if with_boxes:
            box_s, box_r = out[3], out[4]
            rows, tgt = _object_targets(batch, "box_s", "box_r")
            if rows:
                pred = torch.cat([box_s[:n], box_r[:n]])[torch.tensor(rows)]
                loss = loss + self.box_weight * box_loss(pred, torch.from_numpy(tgt)).mean()
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
