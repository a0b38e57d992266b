"""A deterministic captioned sample with a 224x224 RGB image (shared by test programs)."""

import hashlib

import numpy as np

from rls3_ros.core.scene import CameraModel, ObjectState, Sample, SceneState, SpatialRelation


def make_sample(size: int = 224) -> Sample:
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=2).astype(np.uint8)
    cam = CameraModel.look_at((0.0, -2.0, 1.5), (0.0, 0.0, 0.8), size, size, 60.0)
    objs = [
        ObjectState("mug_0", "mug", "red mug", (-0.3, 0.0, 0.8), size=(0.1, 0.1, 0.12), bbox=(50, 80, 90, 120), active=True),
        ObjectState("lamp_0", "lamp", "lamp", (0.3, 0.1, 0.9), size=(0.2, 0.2, 0.4), bbox=(130, 60, 170, 130), active=True),
    ]
    scene = SceneState("kitchen-7", "kitchen", 7, cam, objs, ["bowl_1"], stamp_ns=1_700_000_000_123_456_789)
    rel = SpatialRelation(
        "mug_0", "lamp_0", "red mug", "lamp", ["left"], 1.57, 0.1, 0.61,
        "The red mug is to the left of the lamp.", ["The lamp is to the left of the red mug.", "The red mug is to the right of the lamp."],
    )
    return Sample("test-e1-s2", image, scene, [rel], True, "", 1, 2)


def digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]
