"""Real adapter directories for the adapter-security tests: good ones (the tiny test model,
fine-tuned and saved through peft, ``rls3_adapter.json`` included) and crafted bad ones
(a huge rank, FIFO weights, no ``rls3_adapter.json``, another base, symlinks out of the
roots, pickled weights, code-selecting config options ...). Not a test module."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

import vlm_test_model as tm

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
META = "rls3_adapter.json"


def good_adapter(directory: Path, seed: int = 0, base_seed: int = 0, steps: int = 3) -> str:
    """A real LoRA adapter of the tiny test model whose base is ``build_base(base_seed)``
    (the nodes serve base seed 0: another ``base_seed`` is another base)."""
    torch.manual_seed(seed)
    m = tm.TinySpatialVLM(net=tm.build_base(base_seed), seed=seed)
    m.fine_tune(tm.make_samples(8, seed=seed), steps)
    return m.save_adapter(str(directory))


def edit_config(directory: Path, **changes) -> None:
    p = Path(directory) / CONFIG
    doc = json.loads(p.read_text())
    doc.update(changes)
    p.write_text(json.dumps(doc))


def copy_of(src: str, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


def crafted(kind: str, good: str, roots: Path, outside: Path) -> str:
    """A bad adapter path of ``kind`` made from the good adapter ``good`` (inside ``roots``),
    with ``outside`` a directory outside the roots holding a good adapter ``outside/good``."""
    d = roots / f"crafted_{kind}"
    if kind == "huge_rank":
        edit_config(copy_of(good, d), r=100_000_000)
    elif kind == "fifo_weights":
        copy_of(good, d)
        os.remove(d / WEIGHTS)
        os.mkfifo(d / WEIGHTS)
    elif kind == "no_meta":
        copy_of(good, d)
        os.remove(d / META)
    elif kind == "other_base":
        good_adapter(d, seed=5, base_seed=1)
    elif kind == "symlink_escape":  # a link inside the roots to an adapter directory outside them
        os.symlink(outside / "good", d)
    elif kind == "symlink_weights":  # a weights file that is a link to a file outside the roots
        copy_of(good, d)
        os.remove(d / WEIGHTS)
        os.symlink(outside / "good" / WEIGHTS, d / WEIGHTS)
    elif kind == "pickle_only":
        copy_of(good, d)
        os.rename(d / WEIGHTS, d / "adapter_model.bin")
    elif kind == "regex_targets":
        edit_config(copy_of(good, d), target_modules=".*")
    elif kind == "megatron_import":  # peft would import the module named by megatron_core
        edit_config(copy_of(good, d), megatron_config={"tensor_model_parallel_size": 1}, megatron_core="os")
    elif kind == "outside_roots":  # an existing, good adapter outside the roots
        return str(outside / "good")
    elif kind == "missing_outside":
        return str(outside / "no_such_adapter")
    elif kind == "missing_inside":
        return str(roots / "no_such_adapter")
    else:
        raise ValueError(kind)
    return str(d)


# kind -> text the refusal must contain
REASONS = {
    "huge_rank": "r must be an integer in 1..256",
    "fifo_weights": "is a FIFO, not a regular file",
    "no_meta": "rls3_adapter.json missing",
    "other_base": "trained on another base",
    "symlink_escape": "inside the adapter roots",
    "symlink_weights": "is a symbolic link, not a regular file",
    "pickle_only": "pickled weights",
    "regex_targets": "regular expression",
    "megatron_import": "megatron",
    "outside_roots": "inside the adapter roots",
    "missing_outside": "inside the adapter roots",
    "missing_inside": "inside the adapter roots",
}
