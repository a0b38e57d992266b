"""What an adapter's files may say: ``adapter_config.json`` a plain LoRA config within limits,
``adapter_model.safetensors`` a header of LoRA tensors only with consistent sizes,
``rls3_adapter.json`` the fingerprint and family of the served base."""

from __future__ import annotations

import math
import os
import re
import struct
from typing import Any, Dict, Optional

from rls3_ros.vlm.adapter_trust.files import json_object
from rls3_ros.vlm.adapter_trust.policy import (ADAPTER_CONFIG, ADAPTER_META, ADAPTER_WEIGHTS, AdapterLimits,
                                               AdapterRefused, BaseIdentity)


# -- adapter_config.json -------------------------------------------------------------------------
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_SAFE_INIT = (True, False, "gaussian")  # PiSSA / OLoRA / LoftQ / EVA / CorDA inits do heavy work on load
# keys of peft's LoraConfig whose only accepted value is "off" (None / False / {} / [])
_OFF_KEYS = {
    "alora_invocation_tokens", "arrow_config", "corda_config", "eva_config", "kasa_config", "lora_ga_config",
    "monteclora_config", "velora_config", "use_bdlora", "layer_replication", "megatron_config", "trainable_token_indices",
    "target_parameters", "modules_to_save", "use_dora", "lora_bias", "use_qalora", "loftq_config",
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:  # an integer beyond float range
        return False


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:60] + "..."


def _check_rank(v, what: str, limits: AdapterLimits) -> None:
    if not _is_int(v) or not 1 <= v <= limits.max_rank:
        raise AdapterRefused(f"{what} must be an integer in 1..{limits.max_rank} (got {_short(v)})")


def _check_alpha(v, what: str, limits: AdapterLimits) -> None:
    if not _is_num(v) or not 0 < float(v) <= limits.max_alpha:
        raise AdapterRefused(f"{what} must be a finite number in (0, {limits.max_alpha:g}] (got {_short(v)})")


def _check_pattern(v, what: str, check, limits: AdapterLimits) -> None:
    if not isinstance(v, dict) or len(v) > limits.max_target_modules:
        raise AdapterRefused(f"{what} must be an object of at most {limits.max_target_modules} entries")
    for k, x in v.items():
        if len(k) > 200 or not _IDENT.match(k):
            raise AdapterRefused(f"{what} key {_short(k)} is not a module name")
        check(x, f"{what}[{k!r}]", limits)


def _module_list(v, what: str, base: Optional[BaseIdentity], limits: AdapterLimits, allow_none: bool) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, str):
        raise AdapterRefused(f"{what} must be a list of module names (a string is a regular expression to peft: "
                             "not accepted)")
    if not isinstance(v, list) or not v or len(v) > limits.max_target_modules:
        raise AdapterRefused(f"{what} must be a list of 1..{limits.max_target_modules} module names")
    known = base.module_names if base is not None else frozenset()
    for m in v:
        if not isinstance(m, str) or len(m) > 200 or not _IDENT.match(m):
            raise AdapterRefused(f"{what} entry {_short(m)} is not a module name")
        if known and m not in known:
            raise AdapterRefused(f"{what} entry {m!r} is no module of the served model")


