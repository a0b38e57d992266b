"""Contact sheet of random valid scenes with 2D boxes and labels (``rls3 sim sheet``)."""

from __future__ import annotations

import argparse
import os
from typing import List, Optional, Sequence

import numpy as np

_BOX_COLORS = ((255, 60, 60), (60, 220, 60), (70, 140, 255))


def _overlap(a, b) -> int:
    """Overlap area of two (x0, y0, x1, y1) rectangles."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def label_rect(box, tw: int, th: int, width: int, height: int, taken: Sequence[tuple]) -> tuple:
    """Where to put a ``tw`` x ``th`` text label for ``box``: the background rectangle
    (x0, y0, x1, y1), always wholly inside the ``width`` x ``height`` tile and, when possible,
    clear of the rectangles in ``taken`` (earlier labels, the title), so no label is cut by the
    tile edge or painted over by another. Tries above the box, below it, inside its top, each
    left- then right-aligned, then further rows up and down; else the least-covered spot."""
    x0, y0, x1, y1 = (int(v) for v in box)
    rw, rh = tw + 2, th + 4  # text plus a 1 px margin each side, baseline gap below
    tops = [y0 - rh, y1, y0]  # above, below, inside the top of the box
    tops += [y0 - rh * k for k in (2, 3)] + [y1 + rh * k for k in (1, 2)]
    best, best_cost = None, None
    for top in tops:
        for left in (x0, x1 - rw):
            lx = int(np.clip(left, 0, max(width - rw, 0)))
            ly = int(np.clip(top, 0, max(height - rh, 0)))
            r = (lx, ly, lx + rw, ly + rh)
            cost = sum(_overlap(r, t) for t in taken)
            if cost == 0:
                return r
            if best_cost is None or cost < best_cost:
                best, best_cost = r, cost
    return best


def annotate(rgb: np.ndarray, scene, boxes: dict, title: str = "") -> np.ndarray:
    """Draw each active object's 2D box and description on a copy of ``rgb``; labels stay inside
    the image and do not cover each other or the title (see ``label_rect``)."""
    import cv2

    img = np.ascontiguousarray(rgb.copy())
    h, w = img.shape[:2]
    s = h / 224.0
    fs = 0.33 * s
    taken: List[tuple] = []
    if title:
        (tw, th), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        taken.append((0, h - th - 5, tw + 4, h))
    drawn = []
    for k, o in enumerate(scene.objects):  # all boxes first, so no box line crosses a label
        box = boxes.get(o.id, o.bbox)
        if tuple(box) == (0, 0, 0, 0):
            continue
        c = _BOX_COLORS[k % len(_BOX_COLORS)]
        x0, y0, x1, y1 = (int(v) for v in box)
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), c, max(1, int(round(s))))
        drawn.append((o.description, box, c))
    for label, box, c in drawn:
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        r = label_rect(box, tw, th, w, h, taken)
        taken.append(r)
        cv2.rectangle(img, (r[0], r[1]), (r[2] - 1, r[3] - 1), (0, 0, 0), -1)
        cv2.putText(img, label, (r[0] + 1, r[3] - 3), cv2.FONT_HERSHEY_SIMPLEX, fs, c, 1, cv2.LINE_AA)
    if title:
        x0, y0, x1, y1 = taken[0]
        cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), -1)
        cv2.putText(img, title, (2, h - 3), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1, cv2.LINE_AA)
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
