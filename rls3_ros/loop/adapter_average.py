"""Weight averaging of the base and a fine-tuned LoRA adapter (pure Python + torch, no ROS).

A LoRA adapter adds ``scale * B @ A`` to each target weight; multiplying every ``B`` by ``f`` gives the
model ``base + f * (tuned - base)``, the weight average of the base and the fine-tuned model, and it
is still an ordinary LoRA adapter of the same base (same rank, modules and fingerprint), so it saves,
passes the promotion gate and loads in the query server like any other. Measured on the served model
(docs/learning.md, "Recipe search"): f = 0.5 halved the damage of every recipe that lowered it and gave
the best servable recipe's validation and where-exact gains (``loop.adapter_scale``).
"""

from __future__ import annotations

import torch


def lora_b_weights(model: torch.nn.Module):
    """Every LoRA ``B`` weight of ``model`` (a peft model; none for a model without an adapter)."""
    from peft.tuners.lora import LoraLayer

    for m in model.modules():
        if isinstance(m, LoraLayer):
            for b in m.lora_B.values():
                yield b.weight


def average_with_base(vlm, factor: float) -> int:
    """Scale the active adapter of ``vlm`` (a SpatialVLM whose adapter lives in ``vlm.host``) toward the
    base: ``base + factor * delta``. Returns the number of LoRA layers scaled; ValueError without an adapter."""
    factor = float(factor)
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"adapter averaging factor must be in (0, 1], got {factor}")
    host = getattr(vlm, "host", None)
    with vlm.lock:
        if host is None or not host.has_adapter:
            raise ValueError("no active LoRA adapter to average with the base")
        n = 0
        with torch.no_grad():
            for w in lora_b_weights(host.model):
                w.mul_(factor)
                n += 1
        if hasattr(vlm, "_att_memo"):
            vlm._att_memo = None  # cached attention of the old weights
        return n