def check_lora_config(doc: Dict[str, Any], base: Optional[BaseIdentity] = None,
                      limits: AdapterLimits = AdapterLimits()) -> None:
    """Raise AdapterRefused unless ``doc`` (a parsed adapter_config.json) is a plain LoRA config within ``limits``."""
    if doc.get("peft_type") != "LORA":
        raise AdapterRefused(f"{ADAPTER_CONFIG}: peft_type must be 'LORA' (got {_short(doc.get('peft_type'))})")
    for key in ("r", "lora_alpha", "target_modules"):
        if key not in doc:
            raise AdapterRefused(f"{ADAPTER_CONFIG}: {key} missing")
    p = f"{ADAPTER_CONFIG}: "
    for key, v in doc.items():
        if key == "peft_type":
            continue
        if key == "r":
            _check_rank(v, p + "r", limits)
        elif key == "lora_alpha":
            _check_alpha(v, p + "lora_alpha", limits)
        elif key == "rank_pattern":
            _check_pattern(v, p + "rank_pattern", _check_rank, limits)
        elif key == "alpha_pattern":
            _check_pattern(v, p + "alpha_pattern", _check_alpha, limits)
        elif key == "lora_dropout":
            if not _is_num(v) or not 0 <= float(v) < 1:
                raise AdapterRefused(f"{p}lora_dropout must be a finite number in [0, 1) (got {_short(v)})")
        elif key == "target_modules":
            _module_list(v, p + "target_modules", base, limits, allow_none=False)
        elif key == "exclude_modules":
            _module_list(v, p + "exclude_modules", None, limits, allow_none=True)
        elif key == "layers_to_transform":
            ok = v is None or (_is_int(v) and 0 <= v < 100000) or (
                isinstance(v, list) and len(v) <= 4096 and all(_is_int(x) and 0 <= x < 100000 for x in v))
            if not ok:
                raise AdapterRefused(f"{p}layers_to_transform must be null, a layer index or a list of them")
        elif key == "layers_pattern":
            ok = v is None or (isinstance(v, str) and _IDENT.match(v)) or (
                isinstance(v, list) and len(v) <= 16 and all(isinstance(x, str) and _IDENT.match(x) for x in v))
            if not ok:
                raise AdapterRefused(f"{p}layers_pattern must be null or module names (no regular expressions)")
        elif key == "bias":
            if v != "none":
                raise AdapterRefused(f"{p}bias must be 'none' (got {_short(v)})")
        elif key == "init_lora_weights":
            if not any(v is x or (isinstance(x, str) and v == x) for x in _SAFE_INIT):
                raise AdapterRefused(f"{p}init_lora_weights must be true, false or 'gaussian' (got {_short(v)})")
        elif key in ("fan_in_fan_out", "use_rslora", "inference_mode", "ensure_weight_tying"):
            if not isinstance(v, bool):
                raise AdapterRefused(f"{p}{key} must be true or false (got {_short(v)})")
        elif key in _OFF_KEYS:
            if not (v is None or v is False or v == {} or v == []):
                raise AdapterRefused(f"{p}{key} must be off (null/false) for a plain LoRA adapter (got {_short(v)})")
        elif key == "megatron_core":
            if v not in (None, "megatron.core"):  # peft imports this module by name
                raise AdapterRefused(f"{p}megatron_core must be 'megatron.core' or null (got {_short(v)})")
        elif key == "task_type":
            if v is not None:
                raise AdapterRefused(f"{p}task_type must be null (got {_short(v)})")
        elif key == "qalora_group_size":
            if not _is_int(v) or not 1 <= v <= 1 << 20:
                raise AdapterRefused(f"{p}qalora_group_size must be a positive integer (got {_short(v)})")
        elif key in ("base_model_name_or_path", "revision", "peft_version"):
            if v is not None and not (isinstance(v, str) and len(v) <= 4096):
                raise AdapterRefused(f"{p}{key} must be null or a string")
        elif key == "auto_mapping":  # only AutoPeftModel reads it (not used here)
            if v is not None and not (isinstance(v, dict) and len(v) <= 8 and all(
                    isinstance(k, str) and (x is None or isinstance(x, str)) for k, x in v.items())):
                raise AdapterRefused(f"{p}auto_mapping must be null or an object of strings")
        else:
            raise AdapterRefused(f"{p}unknown key {_short(key)} (not a plain peft LoRA option)")


# -- adapter_model.safetensors ---------------------------------------------------------------------
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2,
                "I8": 1, "U8": 1, "BOOL": 1}


