"""The served base's identity (weights fingerprint, family, module names) and the adapter's record
of the base it was trained on (``rls3_adapter.json``)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, FrozenSet, Optional

from rls3_ros.vlm.adapter_trust.policy import ADAPTER_META, BaseIdentity


def weights_fingerprint(module) -> str:
    """Short hash of a torch module's base weights (LoRA layers ignored, peft's ``base_layer``
    wrapping undone, so it is the same before and after an adapter is injected). Tensors over
    1 MiB are hashed by their ends and a strided sample (cost bounded for multi-GB bases)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    items = {}
    for k, v in module.state_dict().items():
        if "lora_" in k or ".modules_to_save." in k:
            continue
        items[k.replace(".base_layer.", ".").replace(".original_module.", ".")] = v
    for k in sorted(items):
        t = items[k].detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}|{t.dtype}|{tuple(items[k].shape)}|".encode())
        if t.numel() == 0:
            continue
        b = t.view(torch.uint8)
        n = b.numel()
        if n <= 1 << 20:
            h.update(b.numpy().tobytes())
        else:
            step = max(1, n // 65536)
            for part in (b[: 1 << 19], b[-(1 << 19):], b[::step][:65536]):
                h.update(part.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _base_module(model):
    try:
        from torch import nn
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    host = getattr(model, "host", None)
    for m in (getattr(host, "base", None), getattr(model, "base", None)):
        if isinstance(m, nn.Module):
            return m
    return None


def model_fingerprint(model) -> str:
    """The base fingerprint of a SpatialVLM: its own (``base_fingerprint``, e.g. the grounded
    model's or an AdapterHost's), else a hash of its base module's weights; "" if unknown."""
    for owner in (model, getattr(model, "host", None)):
        fp = getattr(owner, "base_fingerprint", None) if owner is not None else None
        if isinstance(fp, str) and fp:
            return fp
    m = _base_module(model)
    return weights_fingerprint(m) if m is not None else ""


def module_names(model) -> FrozenSet[str]:
    """Names LoRA ``target_modules`` may use for ``model``'s base: every module's last name part
    and dotted suffixes (peft's own matching), without peft's injected LoRA sub-modules."""
    m = _base_module(model)
    if m is None:
        return frozenset()
    out = set()
    for name, _ in m.named_modules():
        if not name or "lora_" in name or name.endswith(".base_layer") or ".base_layer." in name:
            continue
        parts = name.split(".")
        for i in range(len(parts)):
            out.add(".".join(parts[i:]))
    return frozenset(out)


def base_identity(model) -> BaseIdentity:
    """:class:`BaseIdentity` of a freshly loaded SpatialVLM."""
    return BaseIdentity(model_fingerprint(model), str(getattr(model, "family", "") or ""), module_names(model))


def write_adapter_meta(directory: str, fingerprint: str, family: str = "", base: str = "",
                       extra: Optional[Dict[str, Any]] = None) -> str:
    """Write (or complete) ``rls3_adapter.json`` in ``directory`` atomically: the base fingerprint
    and family the adapter was trained on. An existing file keeps its other keys; a different
    recorded fingerprint is an error (ValueError)."""
    path = os.path.join(directory, ADAPTER_META)
    meta: Dict[str, Any] = {}
    if os.path.isfile(path) and not os.path.islink(path):
        with open(path) as f:
            try:
                meta = json.load(f)
            except ValueError:
                meta = {}
        if not isinstance(meta, dict):
            meta = {}
    theirs = meta.get("base_fingerprint")
    if theirs and fingerprint and theirs != fingerprint:
        raise ValueError(f"{path} records base {theirs!r}, not {fingerprint!r}")
    if fingerprint:
        meta["base_fingerprint"] = fingerprint
    if family:
        meta.setdefault("family", family)
    if base:
        meta.setdefault("base", base)
    for k, v in (extra or {}).items():
        meta.setdefault(k, v)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + ADAPTER_META + ".")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
