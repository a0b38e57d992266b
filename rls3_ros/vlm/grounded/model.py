"""The grounded relation network: description-grounded attention over a frozen feature grid + a relation head."""

from __future__ import annotations

import math
import zlib
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from rls3_ros.vlm.grounded.axes import N_OUT
from rls3_ros.vlm.grounded.config import GroundedConfig

DENSE_GROUND_MAX = 8192  # queries x images up to which grounding scores every query against every image
BOX_PRIOR = 0.13  # box head: width/height (fraction of the image) of its output at initialisation
BOX_RELATION_DIMS = 20  # what the relation head sees of two predicted boxes (``box_relation_features``)


def box_relation_features(box_a: torch.Tensor, box_b: torch.Tensor) -> torch.Tensor:
    """(N, 20) monocular geometry of two boxes (cx, cy, w, h; image fractions): each box with its top
    and bottom edge, B minus A, and the log size ratios (the depth cues a single image has: where an
    object meets its support and how large it appears)."""
    def edges(b):
        return torch.cat([b, b[:, 1:2] - b[:, 3:4] / 2, b[:, 1:2] + b[:, 3:4] / 2], 1)

    ea, eb = edges(box_a), edges(box_b)
    ratio = torch.log(box_b[:, 2:].clamp_min(1e-3) / box_a[:, 2:].clamp_min(1e-3))
    return torch.cat([ea, eb, eb - ea, ratio], 1)


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
        self.fc1 = nn.Linear(2 * d + 10 + (BOX_RELATION_DIMS if config.relation_boxes else 0), config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.hidden)
        self.out_proj = nn.Linear(config.hidden, N_OUT)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, g), torch.linspace(-1, 1, g), indexing="ij")
        self.register_buffer("coords", torch.stack([xs.reshape(-1), ys.reshape(-1)], 1), persistent=False)
        nn.init.normal_(self.pos_emb, std=0.3)
        nn.init.normal_(self.word_emb.weight, std=1.0)
        if config.box_hidden > 0:  # created last: a model without one draws the same initial weights as before
            self.box_fc = nn.Linear(d + 7, config.box_hidden)
            self.box_out = nn.Linear(config.box_hidden, 4)
            nn.init.zeros_(self.box_out.weight)  # starts as a BOX_PRIOR box centred on the attention peak
            nn.init.zeros_(self.box_out.bias)
            cells = (torch.arange(g, dtype=torch.float32) + 0.5) / g
            cy, cx = torch.meshgrid(cells, cells, indexing="ij")
            self.register_buffer("cell_centres", torch.stack([cx.reshape(-1), cy.reshape(-1)], 1), persistent=False)

    @property
    def has_box_head(self) -> bool:
        return self.config.box_hidden > 0

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

    def local_peak(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, 3): soft-argmax (x, y in image fractions) of the attention in the 3 x 3 cells around its
        peak, and the attention mass there (as ``grounding.attention_peak`` with window 1)."""
        g = self.config.grid
        a = torch.softmax(logits, -1)
        peak = a.argmax(1)
        pi, pj = peak // g, peak % g
        idx = torch.arange(g * g, device=a.device)
        near = ((idx[None] // g - pi[:, None]).abs() <= 1) & ((idx[None] % g - pj[:, None]).abs() <= 1)
        w = a * near
        mass = w.sum(1, keepdim=True)
        return torch.cat([(w @ self.cell_centres) / mass.clamp_min(1e-8), mass], 1)

    def boxes(self, logits: torch.Tensor, feat: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """Box head: (N, 4) box (centre x, centre y, width, height; fractions of the image) of each
        grounded description from its attended feature and attention statistics: the centre an offset
        from the local attention peak (in cells), the size a factor on ``BOX_PRIOR``."""
        peak = self.local_peak(logits)
        raw = self.box_out(F.gelu(self.box_fc(torch.cat([feat, stats, peak], 1))))
        centre = peak[:, :2] + raw[:, :2] / self.config.grid
        size = BOX_PRIOR * torch.exp(raw[:, 2:].clamp(-3.0, 3.0))
        return torch.cat([centre, size], 1)

    def forward(self, feats: torch.Tensor, img: torch.Tensor, subj: Sequence[str], ref: Sequence[str],
                with_boxes: bool = False):
        """Axis logits (N, 11) for subject ``subj[i]`` relative to ``ref[i]`` in image ``img[i]``,
        plus the grounding attention logits of subjects and references (N, G*G) each; ``with_boxes``
        (a model with a box head): also the boxes of subjects and references (N, 4) each."""
        keys, values = self.keys_values(feats)
        text = self.describe(list(subj) + list(ref))
        n = len(subj)
        img2 = torch.cat([img, img])
        att, feat, stats = self.ground(keys, values, img2, text)
        fa, fb, sa, sb = feat[:n], feat[n:], stats[:n], stats[n:]
        x = [fa, fb, sa[:, :2], sb[:, :2], sb[:, :2] - sa[:, :2], sa[:, 2:], sb[:, 2:]]
        box = self.boxes(att, feat, stats) if self.has_box_head and (with_boxes or self.config.relation_boxes) else None
        if self.config.relation_boxes:
            # the boxes as the box head gives them: the relation loss does not move the box head
            x.append(box_relation_features(box[:n].detach(), box[n:].detach()))
        h = F.gelu(self.fc1(torch.cat(x, 1)))
        h = F.gelu(self.fc2(h)) + h
        if with_boxes and box is not None:
            return self.out_proj(h), att[:n], att[n:], box[:n], box[n:]
        return self.out_proj(h), att[:n], att[n:]

