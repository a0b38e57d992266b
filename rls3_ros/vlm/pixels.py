"""RGB images -> the normalised pixel tensor a transformers vision tower takes."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def normalized_pixels(images: Sequence[np.ndarray], size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(N, 3, size, size) float: each (H, W, 3|4) uint8 image resized (bicubic, antialiased),
    scaled to [0, 1], then ``(x - mean) / std`` (mean/std shaped (1, 3, 1, 1))."""
    out = []
    for im in images:
        im = np.asarray(im)
        if im.ndim != 3 or im.shape[2] not in (3, 4) or im.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {im.shape} {im.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(im[..., :3])).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        out.append((x - mean) / std)
    return torch.cat(out)
