"""Real MuJoCo renders for the tests: captioned samples (models) and frames with depth (3-D points)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import List, Sequence

import numpy as np
import torch


def render_depth_frames(seeds: Sequence[int], backend_seed: int, image_size: int = 160) -> List[SimpleNamespace]:
    """One frame per scene seed: ``rgb``, ``depth`` (float32 m, the renderer's), ``scene`` (its state)."""
    from rls3_ros.sim.factory import make_backend

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    backend = make_backend("mujoco", image_size=image_size, seed=backend_seed, render_depth=True)
    out = []
    try:
        for seed in seeds:
            backend.reset(seed)
            r = backend.render()
            assert r.depth.shape == r.rgb.shape[:2] and float(np.nanmax(r.depth)) > 0
            out.append(SimpleNamespace(rgb=r.rgb, depth=r.depth.astype(np.float32), scene=backend.state()))
    finally:
        backend.close()
        torch.set_num_threads(n)
    return out


def captioned_renders(n: int, seed: int, image_size: int = 96):
    """``n`` captioned MuJoCo samples (the pretraining corpus' renderer, 4 moves per scene), each with relations."""
    from rls3_ros.vlm.grounded_pretrain import _render

    torch.set_num_threads(1)
    s = _render(n, seed=seed, image_size=image_size, backend="mujoco", moves=4, desc="test renders")
    assert len(s) == n and all(x.relations for x in s)
    return s
