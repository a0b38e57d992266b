"""A tiny but real SpatialVLM for the node tests (torch + peft LoRA, no mocks).

``TinySpatialVLM`` scores, fine-tunes (LoRA through peft), saves adapters in the standard
peft format (atomically) and loads them back, like the project's real models, but builds in
milliseconds: a 2-layer CNN for the image, hashed character trigrams for the object names
and a 2-layer head giving one independent probability per relation term.

Loader for the nodes' ``model`` parameter (see ``rls3_ros.ros.nodes.vlm_loading``):
``py:vlm_test_model:load`` (in-memory base, seed 0) or ``py:vlm_test_model:load:<dir>``
(base weights saved by ``save_base(<dir>)``; a missing directory raises FileNotFoundError,
which is how the tests exercise "model not present at start").

Also: ``make_samples(n, seed)`` builds captioned synthetic samples (two coloured squares,
image-plane left/right/above/below) for scoring and fine-tuning.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import peft  # noqa: F401 - imported with the model, not at the first fine-tune / adapter load
import torch
from torch import nn

from rls3_ros.core.scene import CameraModel, ObjectState, Sample, SceneState, SpatialRelation
from rls3_ros.vlm.interface import FineTuneResult, ProgressCallback, RelationScore, SpatialVLM

from rls3_ros.captions.terms import TERMS as _ORACLE_TERMS, make_caption

TERMS = list(_ORACLE_TERMS)
_HASH_DIM = 128
_IMG = 64
LORA_TARGETS = ["img_proj", "fc1", "fc2"]


def _text_features(text: str) -> torch.Tensor:
    """Bag of hashed character trigrams (fixed, parameter-free)."""
    v = torch.zeros(_HASH_DIM)
    t = f"  {text.lower().strip()}  "
    for i in range(len(t) - 2):
        h = int.from_bytes(hashlib.blake2s(t[i : i + 3].encode(), digest_size=4).digest(), "little")
        v[h % _HASH_DIM] += 1.0
    return v / max(1.0, float(v.norm()))


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    t = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0)
    t = torch.nn.functional.interpolate(t[None], size=(_IMG, _IMG), mode="bilinear", align_corners=False)
    return t[0]


class TinySpatialNet(nn.Module):
    def __init__(self, n_terms: int = len(TERMS)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, stride=4, padding=2)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.img_proj = nn.Linear(16 * 16 + 2, 64)
        self.txt_proj = nn.Linear(_HASH_DIM, 32)
        self.fc1 = nn.Linear(64 + 64, 64)
        self.fc2 = nn.Linear(64, n_terms)

    def forward(self, images: torch.Tensor, subj: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(images))
        x = torch.relu(self.conv2(x))
        x = self.pool(x).flatten(1)
        # coarse colour-weighted coordinates help the tiny net localise
        x = torch.cat([x, images.mean(dim=(1, 2, 3))[:, None], images.std(dim=(1, 2, 3))[:, None]], 1)
        x = torch.relu(self.img_proj(x))
        t = torch.cat([self.txt_proj(subj), self.txt_proj(ref)], 1)
        h = torch.relu(self.fc1(torch.cat([x, t], 1)))
        return self.fc2(h)


def build_base(seed: int = 0) -> TinySpatialNet:
    """The deterministic base network (what plain peft needs to load an adapter)."""
    g = torch.Generator().manual_seed(seed)
    net = TinySpatialNet()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p.shape[-1]) ** 0.5))
    return net


def save_base(directory: str, seed: int = 0) -> str:
    os.makedirs(directory, exist_ok=True)
    torch.save(build_base(seed).state_dict(), os.path.join(directory, "base.pt"))
    return directory


class TinySpatialVLM(SpatialVLM):
    """Honest SpatialVLM on ``TinySpatialNet`` with LoRA adapters through peft."""

    family = "contrastive"

    def __init__(self, net: Optional[nn.Module] = None, lr: float = 1e-2, batch_size: int = 16, seed: int = 0):
        self.base = net if net is not None else build_base(seed)
        self.model: nn.Module = self.base
        self.terms = list(TERMS)
        self.lr = lr
        self.batch_size = batch_size
        self._adapter_path = ""
        self._rng = np.random.default_rng(seed)

    # -- helpers -------------------------------------------------------------------------
    def _logits(self, images: Sequence[np.ndarray], subjects: Sequence[str], refs: Sequence[str]) -> torch.Tensor:
        imgs = torch.stack([_image_tensor(i) for i in images])
        s = torch.stack([_text_features(x) for x in subjects])
        r = torch.stack([_text_features(x) for x in refs])
        return self.model(imgs, s, r)

    def _targets(self, terms: Sequence[str]) -> torch.Tensor:
        return torch.tensor([1.0 if t in terms else 0.0 for t in self.terms])

    def _rows(self, samples: Sequence[Sample]) -> List[Tuple[Sample, SpatialRelation]]:
        return [(s, r) for s in samples for r in s.relations]

    # -- SpatialVLM --------------------------------------------------------------------------
    def score(self, samples: Sequence[Sample]) -> List[RelationScore]:
        rows = self._rows(samples)
        if not rows:
            return []
        self.model.eval()
        with torch.no_grad():
            logits = self._logits(
                [s.image for s, _ in rows], [r.subject_description for _, r in rows], [r.reference_description for _, r in rows]
            )
        out = []
        for (s, r), lg in zip(rows, logits):
            y = self._targets(r.terms)
            loss = float(torch.nn.functional.binary_cross_entropy_with_logits(lg, y, reduction="sum"))
            p = torch.sigmoid(lg)
            pred = [t for t, v in zip(self.terms, p) if v >= 0.5]
            out.append(
                RelationScore(
                    sample_id=s.sample_id,
                    caption=r.caption,
                    terms=list(r.terms),
                    predicted=" and ".join(pred),
                    loss=loss,
                    correct=set(pred) == set(r.terms),
                    confidence=float(np.exp(-loss)),
                )
            )
        return out

    def _ensure_lora(self) -> None:
        from peft import LoraConfig, PeftModel, get_peft_model

        if isinstance(self.model, PeftModel):
            for n, p in self.model.named_parameters():
                p.requires_grad_("lora_" in n)
            return
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, lora_dropout=0.0, init_lora_weights=True)
        # a fresh adapter's weights from a fixed seed, as AdapterHost does: the same whenever it is built
        # (the paper loop builds it at the first fine-tune, the background loop before the loop starts)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.model = get_peft_model(self.base, cfg)

    def ensure_adapter(self) -> None:
        self._ensure_lora()

    def fine_tune(
        self,
        samples: Sequence[Sample],
        steps: int,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[threading.Event] = None,
    ) -> FineTuneResult:
        rows = self._rows(samples)
        if not rows:
            raise ValueError("no captioned relations to fine-tune on")
        self._ensure_lora()
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.lr)
        self.model.train()
        losses: List[float] = []
        done = 0
        for step in range(steps):
            if cancel is not None and cancel.is_set():
                return FineTuneResult(steps=done, samples_used=len(samples), final_loss=losses[-1] if losses else float("nan"), losses=losses, cancelled=True)
            idx = self._rng.integers(0, len(rows), size=min(self.batch_size, len(rows)))
            batch = [rows[i] for i in idx]
            logits = self._logits([s.image for s, _ in batch], [r.subject_description for _, r in batch], [r.reference_description for _, r in batch])
            y = torch.stack([self._targets(r.terms) for _, r in batch])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum") / len(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            done = step + 1
            if progress is not None:
                progress(done, steps, losses[-1])
        self.model.eval()
        return FineTuneResult(steps=done, samples_used=len(samples), final_loss=losses[-1] if losses else float("nan"), losses=losses)

    def _probs(self, image: np.ndarray, subject: str, reference: str) -> Dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            p = torch.sigmoid(self._logits([image], [subject], [reference])[0])
        return {t: float(v) for t, v in zip(self.terms, p)}

    def _relation_terms(self, relation: str) -> List[str]:
        terms = [t.strip() for t in relation.replace(",", " and ").split(" and ") if t.strip()]
        bad = [t for t in terms if t not in self.terms]
        if not terms or bad:
            raise ValueError(f"unknown relation {relation!r}; known terms: {', '.join(self.terms)}")
        return terms

    def where(self, image: np.ndarray, subject: str, reference: str) -> Dict[str, float]:
        return self._probs(image, subject, reference)

    def check(self, image: np.ndarray, subject: str, relation: str, reference: str) -> Tuple[bool, float]:
        p = float(np.prod([self._probs(image, subject, reference)[t] for t in self._relation_terms(relation)]))
        return p >= 0.5, p

    def what(self, image: np.ndarray, relation: str, reference: str, candidates: Sequence[str]) -> List[Tuple[str, float]]:
        terms = self._relation_terms(relation)
        scored = [(c, float(np.prod([self._probs(image, c, reference)[t] for t in terms]))) for c in candidates]
        return sorted(scored, key=lambda x: -x[1])

    def save_adapter(self, directory: str) -> str:
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            raise ValueError("no adapter is active (fine-tune first)")
        directory = os.path.abspath(directory)
        parent = os.path.dirname(directory)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-adapter-", dir=parent)
        try:
            self.model.save_pretrained(tmp)
            # like AdapterHost: record the base it was trained on (the nodes load no adapter without it)
            from rls3_ros.vlm.adapter_trust import model_fingerprint, write_adapter_meta

            write_adapter_meta(tmp, model_fingerprint(self), self.family)
            if os.path.exists(directory):
                old = tempfile.mkdtemp(prefix=".old-adapter-", dir=parent)
                os.rename(directory, os.path.join(old, "a"))
                os.rename(tmp, directory)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._adapter_path = directory
        return directory

    def load_adapter(self, directory: str) -> None:
        from peft import PeftModel

        if not os.path.isfile(os.path.join(directory, "adapter_config.json")):
            raise ValueError(f"{directory!r} holds no peft adapter (adapter_config.json missing)")
        base = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        if isinstance(self.model, PeftModel):
            self.model = self.model.unload()
            base = self.model
        try:
            self.model = PeftModel.from_pretrained(base, directory)
        except Exception as e:  # noqa: BLE001 - any peft failure is a bad adapter
            raise ValueError(f"cannot load adapter {directory!r}: {e}") from e
        self.model.eval()
        self._adapter_path = os.path.abspath(directory)

    def reset_adapter(self) -> None:
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model = self.model.unload()
            self.base = self.model
        self._adapter_path = ""


def load(arg: str = "", lora: Optional[dict] = None) -> TinySpatialVLM:
    """Loader for ``py:vlm_test_model:load[:<dir>]`` (``lora``: learning_rate / batch_size)."""
    kw = {k: v for k, v in {"lr": (lora or {}).get("learning_rate"), "batch_size": (lora or {}).get("batch_size")}.items()
          if v is not None}
    if not arg:
        return TinySpatialVLM(**kw)
    path = os.path.join(arg, "base.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no base model at {path} (create it with vlm_test_model.save_base)")
    net = TinySpatialNet()
    net.load_state_dict(torch.load(path, weights_only=True))
    return TinySpatialVLM(net, **kw)


class GatedAdapterVLM(TinySpatialVLM):
    """TinySpatialVLM whose ``load_adapter`` lasts as long as a test wants: it listens on the Unix
    socket ``<gate>/open.sock``, creates ``<gate>/loading`` and blocks in ``accept`` until the test
    calls :func:`open_gate` (an hour at most). What happens during an adapter load is then tested by
    events, not by how much fits into a fixed delay."""

    def __init__(self, gate: str, **kw) -> None:
        super().__init__(**kw)
        self.gate = gate

    def load_adapter(self, directory: str) -> None:
        os.makedirs(self.gate, exist_ok=True)
        path = os.path.join(self.gate, GATE_SOCKET)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            listener.listen(1)
            listener.settimeout(3600.0)
            with open(os.path.join(self.gate, "loading"), "w"):
                pass
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                raise RuntimeError(f"the test never opened {path}") from None
            finally:
                os.unlink(path)
            conn.close()
        super().load_adapter(directory)


GATE_SOCKET = "open.sock"


def open_gate(gate) -> bool:
    """Let a held ``GatedAdapterVLM.load_adapter`` go on; False when no load is waiting at ``gate``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(os.path.join(str(gate), GATE_SOCKET))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


