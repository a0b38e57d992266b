"""Where adapters may come from and what they may be: the file names, the refusal, the limits,
the policy (adapter roots) and the resolution of a requested path inside those roots."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any, FrozenSet, Iterable, Optional, Tuple

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
