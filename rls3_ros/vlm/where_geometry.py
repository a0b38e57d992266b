"""'Where' answers that use the geometry when it is there (pure Python, no ROS).

The text head answers "where is A relative to B?" from the image alone. When both objects have a
3-D point (camera optical frame: from a depth image, ``rls3_ros.vlm.depth_centre``, or a scene
state) and the camera's pose is known (the scene state's camera, or a robot's TF), the caption
oracle itself can be applied to the two points (``points_terms``: moved to the world with the
camera pose; the oracle's "camera" frame needs only the camera's yaw and the world's up). Two
points carry no support contact, so the oracle never says "on"/"under" from them (it says
"above"/"below" there).

``hybrid_terms`` combines both, per axis as a :class:`HybridPolicy` says: the support terms
("on"/"under") always from the text head (when it says one, the answer is that term alone: the
oracle states a support relation alone); each of the vertical (above/below), depth (in front/behind) and
lateral (left/right) axes from the text head or from the geometry. The default policy is the one
measured best per axis on calibration renders (``rls3 bench served`` reports the held-out figures):
every axis from the geometry. The ``spatial_query`` node and ``rls3 bench served`` both call
``hybrid_terms``, so the benchmark measures what the node answers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.captions import terms as T

MODEL, GEOMETRY = "model", "geometry"
SOURCE_MODEL, SOURCE_HYBRID = "model", "model+geometry"  # SpatialQuery's answer_source
AXES = {"vertical": (T.ABOVE, T.BELOW), "depth": T.DEPTH_TERMS, "lateral": T.LATERAL_TERMS}
SUPPORT_TERMS = (T.ON, T.UNDER)


@dataclass(frozen=True)
class HybridPolicy:
    """Where each axis of a hybrid 'where' answer comes from: ``model`` (text head) or ``geometry``."""

    vertical: str = GEOMETRY
    depth: str = GEOMETRY
    lateral: str = GEOMETRY

    def __post_init__(self) -> None:
        for axis in AXES:
            if getattr(self, axis) not in (MODEL, GEOMETRY):
                raise ValueError(f"HybridPolicy.{axis} must be {MODEL!r} or {GEOMETRY!r}, got {getattr(self, axis)!r}")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_POLICY = HybridPolicy()


def points_terms(camera, subject_cam: Optional[Sequence[float]], reference_cam: Optional[Sequence[float]],
                 oracle=None) -> List[str]:
    """The caption oracle's terms of the subject relative to the reference placed at the two
    camera-frame points [m], with ``camera`` (a ``CameraModel``: its pose) moving them to the world;
    no support contact. [] when a point or the camera is missing, a point is not finite, or the pair
    is degenerate (closer than the oracle's ``min_distance``)."""
    from rls3_ros.captions.oracle import CaptionError, CaptionOracle
    from rls3_ros.core.scene import ObjectState, SceneState

    if camera is None or subject_cam is None or reference_cam is None:
        return []
    pts = np.asarray([subject_cam, reference_cam], float)
    if pts.shape != (2, 3) or not np.all(np.isfinite(pts)):
        return []
    oracle = oracle or CaptionOracle()
    world = camera.camera_to_world(pts)
    a = ObjectState("subject", "", "", tuple(float(v) for v in world[0]))
    b = ObjectState("reference", "", "", tuple(float(v) for v in world[1]))
    try:
        g = oracle.geometry(SceneState("", "", 0, camera), a, b)
        return list(oracle.terms_from_geometry(g, separated=oracle.vertically_separated(a, b)))
    except CaptionError:
        return []


def hybrid_terms(model_terms: Sequence[str], geometry_terms: Sequence[str],
                 policy: HybridPolicy = DEFAULT_POLICY) -> Tuple[List[str], str]:
    """(terms, answer source) of a 'where' answer from the text head's terms and the geometry's
    (``points_terms``). The text head's answer (source ``model``) when the geometry has none or the
    policy takes every axis from it; the text head's "on"/"under" alone (source ``model``) when it
    says one (support, which only it can see; the oracle states it without other terms); else per
    axis the policy's source (``model+geometry``)."""
    model_terms = T.canonical_terms(model_terms)
    geo = list(geometry_terms)
    if not geo or all(getattr(policy, a) == MODEL for a in AXES):
        return model_terms, SOURCE_MODEL
    support = [t for t in model_terms if t in SUPPORT_TERMS]
    if support:  # the oracle states a support relation alone: the text head's support term without the rest
        return support[:1], SOURCE_MODEL
    out: List[str] = []
    for axis, terms in AXES.items():
        src = geo if getattr(policy, axis) == GEOMETRY else model_terms
        out += [t for t in src if t in terms]
    if not out:  # e.g. model axes empty and the geometry's on another axis: keep the text head's answer
        return model_terms, SOURCE_MODEL
    return T.canonical_terms(out), SOURCE_HYBRID
