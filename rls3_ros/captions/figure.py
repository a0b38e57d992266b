"""A rendered sample with its objects' boxes and its captions (matplotlib, Agg), for
checking captions by eye. Also draws a top-down inset of the camera-aligned ground frame."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from rls3_ros.captions.oracle import ground_axes
from rls3_ros.core.scene import Sample

COLOURS = ["tab:red", "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]


def caption_figure(sample: Sample, path: Union[str, Path], max_captions: int = 12) -> Path:
    """PNG: the image with 2D boxes labelled by description, a top-down map of the objects
    in the camera-aligned ground frame (camera at the bottom) and the captions as text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scene = sample.scene
    rels = sample.relations[:max_captions]
    ids = []
    for r in rels:
        for i in (r.subject_id, r.reference_id):
            if i not in ids:
                ids.append(i)
    colour = {i: COLOURS[k % len(COLOURS)] for k, i in enumerate(ids)}
    n_lines = max(len(rels), 1)
    text_h = min(0.45, 0.05 + 0.035 * n_lines)
    fig = plt.figure(figsize=(12, 5.2 / (1.0 - text_h)))
    ax = fig.add_axes([0.01, text_h + 0.02, 0.48, 0.94 - text_h])
    ax.imshow(sample.image)
    ax.set_axis_off()
    ax.set_title(f"{sample.sample_id}  ({scene.scene_type}, seed {scene.seed})", fontsize=9)
    for o in scene.objects:
        if o.id not in colour:
            continue
        x0, y0, x1, y1 = o.bbox
        if x1 <= x0 or y1 <= y0:
            continue
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.5, ec=colour[o.id]))
        ax.text(x0, y0 - 1, o.description, color="white", fontsize=7, va="bottom",
                bbox=dict(fc=colour[o.id], ec="none", alpha=0.8, pad=1))
    # top-down map: x = image right, y = away from the camera
    mx = fig.add_axes([0.56, text_h + 0.08, 0.40, 0.86 - text_h])
    toward, right = ground_axes(scene.camera)
    pts = {}
    for o in scene.objects:
        if o.id in colour:
            p = np.asarray(o.position, float)
            pts[o.id] = (float(p @ right), float(-(p @ toward)), float(p[2]))
    for oid, (x, y, z) in pts.items():
        mx.scatter([x], [y], s=60, color=colour[oid])
        mx.annotate(f"{scene.object(oid).description}\nz={z:.2f}", (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    mx.set_xlabel("image right [m]")
    mx.set_ylabel("away from camera [m]  (camera below)")
    mx.set_aspect("equal", adjustable="datalim")
    mx.grid(alpha=0.3)
    mx.set_title("top-down, camera-aligned ground frame", fontsize=9)
    tx = fig.add_axes([0.01, 0.0, 0.98, text_h])
    tx.set_axis_off()
    lines = [f"{r.caption}   [{', '.join(r.terms)}; bearing {np.degrees(r.horizontal_angle):+.0f} deg, "
             f"elev {np.degrees(r.vertical_angle):+.0f} deg]" for r in rels] or ["(no relations)"]
    tx.text(0.0, 1.0, "\n".join(lines), va="top", fontsize=9, family="monospace")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
