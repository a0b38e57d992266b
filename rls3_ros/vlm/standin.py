"""A fast stand-in scene generator (numpy + OpenCV drawing, no simulator).

Perspective views of coloured boxes, cans and balls on a floor, some stacked, captioned by
the real caption oracle. Used by the VLM tests (builds in milliseconds) and as a fallback
corpus for ``rls3 pretrain --backend standin``; the default corpus comes from the MuJoCo
backend the RL loop uses.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import cv2
import numpy as np

from rls3_ros.core.scene import CameraModel, ObjectState, Sample, SceneState

COLORS = {
    "red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210), "yellow": (230, 210, 40),
    "purple": (140, 50, 170), "orange": (240, 130, 30), "white": (235, 235, 235), "black": (30, 30, 30),
}
SHAPES = ("box", "can", "ball")


def _surface_points(shape: str, centre: np.ndarray, size: np.ndarray) -> np.ndarray:
    hx, hy, hz = size / 2
    if shape == "box":
        s = np.array([[x, y, z] for x in (-hx, hx) for y in (-hy, hy) for z in (-hz, hz)])
    elif shape == "can":
        a = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        ring = np.stack([hx * np.cos(a), hy * np.sin(a)], 1)
        s = np.concatenate([np.c_[ring, np.full(16, -hz)], np.c_[ring, np.full(16, hz)]])
    else:
        u = np.random.default_rng(0).normal(size=(64, 3))
        s = u / np.linalg.norm(u, axis=1, keepdims=True) * np.array([hx, hy, hz])
    return s + centre


def make_scene(rng: np.random.Generator, image_size: int = 128, n_objects: Optional[int] = None,
               stack_prob: float = 0.3) -> Sample:
    """One random captionable scene (not yet captioned: ``relations`` empty)."""
    cam = CameraModel.look_at((0.0, -1.5 + rng.uniform(-0.15, 0.15), 1.0 + rng.uniform(-0.15, 0.15)),
                              (rng.uniform(-0.1, 0.1), 0.25, 0.1), image_size, image_size, 60.0)
    n = int(n_objects or rng.integers(2, 5))
    names = rng.choice(len(COLORS) * len(SHAPES), size=n, replace=False)
    objects: List[ObjectState] = []
    shapes = []
    for k, code in enumerate(names):
        color = list(COLORS)[code // len(SHAPES)]
        shape = SHAPES[code % len(SHAPES)]
        s = rng.uniform(0.14, 0.26)
        size = np.array([s, s, s * (1.5 if shape == "can" else 1.0)])
        support = ""
        placed = None
        if objects and rng.random() < stack_prob:
            base = objects[int(rng.integers(len(objects)))]
            if not any(o.supported_by == base.id for o in objects) and base.size[2] < 0.45:
                top = base.position[2] + base.size[2] / 2
                placed = np.array([base.position[0] + rng.uniform(-0.03, 0.03), base.position[1] + rng.uniform(-0.03, 0.03),
                                   top + size[2] / 2])
                support = base.id
        for _ in range(50):
            if placed is not None:
                break
            p = np.array([rng.uniform(-0.55, 0.55), rng.uniform(-0.3, 0.7), size[2] / 2])
            if all(np.hypot(p[0] - o.position[0], p[1] - o.position[1]) > (s + max(o.size[:2])) / 2 + 0.05
                   for o in objects if not o.supported_by):
                placed = p
        if placed is None:
            continue
        oid = f"obj{k}"
        objects.append(ObjectState(id=oid, category=shape, description=f"{color} {shape}",
                                   position=tuple(float(v) for v in placed), size=tuple(float(v) for v in size),
                                   active=True, supported_by=support))
        shapes.append((shape, color))
    img = np.zeros((image_size, image_size, 3), np.uint8)
    horizon = cam.project(np.array([[0.0, 50.0, 0.0]]))[0, 1]
    img[:] = (90, 95, 105)
    img[int(np.clip(horizon, 0, image_size)):] = (150, 120, 90)
    depth = [cam.world_to_camera(np.array(o.position))[0, 2] for o in objects]
    for k in np.argsort(depth)[::-1]:
        o, (shape, color) = objects[k], shapes[k]
        uv = cam.project(_surface_points(shape, np.array(o.position), np.array(o.size)))
        hull = cv2.convexHull(np.round(uv * 16).astype(np.int32))
        c = np.array(COLORS[color], float)
        cv2.fillPoly(img, [hull], tuple(int(v) for v in c), lineType=cv2.LINE_AA, shift=4)
        cv2.polylines(img, [hull], True, tuple(int(v) for v in c * 0.5), 1, lineType=cv2.LINE_AA, shift=4)
        x0, y0 = np.floor(uv.min(0)).astype(int)
        x1, y1 = np.ceil(uv.max(0)).astype(int)
        objects[k].bbox = (max(0, x0), max(0, y0), min(image_size, x1), min(image_size, y1))
    scene = SceneState(scene_id=f"standin-{int(rng.integers(1 << 30))}", scene_type="standin", seed=0,
                       camera=cam, objects=objects, backend="standin")
    return Sample(sample_id=scene.scene_id, image=img, scene=scene)


def make_samples(n: int, seed: int = 0, image_size: int = 128, max_pairs: int = 3) -> List[Sample]:
    """``n`` captioned stand-in samples (relations with the oracle's hard negatives)."""
    from rls3_ros.captions.oracle import CaptionOracle

    oracle = CaptionOracle()
    rng = np.random.default_rng(seed)
    out: List[Sample] = []
    while len(out) < n:
        s = make_scene(rng, image_size)
        if len(s.scene.objects) < 2:
            continue
        try:
            s.relations = oracle.caption_scene(s.scene, max_pairs=max_pairs, rng=int(rng.integers(1 << 30)))
        except ValueError:
            continue
        if s.relations:
            s.sample_id = f"standin-{seed}-{len(out)}"
            out.append(s)
    return out