def load_gated_adapter(arg: str, lora: Optional[dict] = None) -> GatedAdapterVLM:
    """Loader for ``py:vlm_test_model:load_gated_adapter:<gate dir>`` (see ``GatedAdapterVLM``)."""
    return GatedAdapterVLM(arg)


# -- synthetic captioned samples --------------------------------------------------------
COLOURS = {"red square": (220, 30, 30), "blue square": (30, 60, 220), "green square": (30, 190, 60)}


def make_image(positions: Dict[str, Tuple[int, int]], size: int = 64) -> np.ndarray:
    img = np.full((size, size, 3), 235, np.uint8)
    for name, (x, y) in positions.items():
        img[max(0, y - 6) : y + 6, max(0, x - 6) : x + 6] = COLOURS[name]
    return img


def make_samples(n: int, seed: int = 0, size: int = 64) -> List[Sample]:
    """Samples with two or three squares; relations in the image plane (left/right, above/below)."""
    rng = np.random.default_rng(seed)
    cam = CameraModel.look_at((0.0, -2.0, 1.0), (0.0, 0.0, 0.5), size, size, 60.0)
    out = []
    names = list(COLOURS)
    for i in range(n):
        k = 3 if i % 2 else 2
        chosen = [names[j] for j in rng.permutation(len(names))[:k]]
        pos = {c: (int(rng.integers(8, size - 8)), int(rng.integers(8, size - 8))) for c in chosen}
        img = make_image(pos, size)
        objs = [
            ObjectState(
                id=c.split()[0], category="square", description=c, position=(0.0, 0.0, 0.0),
                bbox=(pos[c][0] - 6, pos[c][1] - 6, pos[c][0] + 6, pos[c][1] + 6), active=True,
            )
            for c in chosen
        ]
        rels = []
        for a in chosen:
            for b in chosen:
                if a == b:
                    continue
                (xa, ya), (xb, yb) = pos[a], pos[b]
                terms = []
                if abs(xa - xb) >= 4:
                    terms.append("left" if xa < xb else "right")
                if abs(ya - yb) >= 4:
                    terms.insert(0, "above" if ya < yb else "below")
                if not terms:
                    continue
                rels.append(
                    SpatialRelation(
                        subject_id=a.split()[0], reference_id=b.split()[0], subject_description=a,
                        reference_description=b, terms=terms, caption=make_caption(a, terms, b),
                    )
                )
        scene = SceneState(scene_id=f"squares-{seed}-{i}", scene_type="test", seed=seed, camera=cam, objects=objs, stamp_ns=i)
        out.append(Sample(sample_id=f"t{seed}-{i}", image=img, scene=scene, relations=rels, episode=0, step=i))
    return out


