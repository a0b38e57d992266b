"""LoRA adapter handling shared by every model family (peft, standard on-disk format)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch
from torch import nn

from rls3_ros.vlm.adapter_trust import ADAPTER_META, weights_fingerprint


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (peft ``LoraConfig``)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = 1e-3
    batch_size: int = 32

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), bias="none")


ADAPTER_INIT_SEED = 0  # seed of a fresh LoRA adapter's initial weights (AdapterHost.ensure_adapter)


class AdapterHost:
    """Holds a base ``PreTrainedModel`` and at most one active peft LoRA adapter.

    ``model`` is what to call: the base model, or the ``PeftModel`` wrapping it.
    All switches happen under ``lock`` (an RLock the caller also holds while running the model),
    so a query never sees a half-swapped model.

    ``base_fingerprint`` (optional): a hash of the base weights, written into every saved adapter's
    ``rls3_adapter.json``; an adapter whose recorded fingerprint differs is refused on load (it was
    trained on another base). ``refit_hint`` ends that refusal's message (which base to use instead).
    Without one given, the fingerprint is ``adapter_trust.weights_fingerprint`` of the base,
    computed on first use: every family's adapters record their base, which the nodes require.
    """

    def __init__(self, base: nn.Module, lora: LoraSettings, family: str, base_spec: str = "",
                 base_fingerprint: str = "", refit_hint: str = ""):
        self.base = base
        self.model: nn.Module = base
        self.lora = lora
        self.family = family
        self.base_spec = base_spec
        self._base_fingerprint = base_fingerprint
        self.refit_hint = refit_hint
        self.lock = threading.RLock()
        self.path = ""
        for p in self.base.parameters():
            p.requires_grad_(False)

    @property
    def base_fingerprint(self) -> str:
        if not self._base_fingerprint:
            with self.lock:
                if not self._base_fingerprint:
                    self._base_fingerprint = weights_fingerprint(self.base)
        return self._base_fingerprint

    @base_fingerprint.setter
    def base_fingerprint(self, value: str) -> None:
        self._base_fingerprint = value

    @property
    def has_adapter(self) -> bool:
        return self.model is not self.base

    def ensure_adapter(self) -> None:
        """Add a fresh LoRA adapter if none is active. Its random initial weights come from a fixed
        seed, not from torch's global generator: a fresh adapter is the same whatever used that
        generator before (the SAC agent's sampling, a second copy of the model for background
        fine-tuning), so a run's fine-tunes do not depend on them."""
        import torch
        from peft import get_peft_model

        with self.lock:
            if not self.has_adapter:
                try:
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(ADAPTER_INIT_SEED)
                        self.model = get_peft_model(self.base, self.lora.peft_config())
                except ValueError as e:
                    raise ValueError(f"cannot add LoRA with target_modules={self.lora.target_modules}: {e}") from e
                self.model.eval()

    def trainable_parameters(self) -> List[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, directory: str) -> str:
        """Save the active adapter in peft format: written into a hidden temp dir, every file and the
        directory fsynced, then renamed into place (``rls3_ros.core.atomic_io.atomic_dir``; a full
        disk raises ``DiskFullError`` and leaves the previous adapter as it was)."""
        from rls3_ros.core.atomic_io import atomic_dir

        with self.lock:
            if not self.has_adapter:
                raise ValueError("no active adapter to save (fine-tune or load one first)")
            directory = os.path.abspath(directory)
            with atomic_dir(directory) as tmp:
                self.model.save_pretrained(tmp)
                meta = {"family": self.family, "base": self.base_spec}
                if self.base_fingerprint:
                    meta["base_fingerprint"] = self.base_fingerprint
                meta.update(target_modules=list(self.lora.target_modules), r=self.lora.r)
                with open(os.path.join(tmp, ADAPTER_META), "w") as f:
                    json.dump(meta, f, indent=1)
            self.path = directory
            return directory

    def load(self, directory: str) -> None:
        """Activate the adapter in ``directory`` (replaces the active one); ValueError with a reason."""
        from peft import PeftConfig, PeftModel

        directory = os.path.abspath(directory)
        if not os.path.isdir(directory):
            raise ValueError(f"adapter directory {directory} does not exist")
        if not os.path.isfile(os.path.join(directory, "adapter_config.json")):
            raise ValueError(f"{directory} is not a peft adapter (no adapter_config.json)")
        meta_path = os.path.join(directory, ADAPTER_META)
        if os.path.isfile(meta_path):
            try:
                meta = json.load(open(meta_path))
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"unreadable {ADAPTER_META} in {directory}: {e}") from e
            if meta.get("family") and meta["family"] != self.family:
                raise ValueError(f"adapter in {directory} is for a {meta['family']!r} model, not {self.family!r}")
            theirs = meta.get("base_fingerprint")
            if theirs and self.base_fingerprint and theirs != self.base_fingerprint:
                raise ValueError(
                    f"adapter in {directory} was trained on another base model ({meta.get('base', '?')}, weights "
                    f"{theirs}) than this one ({self.base_spec}, weights {self.base_fingerprint}); an adapter only "
                    "fits its own base" + (f": {self.refit_hint}" if self.refit_hint else ""))
        try:
            PeftConfig.from_pretrained(directory)
        except Exception as e:  # noqa: BLE001 - peft raises several types
            raise ValueError(f"bad adapter_config.json in {directory}: {e}") from e
        with self.lock:
            previous = None
            if self.has_adapter:
                from peft import get_peft_model_state_dict

                previous = (self.model.peft_config["default"], get_peft_model_state_dict(self.model), self.path)
            self._unwrap()
            try:
                self._wrap_with(PeftConfig.from_pretrained(directory), directory)
            except Exception as e:  # noqa: BLE001 - peft raises several types
                self._unwrap()
                if previous is not None:
                    self._wrap_with(previous[0], None, previous[1])
                    self.path = previous[2]
                raise ValueError(f"adapter in {directory} does not fit this model: {e}") from e
            self.path = directory

    def _wrap_with(self, config, directory: Optional[str], state: Optional[dict] = None) -> None:
        from peft import get_peft_model
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        config.inference_mode = False
        model = get_peft_model(self.base, config)
        self.model = model  # so _unwrap can undo a partial load
        weights = state if state is not None else load_peft_weights(directory)
        res = set_peft_model_state_dict(model, weights)
        unexpected = [k for k in getattr(res, "unexpected_keys", []) if "lora_" in k]
        if unexpected:
            raise ValueError(f"weights for modules this model lacks: {unexpected[:3]}")
        model.eval()

    def _unwrap(self) -> None:
        if self.has_adapter:
            self.model.unload()  # removes LoRA layers from the shared base modules
            self.model = self.base
        for p in self.base.parameters():
            p.requires_grad_(False)

    def reset(self) -> None:
        with self.lock:
            self._unwrap()
            self.path = ""


class HostedAdapter:
    """The adapter methods of a SpatialVLM whose LoRA adapter lives in ``self.host`` (an
    AdapterHost); list it before SpatialVLM in the bases."""

    host: AdapterHost

    @property
    def adapter(self) -> str:
        return self.host.path

    def save_adapter(self, directory: str) -> str:
        return self.host.save(directory)

    def ensure_adapter(self) -> None:
        self.host.ensure_adapter()

    def load_adapter(self, directory: str) -> None:
        self.host.load(directory)

    def reset_adapter(self) -> None:
        self.host.reset()
