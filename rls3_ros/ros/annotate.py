"""Annotated query images: boxes of the named objects, the answer and its confidence.

Pure numpy + OpenCV (no ROS types), used by the ``spatial_query`` node for its
``~/annotated`` topic so RViz / Foxglove show what the model answered.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from rls3_ros.core.scene import ObjectState, SceneState

Box = Tuple[int, int, int, int]

# RGB colours: subject, reference, further candidates
COLOURS = [(255, 64, 64), (64, 128, 255), (255, 200, 0), (0, 200, 120), (200, 0, 200)]


def find_object(scene: Optional[SceneState], name: str) -> Optional[ObjectState]:
    """The scene object called ``name`` (id, description or category; case-insensitive)."""
    from rls3_ros.vlm.grounding import find_scene_object

    return find_scene_object(scene, name)


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


def _dashed_rectangle(img: np.ndarray, p0: Tuple[int, int], p1: Tuple[int, int], colour, dash: int = 3) -> None:
    """1-px dashed rectangle (the model's predicted box; solid boxes are the scene state's)."""
    (x0, y0), (x1, y1) = p0, p1
    for x in range(x0, x1 + 1, 2 * dash):
        cv2.line(img, (x, y0), (min(x + dash - 1, x1), y0), colour, 1)
        cv2.line(img, (x, y1), (min(x + dash - 1, x1), y1), colour, 1)
    for y in range(y0, y1 + 1, 2 * dash):
        cv2.line(img, (x0, y), (x0, min(y + dash - 1, y1)), colour, 1)
        cv2.line(img, (x1, y), (x1, min(y + dash - 1, y1)), colour, 1)


def draw_annotation(
    image: np.ndarray,
    labelled_boxes: Sequence[Tuple[str, Box]],
    text: str,
    confidence: float,
    located: Sequence[Tuple[str, object]] = (),
) -> np.ndarray:
    """A copy of the RGB ``image`` with boxes (label each) and the answer text + confidence.
    ``located``: (label, ``rls3_ros.vlm.grounding.Location``) of the model's own grounding, drawn
    as a thin box with a cross at the predicted point and the location's confidence (colours in
    the same order as ``labelled_boxes``: subject, reference)."""
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
    for i, (label, loc) in enumerate(located):
        box, (u, v), conf = loc
        if not _box_ok(tuple(int(b) for b in box), w, h):
            continue
        c = COLOURS[i % len(COLOURS)]
        x0, y0, x1, y1 = (int(b) for b in box)
        _dashed_rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), c)
        cv2.drawMarker(out, (int(round(u)), int(round(v))), c, cv2.MARKER_CROSS, max(5, w // 40), thick)
        cv2.putText(out, f"{label} {conf:.2f}", (x0, min(h - 2, y1 + int(12 * scale))), cv2.FONT_HERSHEY_SIMPLEX,
                    0.7 * scale, c, 1, cv2.LINE_AA)
    caption = f"{text} ({confidence:.2f})"
    (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    band = th + base + 6
    out[h - band :, :] = (out[h - band :, :].astype(np.uint16) // 3).astype(np.uint8)
    cv2.putText(out, caption, (3, h - base - 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out