# -- a scripted promotion gate ------------------------------------------------------------
# relations answered correctly (the first N of every scored batch) by the adapter of fine-tune k
# (iter_000k; 0 = the base): the gate must refuse 1, 3, 5, 7 (fewer or as many) and promote 2, 4, 6
SCRIPTED_GATE = {0: 3, 1: 1, 2: 6, 3: 6, 4: 9, 5: 4, 6: 11, 7: 11}


class ScriptedGateVLM(TinySpatialVLM):
    """TinySpatialVLM (real peft adapters, saved and loaded as usual) whose scores say which relations
    are answered correctly by a fixed script per fine-tuning iteration: what the promotion gate decides
    is then known in advance, and a test can check that the query server serves exactly that."""

    def score(self, samples):
        import re

        out = super().score(samples)
        m = re.search(r"iter_0*(\d+)", os.path.basename(self.adapter or ""))
        k = int(m.group(1)) if m else 0
        good = SCRIPTED_GATE.get(k, SCRIPTED_GATE[max(SCRIPTED_GATE)])
        for i, s in enumerate(out):
            s.correct = i < good
        return out


def load_scripted_gate(arg: str = "", lora: Optional[dict] = None) -> ScriptedGateVLM:
    """Loader for ``py:vlm_test_model:load_scripted_gate`` (see ``ScriptedGateVLM``)."""
    kw = {k: v for k, v in {"lr": (lora or {}).get("learning_rate"), "batch_size": (lora or {}).get("batch_size")}.items()
          if v is not None}
    return ScriptedGateVLM(**kw)
