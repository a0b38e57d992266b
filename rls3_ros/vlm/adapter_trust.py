"""Checks for LoRA adapter directories named by untrusted parties (pure Python, no ROS).

A ROS 2 domain without SROS2 authenticates nobody: an adapter path in a ``SetAdapter`` request or
an ``AdapterInfo`` announcement is chosen by anyone on the network. Before a node does any work for
such a path it must hold that:

- the path lies inside the configured adapter roots after resolving symlinks and ``..``; a path
  outside them, a missing path and a path that is no directory get the *same* refusal, so the
  answer never tells whether an arbitrary path exists;
- every file read is a regular file (``lstat``, then ``open(O_NOFOLLOW | O_NONBLOCK)`` and
  ``fstat``: a FIFO, a device or a symlink is refused without blocking on it) under a size cap;
- ``adapter_config.json`` is a plain LoRA config within limits (rank <= ``max_rank``, finite alpha,
  target modules that are module names of the served base, no regex, no code- or work-selecting
  options such as ``megatron_core``, ``layer_replication`` or PiSSA/LoftQ initialisation, no key
  this module does not know);
- ``adapter_model.safetensors`` exists (pickled ``adapter_model.bin`` is never loaded) and its
  header describes only LoRA tensors of consistent sizes;
- ``rls3_adapter.json`` exists (when the policy asks for it) and records the fingerprint of the
  served base (an adapter only fits the base it was trained on) and its family.

The checked bytes are copied into a private staging directory and the model loads from there,
so what is loaded is exactly what was checked (a file swapped after the check is never read by
the model or peft; safetensors would hold the GIL while blocked on a FIFO and freeze every
thread of the process). :func:`stage_adapter_bounded` runs the read on a worker thread with a
timeout. Every refusal raises :class:`AdapterRefused` with a one-line reason.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Iterable, Optional, Sequence, Tuple

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PICKLE = "adapter_model.bin"
ADAPTER_META = "rls3_adapter.json"


class AdapterRefused(ValueError):
    """An adapter directory that is not loaded; the message says why (one line)."""


@dataclass(frozen=True)
class AdapterLimits:
    """Caps checked before any adapter file is parsed or loaded."""

    max_rank: int = 256  # LoRA r (and every rank_pattern value)
    max_alpha: float = 65536.0  # lora_alpha (and alpha_pattern values): finite, > 0
    max_config_bytes: int = 64 * 1024  # adapter_config.json
    max_meta_bytes: int = 64 * 1024  # rls3_adapter.json
    max_weights_bytes: int = 256 * 1024 * 1024  # adapter_model.safetensors
    max_header_bytes: int = 1024 * 1024  # the safetensors JSON header
    max_tensors: int = 10000
    max_entries: int = 1000  # directory entries scanned
    max_target_modules: int = 64
    max_path_chars: int = 4096


@dataclass(frozen=True)
class BaseIdentity:
    """What the served base is: adapters must record this ``fingerprint`` (and ``family``);
    their ``target_modules`` must name modules of the base (``module_names``, empty: any identifier)."""

    fingerprint: str = ""
    family: str = ""
    module_names: FrozenSet[str] = frozenset()


@dataclass(frozen=True)
class AdapterPolicy:
    """Where adapters may come from and what they may be. ``roots`` None: anywhere (a local
    operator's own path, e.g. ``rls3 query --adapter``); otherwise real (resolved) directories."""

    roots: Optional[Tuple[str, ...]] = None
    limits: AdapterLimits = field(default_factory=AdapterLimits)
    require_meta: bool = True  # rls3_adapter.json with the base fingerprint must exist

    @classmethod
    def for_roots(cls, roots: Iterable[str], base_dir: Optional[str] = None, **kw) -> "AdapterPolicy":
        """A policy confined to ``roots`` (relative ones resolved against ``base_dir`` or the cwd)."""
        base_dir = base_dir or os.getcwd()
        real = []
        for r in roots:
            r = str(r).strip()
            if not r:
                continue
            real.append(os.path.realpath(os.path.join(base_dir, os.path.expanduser(r))))
        if not real:
            raise ValueError("adapter_roots is empty: name at least one directory adapters may be loaded from")
        return cls(roots=tuple(dict.fromkeys(real)), **kw)


def parse_roots(value: Any) -> Tuple[str, ...]:
    """A node parameter's roots: a list of paths, or one string (several separated by ``os.pathsep``)."""
    if isinstance(value, str):
        items = value.split(os.pathsep)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise ValueError(f"adapter_roots must be a list of directories (got {type(value).__name__} {value!r})")
    items = [i.strip() for i in items if i.strip()]
    if not items:
        raise ValueError("adapter_roots must name at least one directory")
    return tuple(items)


# -- paths ---------------------------------------------------------------------------------
def _outside(path: str, policy: AdapterPolicy) -> AdapterRefused:
    shown = path if len(path) <= 200 else path[:200] + "..."
    return AdapterRefused(f"no adapter directory {shown!r} inside the adapter roots "
                          f"({', '.join(policy.roots or ())}); adapters load only from there (parameter adapter_roots)")


def resolve_adapter_dir(path: str, policy: AdapterPolicy) -> str:
    """The real directory of ``path`` if it is an existing directory inside ``policy.roots``;
    else AdapterRefused with one message for missing, forbidden and not-a-directory alike."""
    path = str(path or "").strip()
    if not path:
        raise AdapterRefused("empty adapter path")
    if policy.roots is None:
        try:
            real = os.path.realpath(path)
            st = os.stat(real)
        except (OSError, ValueError):
            raise AdapterRefused(f"no adapter directory {path!r}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise AdapterRefused(f"no adapter directory {path!r}")
        return real
    if len(path) > policy.limits.max_path_chars or "\x00" in path:
        raise _outside(path, policy)
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        raise _outside(path, policy) from None
    inside = any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in policy.roots)
    if not inside:
        raise _outside(path, policy)
    try:
        st = os.lstat(real)
    except (OSError, ValueError):
        raise _outside(path, policy) from None
    if not stat.S_ISDIR(st.st_mode):
        raise _outside(path, policy)
    return real


# -- reading files -----------------------------------------------------------------------------
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(directory: str, name: str, cap: int) -> Tuple[int, int]:
    """(fd, size) of ``directory/name`` opened read-only if it is a regular file of at most ``cap`` bytes."""
    p = os.path.join(directory, name)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise AdapterRefused(f"{name} missing") from None
    except OSError as e:
        raise AdapterRefused(f"{name} unreadable ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise AdapterRefused(f"{name} is {_kind(st.st_mode)}, not a regular file")
    if st.st_size > cap:
        raise AdapterRefused(f"{name} is too large ({st.st_size} bytes > {cap})")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except OSError as e:
        raise AdapterRefused(f"{name} unreadable ({e.strerror})") from None
    try:
        st = os.fstat(fd)  # the file opened, not the one lstat saw (swapped meanwhile?)
        if not stat.S_ISREG(st.st_mode):
            raise AdapterRefused(f"{name} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > cap:
            raise AdapterRefused(f"{name} is too large ({st.st_size} bytes > {cap})")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _copy_regular(directory: str, name: str, cap: int, out_path: Optional[str] = None) -> bytes:
    """Read ``directory/name`` (a regular file, at most ``cap`` bytes); write it to ``out_path``
    if given (returns b"" then), else return its bytes."""
    fd, _ = _open_regular(directory, name, cap)
    chunks = []
    total = 0
    out = open(out_path, "xb") if out_path else None
    try:
        while True:
            b = os.read(fd, 1 << 20)  # releases the GIL: a slow disk blocks this thread only
            if not b:
                break
            total += len(b)
            if total > cap:  # grew after the checks
                raise AdapterRefused(f"{name} is too large (more than {cap} bytes)")
            if out is not None:
                out.write(b)
            else:
                chunks.append(b)
    finally:
        os.close(fd)
        if out is not None:
            out.close()
    return b"".join(chunks)


def _json_object(raw: bytes, name: str) -> Dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        msg = " ".join(str(e).split())[:120]
        raise AdapterRefused(f"{name} is not valid JSON ({type(e).__name__}: {msg})") from None
    if not isinstance(doc, dict):
        raise AdapterRefused(f"{name} must hold a JSON object (got {type(doc).__name__})")
    return doc


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
        header = _json_object(f.read(n), f"{ADAPTER_WEIGHTS} header")
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


# -- staging -----------------------------------------------------------------------------------------
@dataclass
class StagedAdapter:
    """A checked copy of an adapter in a private directory; ``source`` is the requested path
    (absolute), ``real`` its resolved directory. Remove with :meth:`cleanup` (or use ``with``)."""

    source: str
    real: str
    directory: str
    config: Dict[str, Any]
    meta: Optional[Dict[str, Any]]

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "StagedAdapter":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


def stage_adapter(path: str, policy: AdapterPolicy, base: Optional[BaseIdentity] = None,
                  stage_root: Optional[str] = None) -> StagedAdapter:
    """Check the adapter at ``path`` against ``policy`` and ``base`` and copy the checked files
    into a new private directory (see module docstring). AdapterRefused with a reason otherwise."""
    limits = policy.limits
    real = resolve_adapter_dir(path, policy)
    try:
        with os.scandir(real) as it:
            names = set()
            for i, e in enumerate(it):
                if i >= limits.max_entries:
                    raise AdapterRefused(f"adapter directory holds more than {limits.max_entries} entries")
                names.add(e.name)
    except OSError as e:
        raise AdapterRefused(f"adapter directory unreadable ({e.strerror})") from None
    if ADAPTER_CONFIG not in names:
        raise AdapterRefused(f"not a peft adapter ({ADAPTER_CONFIG} missing)")
    if ADAPTER_WEIGHTS not in names:
        if ADAPTER_PICKLE in names:
            raise AdapterRefused(f"{ADAPTER_WEIGHTS} missing: pickled weights ({ADAPTER_PICKLE}) are never loaded")
        raise AdapterRefused(f"{ADAPTER_WEIGHTS} missing")
    if policy.require_meta and ADAPTER_META not in names:
        raise AdapterRefused(f"{ADAPTER_META} missing: the adapter does not record the base it was trained on")
    config = _json_object(_copy_regular(real, ADAPTER_CONFIG, limits.max_config_bytes), ADAPTER_CONFIG)
    check_lora_config(config, base, limits)
    meta = None
    if ADAPTER_META in names:
        meta = _json_object(_copy_regular(real, ADAPTER_META, limits.max_meta_bytes), ADAPTER_META)
        if policy.require_meta:
            check_meta(meta, base)
        elif base is not None and base.family and isinstance(meta.get("family"), str) and meta["family"] \
                and meta["family"] != base.family:
            raise AdapterRefused(f"adapter is for a {meta['family'][:40]!r} model, not the served {base.family!r}")
    stage = tempfile.mkdtemp(prefix="rls3-adapter-", dir=stage_root)
    try:
        os.chmod(stage, 0o700)
        with open(os.path.join(stage, ADAPTER_CONFIG), "w") as f:
            json.dump(config, f)
        if meta is not None:
            with open(os.path.join(stage, ADAPTER_META), "w") as f:
                json.dump(meta, f)
        weights = os.path.join(stage, ADAPTER_WEIGHTS)
        _copy_regular(real, ADAPTER_WEIGHTS, limits.max_weights_bytes, out_path=weights)
        check_safetensors(weights, limits)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return StagedAdapter(os.path.abspath(path), real, stage, config, meta)


# A read that does not finish within its timeout is abandoned (its thread stages on and then
# removes what it staged). While one is still running no other starts: a blocked disk holds at
# most one thread, whatever the number of requests.
_stuck_lock = threading.Lock()
_stuck: Dict[int, Tuple[str, float]] = {}  # thread id -> (path, abandoned at)


def stage_adapter_bounded(path: str, policy: AdapterPolicy, base: Optional[BaseIdentity] = None,
                          timeout: float = 60.0, stage_root: Optional[str] = None) -> StagedAdapter:
    """:func:`stage_adapter` on a worker thread, given up after ``timeout`` s (AdapterRefused)."""
    with _stuck_lock:
        if _stuck:
            p, since = next(iter(_stuck.values()))
            raise AdapterRefused(f"an earlier adapter read ({p[:200]!r}) is still blocked after its timeout "
                                 f"({time.monotonic() - since:.0f} s ago); no new adapter is read until it ends")
    box: Dict[str, Any] = {}
    done = threading.Event()
    state = {"abandoned": False}
    lock = threading.Lock()

    def work() -> None:
        try:
            box["staged"] = stage_adapter(path, policy, base, stage_root)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = e
        with lock:
            done.set()
            abandoned = state["abandoned"]
        if abandoned:
            if "staged" in box:
                box["staged"].cleanup()
            with _stuck_lock:
                _stuck.pop(threading.get_ident(), None)

    t = threading.Thread(target=work, daemon=True, name="adapter-read")
    t.start()
    done.wait(timeout)
    with lock:
        if not done.is_set():
            state["abandoned"] = True
            with _stuck_lock:
                _stuck[t.ident] = (str(path), time.monotonic())
            raise AdapterRefused(f"reading adapter {str(path)[:200]!r} did not finish within {timeout:g} s "
                                 "(parameter adapter_load_timeout); kept the current adapter")
    if "error" in box:
        raise box["error"]
    return box["staged"]


# -- loading into a model ------------------------------------------------------------------------------
def relabel_adapter(model, path: str) -> None:
    """Make ``model.adapter`` report ``path`` (the requested directory), not the staging copy."""
    host = getattr(model, "host", None)
    if host is not None and hasattr(host, "path"):
        host.path = path
    elif hasattr(model, "_adapter_path"):
        model._adapter_path = path


def load_staged(model, staged: StagedAdapter) -> str:
    """Activate the staged adapter in ``model`` (replacing the active one); returns the adapter's
    (requested, absolute) path. A model's ValueError becomes AdapterRefused."""
    try:
        model.reset_adapter()
        model.load_adapter(staged.directory)
    except ValueError as e:
        try:
            model.reset_adapter()
        except Exception:  # noqa: BLE001 - the refusal matters, not the reset
            pass
        msg = " ".join(str(e).replace(staged.directory, staged.source).split())
        raise AdapterRefused(f"adapter does not fit the served model: {msg}") from None
    relabel_adapter(model, staged.source)
    return staged.source


def load_checked(model, path: str, policy: AdapterPolicy, base: Optional[BaseIdentity] = None,
                 timeout: Optional[float] = None) -> str:
    """Check, stage and activate the adapter at ``path`` in ``model``; returns its path."""
    staged = (stage_adapter(path, policy, base) if timeout is None
              else stage_adapter_bounded(path, policy, base, timeout))
    with staged:
        return load_staged(model, staged)


# -- the served base ----------------------------------------------------------------------------------
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


def refusal_reason(e: BaseException) -> str:
    """One line for a refusal (AdapterRefused as is; anything else with its type)."""
    msg = " ".join(str(e).split())
    return msg if isinstance(e, AdapterRefused) else f"{type(e).__name__}: {msg}"