def check_safetensors(path: str, limits: AdapterLimits = AdapterLimits()) -> int:
    """Check a (staged, regular) safetensors file's header: only LoRA tensors with consistent
    offsets and ranks within ``limits``; returns the number of tensors. AdapterRefused otherwise."""
    n_file = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise AdapterRefused(f"{ADAPTER_WEIGHTS} is truncated ({n_file} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > limits.max_header_bytes or 8 + n > n_file:
            raise AdapterRefused(f"{ADAPTER_WEIGHTS}: header length {n} is impossible (file {n_file} bytes, "
                                 f"cap {limits.max_header_bytes})")
        header = json_object(f.read(n), f"{ADAPTER_WEIGHTS} header")
    data = n_file - 8 - n
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise AdapterRefused(f"{ADAPTER_WEIGHTS}: __metadata__ must map names to strings")
    if not tensors:
        raise AdapterRefused(f"{ADAPTER_WEIGHTS} holds no tensors")
    if len(tensors) > limits.max_tensors:
        raise AdapterRefused(f"{ADAPTER_WEIGHTS} holds too many tensors ({len(tensors)} > {limits.max_tensors})")
    spans = []
    for name, t in tensors.items():
        what = f"{ADAPTER_WEIGHTS} tensor {_short(name)}"
        if len(name) > 1000 or "lora_" not in name:
            raise AdapterRefused(f"{what} is not a LoRA weight (only lora_* tensors are accepted)")
        if not isinstance(t, dict) or set(t) != {"dtype", "shape", "data_offsets"}:
            raise AdapterRefused(f"{what}: entry must have exactly dtype, shape, data_offsets")
        dtype, shape, offs = t["dtype"], t["shape"], t["data_offsets"]
        if dtype not in _DTYPE_BYTES:
            raise AdapterRefused(f"{what}: unknown dtype {_short(dtype)}")
        if not isinstance(shape, list) or len(shape) > 4 or not all(_is_int(d) and 0 <= d < 1 << 40 for d in shape):
            raise AdapterRefused(f"{what}: bad shape {_short(shape)}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs) and 0 <= offs[0] <= offs[1] <= data):
            raise AdapterRefused(f"{what}: data offsets {_short(offs)} outside the file's {data} data bytes")
        numel = 1
        for d in shape:
            numel *= d
        if numel * _DTYPE_BYTES[dtype] != offs[1] - offs[0]:
            raise AdapterRefused(f"{what}: shape {shape} {dtype} does not fill its {offs[1] - offs[0]} bytes")
        if "lora_A" in name and shape and shape[0] > limits.max_rank:
            raise AdapterRefused(f"{what}: rank {shape[0]} > {limits.max_rank}")
        if "lora_B" in name and len(shape) >= 2 and shape[1] > limits.max_rank:
            raise AdapterRefused(f"{what}: rank {shape[1]} > {limits.max_rank}")
        spans.append((offs[0], offs[1]))
    spans.sort()
    for (a0, a1), (b0, _b1) in zip(spans, spans[1:]):
        if b0 < a1:
            raise AdapterRefused(f"{ADAPTER_WEIGHTS}: tensors overlap")
    return len(tensors)


# -- rls3_adapter.json -------------------------------------------------------------------------------
def check_meta(doc: Dict[str, Any], base: Optional[BaseIdentity]) -> None:
    """Raise AdapterRefused unless the adapter's ``rls3_adapter.json`` fits the served ``base``."""
    fam = doc.get("family")
    if fam is not None and not isinstance(fam, str):
        raise AdapterRefused(f"{ADAPTER_META}: family must be a string")
    if base is not None and base.family and fam and fam != base.family:
        raise AdapterRefused(f"adapter is for a {fam[:40]!r} model, not the served {base.family!r}")
    theirs = doc.get("base_fingerprint")
    if not isinstance(theirs, str) or not theirs or len(theirs) > 128:
        raise AdapterRefused(f"{ADAPTER_META} records no base_fingerprint: cannot tell which base the adapter "
                             "was trained on (save it with the project's trainer)")
    if base is None or not base.fingerprint:
        raise AdapterRefused("the served model has no base fingerprint to check adapters against")
    if theirs != base.fingerprint:
        b = doc.get("base")
        named = f" ({b[:80]})" if isinstance(b, str) and b else ""
        raise AdapterRefused(f"adapter was trained on another base{named}, weights {theirs[:16]!r}, than the served "
                             f"one (weights {base.fingerprint[:16]!r}): an adapter only fits its own base")
