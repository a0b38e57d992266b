"""What a robot gets from the served model, measured on rendered frames: held-out images WITH
their rendered depth, 3-D points from that depth, and "where" answers from two 3-D points
(pure Python + MuJoCo, no ROS; used by ``rls3 bench served``).

- ``render_heldout``: the samples ``rls3_ros.vlm.pretrain.render_corpus`` draws for the same
  ``(n, seed, image_size, moves_per_scene)`` (same scene seeds, moves and captions: the
  pretraining held-out set for seed 7919), each with the depth image [m along the optical axis]
  the renderer made in the same pass as its RGB. The depth is the one a robot's RGB-D camera
  would give, not the scene state's.
- ``located_point``: the back-projection of a located pixel with the depth image there
  (``grounding.depth_at``: median of the valid depths within 2 px) and the scene's camera
  intrinsics, in the camera optical frame, as the ``spatial_query`` node computes it with a
  depth image.
- ``centre_point``: the object's CENTRE from the depth image inside its located box
  (``rls3_ros.vlm.depth_centre.object_centre``), as the ``spatial_query`` node computes its 3-D
  point with a depth image.
- ``object_centre``: the truth: an object's 3-D box centre from the scene state, in the camera
  optical frame.
- ``geometry_terms``: the caption oracle applied to two 3-D points (camera frame, moved to the
  world with the scene state's camera pose, as a robot with TF would): the answer "where is A
  relative to B?" taken from geometry instead of the text head. Two points carry no support
  contact, so "on"/"under" never come out of it (the oracle says "above"/"below" there).
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.core.scene import ObjectState, Sample, SceneState
from rls3_ros.vlm import grounding as G

Point3 = Tuple[float, float, float]


class DepthSample(NamedTuple):
    """A captioned held-out sample and the depth image rendered with its RGB."""

    sample: Sample
    depth: np.ndarray  # (H, W) float32 [m]


def render_heldout(n_images: int, seed: int, image_size: int, moves_per_scene: int = 8) -> List[DepthSample]:
    """``render_corpus(n_images, seed, image_size, "mujoco", moves_per_scene)``'s samples with their
    rendered depth (the same generator: the same images)."""
    from rls3_ros.vlm.pretrain import captioned_renders

    return [DepthSample(s, np.asarray(r.depth, np.float32))
            for s, r in captioned_renders(n_images, seed, image_size, "mujoco", moves_per_scene, render_depth=True)]


def intrinsics(scene: SceneState) -> G.Intrinsics:
    """The scene camera's pinhole intrinsics (what ``camera_info`` carries)."""
    return G.check_intrinsics(G.Intrinsics.of_camera(scene.camera))


def located_point(depth: np.ndarray, pixel: Sequence[float], k: G.Intrinsics) -> Optional[Point3]:
    """3-D point [m, camera optical frame] of ``pixel`` (u, v) with the depth image's depth there;
    None without a valid depth within 2 px."""
    u, v = float(pixel[0]), float(pixel[1])
    z = G.depth_at(depth, u, v)
    return None if z is None else G.point_3d(u, v, z, k)


def centre_point(depth: np.ndarray, loc, k: G.Intrinsics, settings=None) -> Optional[Point3]:
    """3-D centre [m, camera optical frame] of the object located at ``loc`` (a Location: box and
    point) from the depth image inside its box (``depth_centre.object_centre``); None without depth."""
    from rls3_ros.vlm import depth_centre as D

    c = D.object_centre(depth, loc.box, loc.point, k, settings or D.DEFAULT_CENTRE)
    return None if c is None else c.point


def hybrid_answers(model_terms: Sequence[Sequence[str]], items, locs, policy=None, settings=None
                   ) -> List[Tuple[List[str], str]]:
    """(terms, answer source) of the node's 'where' answer per relation of ``items`` (DepthSamples,
    ``where_pairs`` order), from the text head's terms ``model_terms`` and the depth-in-box centres of
    the located subject and reference (``locs``: (sample index, object id) -> Location) with the
    scene's camera pose."""
    from rls3_ros.captions.oracle import CaptionOracle
    from rls3_ros.vlm import where_geometry as W

    oracle, out, j = CaptionOracle(), [], 0
    for i, (s, depth) in enumerate(items):
        k = intrinsics(s.scene)
        pts = {}
        for r in s.relations:
            for oid in (r.subject_id, r.reference_id):
                if oid not in pts:
                    pts[oid] = centre_point(depth, locs[(i, oid)], k, settings)
            geo = W.points_terms(s.scene.camera, pts[r.subject_id], pts[r.reference_id], oracle)
            out.append(W.hybrid_terms(model_terms[j], geo, policy or W.DEFAULT_POLICY))
            j += 1
    return out


def object_centre(scene: SceneState, obj: ObjectState) -> Point3:
    """The object's 3-D box centre from the scene state, in the camera optical frame [m]."""
    p = scene.camera.world_to_camera(np.asarray([obj.position], float))[0]
    return float(p[0]), float(p[1]), float(p[2])


def camera_to_world(scene: SceneState, p: Sequence[float]) -> Point3:
    """A camera optical frame point -> world, with the scene's camera pose (a robot's TF)."""
    w = scene.camera.camera_to_world(np.asarray([p], float))[0]
    return float(w[0]), float(w[1]), float(w[2])


def geometry_terms(oracle, scene: SceneState, subject: ObjectState, reference: ObjectState,
                   subject_cam: Optional[Sequence[float]], reference_cam: Optional[Sequence[float]]) -> List[str]:
    """The oracle's terms of ``subject`` relative to ``reference`` placed at the two camera-frame
    points (no support contact known); [] when a point is missing or the pair is degenerate."""
    from rls3_ros.captions.oracle import CaptionError

    if subject_cam is None or reference_cam is None:
        return []
    a = replace(subject, position=camera_to_world(scene, subject_cam), supported_by="")
    b = replace(reference, position=camera_to_world(scene, reference_cam), supported_by="")
    try:
        return list(oracle.terms_from_geometry(oracle.geometry(scene, a, b),
                                               separated=oracle.vertically_separated(a, b)))
    except CaptionError:
        return []
