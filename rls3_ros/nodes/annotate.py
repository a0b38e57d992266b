"""Annotated query images: boxes of the named objects, the answer and its confidence.

Pure numpy + OpenCV (no ROS types), used by the ``spatial_query`` node for its
``~/annotated`` topic so RViz / Foxglove show what the model answered.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from rls3_ros.scene import ObjectState, SceneState

Box = Tuple[int, int, int, int]

# RGB colours: subject, reference, further candidates
COLOURS = [(255, 64, 64), (64, 128, 255), (255, 200, 0), (0, 200, 120), (200, 0, 200)]


def find_object(scene: Optional[SceneState], name: str) -> Optional[ObjectState]:
    """The scene object called ``name`` (id, description or category; case-insensitive)."""
    if scene is None or not name:
        return None
    n = name.strip().lower()
    for key in ("id", "description", "category"):
        for o in scene.objects:
            if str(getattr(o, key)).strip().lower() == n:
                return o
    return None


def scene_object_names(scene: Optional[SceneState]) -> list:
    """Every name a query may use for the scene's objects (ids, descriptions, categories)."""
    if scene is None:
        return []
    names = []
    for o in scene.objects:
        names += [o.id, o.description, o.category]
    return [n for n in names if n]


def _box_ok(box: Box, w: int, h: int) -> bool:
    x0, y0, x1, y1 = box
    return x1 > x0 and y1 > y0 and x1 > 0 and y1 > 0 and x0 < w and y0 < h


def draw_annotation(
    image: np.ndarray,
    labelled_boxes: Sequence[Tuple[str, Box]],
    text: str,
    confidence: float,
) -> np.ndarray:
    """A copy of the RGB ``image`` with boxes (label each) and the answer text + confidence."""
    out = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).copy())
    h, w = out.shape[:2]
    scale = max(0.3, min(1.0, w / 640.0))
    thick = 1 if w < 400 else 2
    for i, (label, box) in enumerate(labelled_boxes):
        if not _box_ok(box, w, h):
            continue
        c = COLOURS[i % len(COLOURS)]
        x0, y0, x1, y1 = (int(v) for v in box)
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), c, thick)
        cv2.putText(out, label, (x0, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.9 * scale, c, thick, cv2.LINE_AA)
    caption = f"{text} ({confidence:.2f})"
    (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    band = th + base + 6
    out[h - band :, :] = (out[h - band :, :].astype(np.uint16) // 3).astype(np.uint8)
    cv2.putText(out, caption, (3, h - base - 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out
