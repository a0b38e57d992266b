"""Generative family: PaliGemmaForConditionalGeneration behind the SpatialVLM interface.

- prompt "where is {A} relative to {B}?" -> answer = the oracle caption "The A is <terms> the B.";
- training: language-model loss on the answer tokens only (PaliGemma prefix-LM: image tokens +
  prompt attend bidirectionally, ``token_type_ids`` = 1 on the answer), LoRA via peft;
- evaluation (``score``): greedy generation, parsed with the caption parser; ``correct`` = exact
  relation match (same subject, reference and term set), ``term_score`` = Jaccard overlap of the
  generated and true term sets, ``loss`` = mean NLL per answer token, ``confidence`` =
  probability of the whole true answer;
- queries: the likelihood of every candidate answer the oracle could give, softmaxed.

Inputs are built as PaliGemmaProcessor does: ``<image>`` x N + BOS + prompt + "\\n", then the
answer + EOS. A real checkpoint is loaded from a directory or the HF cache (no download);
``tiny_paligemma`` builds a small random configuration (tests, plumbing).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from rls3_ros.captions import terms as T
from rls3_ros.captions.parse import parse_caption
from rls3_ros.core.scene import Sample
from rls3_ros.vlm import queries as Q
from rls3_ros.vlm.interface import FineTuneResult, ProgressCallback, RelationScore, SpatialVLM
from rls3_ros.vlm.lora import AdapterHost, HostedAdapter, LoraSettings
from rls3_ros.vlm.pixels import normalized_pixels

PROMPT = "where is {subject} relative to {reference}?"


def _norm(s: str) -> str:
    return " ".join(s.lower().replace("the ", " ").split())


class PaliGemmaVLM(HostedAdapter, SpatialVLM):
    family = "generative"

    def __init__(self, model, tokenizer, lora: Optional[LoraSettings] = None, base_spec: str = "",
                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), max_new_tokens: int = 24, seed: int = 0):
        if lora is None:
            lora = LoraSettings(target_modules=["q_proj", "v_proj"], r=8, alpha=16, learning_rate=1e-3, batch_size=8)
        self.host = AdapterHost(model, lora, self.family, base_spec)
        self.tok = tokenizer
        cfg = model.config
        self.image_size = int(cfg.vision_config.image_size)
        self.num_image_tokens = int(cfg.text_config.num_image_tokens)
        self.image_token = int(cfg.image_token_index)
        self.bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        self.eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if self.bos is None or self.eos is None:
            raise ValueError("tokenizer has no BOS/EOS (or CLS/SEP) token")
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.max_new_tokens = int(max_new_tokens)
        self._rng = np.random.default_rng(seed)

    # -- inputs -----------------------------------------------------------------------------------
    def _pixels(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return normalized_pixels(images, self.image_size, self.mean, self.std)

    def _ids(self, text: str) -> List[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def _prefix(self, subject: str, reference: str) -> List[int]:
        return [self.image_token] * self.num_image_tokens + [self.bos] + self._ids(
            PROMPT.format(subject=subject, reference=reference) + "\n")

    def _batch(self, prefixes: List[List[int]], answers: List[List[int]]) -> Dict[str, torch.Tensor]:
        seqs = [p + a + [self.eos] for p, a in zip(prefixes, answers)]
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), self.pad, dtype=torch.long)
        att = torch.zeros((len(seqs), n), dtype=torch.long)
        tt = torch.zeros((len(seqs), n), dtype=torch.long)
        labels = torch.full((len(seqs), n), -100, dtype=torch.long)
        for i, (p, s) in enumerate(zip(prefixes, seqs)):
            ids[i, : len(s)] = torch.tensor(s)
            att[i, : len(s)] = 1
            tt[i, len(p): len(s)] = 1
            labels[i, len(p): len(s)] = torch.tensor(s[len(p):])
        return {"input_ids": ids, "attention_mask": att, "token_type_ids": tt, "labels": labels}

    def _answer_nll(self, pixel_values: torch.Tensor, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sequence summed NLL of the answer tokens (B,) and the token counts."""
        out = self.host.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              token_type_ids=batch["token_type_ids"], pixel_values=pixel_values, return_dict=True)
        logits = out.logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                              reduction="none").view(labels.shape)
        return nll.sum(1), (labels != -100).sum(1)

    def _candidate_nll(self, image: np.ndarray, pairs: Sequence[Tuple[str, str]], answers: Sequence[str],
                       chunk: int = 32) -> torch.Tensor:
        px = self._pixels([image])
        out = []
        with self.host.lock, torch.inference_mode():
            for j in range(0, len(answers), chunk):
                pre = [self._prefix(s, r) for s, r in pairs[j: j + chunk]]
                ans = [self._ids(a) for a in answers[j: j + chunk]]
                b = self._batch(pre, ans)
                nll, _ = self._answer_nll(px.expand(len(pre), -1, -1, -1), b)
                out.append(nll)
        return torch.cat(out)

    def generate_answer(self, image: np.ndarray, subject: str, reference: str) -> str:
        px = self._pixels([image])
        ids = torch.tensor([self._prefix(subject, reference)])
        with self.host.lock, torch.inference_mode():
            gen = self.host.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                           token_type_ids=torch.zeros_like(ids), pixel_values=px,
                                           max_new_tokens=self.max_new_tokens, do_sample=False,
                                           eos_token_id=self.eos, pad_token_id=self.pad)
        return self.tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip()

    # -- interface --------------------------------------------------------------------------------
    def score(self, samples: Sequence[Sample]) -> List[RelationScore]:
        out = []
        for s in samples:
            if not s.relations:
                continue
            px = self._pixels([s.image])
            pre = [self._prefix(r.subject_description, r.reference_description) for r in s.relations]
            ans = [self._ids(r.caption or T.make_caption(r.subject_description, r.terms, r.reference_description))
                   for r in s.relations]
            with self.host.lock, torch.inference_mode():
                nll, cnt = self._answer_nll(px.expand(len(pre), -1, -1, -1), self._batch(pre, ans))
            for r, n, c in zip(s.relations, nll, cnt):
                text = self.generate_answer(s.image, r.subject_description, r.reference_description)
                try:
                    subj, terms, ref = parse_caption(text)
                    exact = (_norm(subj) == _norm(r.subject_description) and _norm(ref) == _norm(r.reference_description)
                             and set(terms) == set(r.terms))
                    inter = len(set(terms) & set(r.terms))
                    term_score = inter / max(1, len(set(terms) | set(r.terms)))
                except ValueError:
                    exact, term_score = False, 0.0
                out.append(RelationScore(sample_id=s.sample_id, caption=r.caption, terms=list(r.terms), predicted=text,
                                         loss=float(n / max(1, int(c))), correct=bool(exact),
                                         confidence=float(torch.exp(-n)), term_score=float(term_score)))
        return out

    def relation_distribution(self, image, subject, reference):
        sets, caps = Q.candidate_captions(subject, reference)
        nll = self._candidate_nll(image, [(subject, reference)] * len(caps), caps)
        return sets, torch.softmax(-nll, 0).numpy()

    def where(self, image, subject, reference) -> Dict[str, float]:
        sets, p = self.relation_distribution(image, subject, reference)
        return Q.term_marginals(sets, p)

    def check(self, image, subject, relation, reference) -> Tuple[bool, float]:
        asked = Q.parse_relation(relation)
        sets, p = self.relation_distribution(image, subject, reference)
        prob = Q.holds_probability(sets, p, asked)
        return prob >= 0.5, prob

    def what(self, image, relation, reference, candidates) -> List[Tuple[str, float]]:
        asked = Q.parse_relation(relation)
        res = []
        for c in candidates:
            if c == reference:
                continue
            sets, p = self.relation_distribution(image, c, reference)
            res.append((c, Q.holds_probability(sets, p, asked)))
        return sorted(res, key=lambda cp: -cp[1])

    def fine_tune(self, samples: Sequence[Sample], steps: int, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[threading.Event] = None) -> FineTuneResult:
        items = [(s.image, r) for s in samples if s.valid for r in s.relations]
        if not items:
            raise ValueError("no valid captioned relations to train on")
        self.host.ensure_adapter()
        params = self.host.trainable_parameters()
        opt = torch.optim.AdamW(params, lr=self.host.lora.learning_rate)
        bs = self.host.lora.batch_size
        losses: List[float] = []
        used = 0
        cancelled = False
        for step in range(steps):
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            batch = [items[j] for j in self._rng.integers(0, len(items), min(bs, len(items)))]
            px = self._pixels([im for im, _ in batch])
            pre = [self._prefix(r.subject_description, r.reference_description) for _, r in batch]
            ans = [self._ids(r.caption or T.make_caption(r.subject_description, r.terms, r.reference_description))
                   for _, r in batch]
            with self.host.lock:
                nll, cnt = self._answer_nll(px, self._batch(pre, ans))
                loss = nll.sum() / cnt.sum().clamp(min=1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
            losses.append(float(loss.detach()))
            used += len(batch)
            if progress is not None:
                progress(step + 1, steps, losses[-1])
        return FineTuneResult(steps=len(losses), samples_used=used, final_loss=losses[-1] if losses else float("nan"),
                              losses=losses, cancelled=cancelled)


def tiny_paligemma(vocab_size: int, image_size: int = 64, patch_size: int = 16, hidden: int = 64, seed: int = 0):
    """A small random PaliGemmaForConditionalGeneration (image token = ``vocab_size``)."""
    from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionConfig

    torch.manual_seed(seed)
    vision = SiglipVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                                num_attention_heads=2, image_size=image_size, patch_size=patch_size)
    text = GemmaConfig(vocab_size=vocab_size + 1, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=hidden // 2,
                       initializer_range=0.2)  # tied LM head: small random embeddings would cap the logits
    cfg = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=vocab_size,
                          vocab_size=vocab_size + 1, projection_dim=hidden, hidden_size=hidden)
    return PaliGemmaForConditionalGeneration(cfg).eval()


def load_paligemma(path: str, lora: Optional[LoraSettings] = None, resolve: Optional[Callable[[str], str]] = None) -> PaliGemmaVLM:
    """PaliGemma from a directory / cached HF id (``resolve`` maps the id to a local dir)."""
    from transformers import AutoTokenizer, PaliGemmaForConditionalGeneration

    d = resolve(path) if resolve else path
    model = PaliGemmaForConditionalGeneration.from_pretrained(d, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    mean, std = (0.5,) * 3, (0.5,) * 3
    pre = Path(d) / "preprocessor_config.json"
    if pre.is_file():
        pc = json.loads(pre.read_text())
        mean, std = tuple(pc.get("image_mean", mean)), tuple(pc.get("image_std", std))
    return PaliGemmaVLM(model, tok, lora=lora, base_spec=f"paligemma:{d}", mean=mean, std=std)
