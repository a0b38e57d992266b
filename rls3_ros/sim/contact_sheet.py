"""Contact sheet of random valid scenes with 2D boxes and labels (``rls3 sim sheet``)."""

from __future__ import annotations

import argparse
import os
from typing import List, Optional, Sequence

import numpy as np

_BOX_COLORS = ((255, 60, 60), (60, 220, 60), (70, 140, 255))


def annotate(rgb: np.ndarray, scene, boxes: dict, title: str = "") -> np.ndarray:
    """Draw each active object's 2D box and description on a copy of ``rgb``."""
    import cv2

    img = np.ascontiguousarray(rgb.copy())
    s = img.shape[0] / 224.0
    fs = 0.33 * s
    for k, o in enumerate(scene.objects):
        box = boxes.get(o.id, o.bbox)
        if box == (0, 0, 0, 0):
            continue
        c = _BOX_COLORS[k % len(_BOX_COLORS)]
        x0, y0, x1, y1 = (int(v) for v in box)
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), c, max(1, int(round(s))))
        label = o.description
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        ty = y0 - 2 if y0 - th - 3 >= 0 else min(y1 + th + 2, img.shape[0] - 2)
        tx = int(np.clip(x0, 0, img.shape[1] - tw - 1))
        cv2.rectangle(img, (tx, ty - th - 2), (tx + tw + 1, ty + 2), (0, 0, 0), -1)
        cv2.putText(img, label, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, fs, c, 1, cv2.LINE_AA)
    if title:
        (tw, th), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        cv2.rectangle(img, (0, img.shape[0] - th - 5), (tw + 4, img.shape[0]), (0, 0, 0), -1)
        cv2.putText(img, title, (2, img.shape[0] - 3), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def make_sheet(backend, n: int = 16, seed: int = 0, cols: Optional[int] = None) -> np.ndarray:
    """A grid of ``n`` annotated scenes (seeds ``seed .. seed+n-1``), every scene type in turn."""
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    tiles: List[np.ndarray] = []
    types = list(backend.scene_types)
    for i in range(n):
        st = backend.reset(seed + i, types[i % len(types)])
        r = backend.render()
        tiles.append(annotate(r.rgb, st, r.boxes, f"{st.scene_type} seed {st.seed}"))
    h, w = tiles[0].shape[:2]
    sheet = np.full((rows * h + (rows - 1) * 2, cols * w + (cols - 1) * 2, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = t
    return sheet


def cli_sim_sheet(argv: Sequence[str]) -> int:
    """``rls3 sim sheet --out F.png --n 16 --size 224 --seed 0 [--backend mujoco]``."""
    p = argparse.ArgumentParser(prog="rls3 sim sheet", description=__doc__)
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--n", type=int, default=16, help="number of scenes (default 16)")
    p.add_argument("--size", type=int, default=224, help="image size in pixels (default 224)")
    p.add_argument("--seed", type=int, default=0, help="first scene seed (default 0)")
    p.add_argument("--backend", default="mujoco", help="simulator backend (default mujoco)")
    a = p.parse_args(list(argv))
    if a.n < 1:
        p.error("--n must be >= 1")
    import cv2

    from rls3_ros.sim.factory import make_backend

    try:
        backend = make_backend(a.backend, image_size=a.size, seed=a.seed)
    except ValueError as e:
        p.error(str(e))
    try:
        sheet = make_sheet(backend, a.n, a.seed)
    finally:
        backend.close()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    if not cv2.imwrite(a.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        print(f"could not write {a.out}")
        return 1
    print(f"wrote {a.out} ({sheet.shape[1]}x{sheet.shape[0]}, {a.n} scenes)")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(cli_sim_sheet(sys.argv[1:]))
