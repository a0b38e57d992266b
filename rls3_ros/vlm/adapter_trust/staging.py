"""Checking an adapter into a private staging copy (optionally on a worker thread with a timeout)
and activating that copy in a model: what is loaded is exactly what was checked."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from rls3_ros.vlm.adapter_trust.contents import check_lora_config, check_meta, check_safetensors
from rls3_ros.vlm.adapter_trust.files import copy_regular, json_object
from rls3_ros.vlm.adapter_trust.policy import (ADAPTER_CONFIG, ADAPTER_META, ADAPTER_PICKLE, ADAPTER_WEIGHTS,
                                               AdapterPolicy, AdapterRefused, BaseIdentity, resolve_adapter_dir)


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
    into a new private directory (see ``rls3_ros.vlm.adapter_trust``). AdapterRefused with a reason otherwise."""
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
    config = json_object(copy_regular(real, ADAPTER_CONFIG, limits.max_config_bytes), ADAPTER_CONFIG)
    check_lora_config(config, base, limits)
    meta = None
    if ADAPTER_META in names:
        meta = json_object(copy_regular(real, ADAPTER_META, limits.max_meta_bytes), ADAPTER_META)
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
        copy_regular(real, ADAPTER_WEIGHTS, limits.max_weights_bytes, out_path=weights)
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


def refusal_reason(e: BaseException) -> str:
    """One line for a refusal (AdapterRefused as is; anything else with its type)."""
    msg = " ".join(str(e).split())
    return msg if isinstance(e, AdapterRefused) else f"{type(e).__name__}: {msg}"
