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
    rendered depth (same scene seeds, random stream and caption calls, so the same images)."""
    from rls3_ros.captions.oracle import CaptionOracle
    from rls3_ros.sim.backend import PLACE, MoveAction
    from rls3_ros.sim.factory import make_backend
    from rls3_ros.vlm.pretrain import _caption_sample

    rng = np.random.default_rng(seed)
    oracle = CaptionOracle()
    out: List[DepthSample] = []
    sim = make_backend("mujoco", image_size=image_size, seed=seed, render_depth=True)
    try:
        scene_seed = seed * 100003
        while len(out) < n_images:
            scene_seed += 1
            try:
                scene = sim.reset(seed=scene_seed)
            except (RuntimeError, ValueError):  # as render_corpus: take the next seed
                continue
            r = sim.render()
            s = _caption_sample(oracle, scene, r.rgb, f"mujoco-{scene_seed}-0", rng)
            if s is not None:
                out.append(DepthSample(s, np.asarray(r.depth, np.float32)))
            for k in range(moves_per_scene):
                if len(out) >= n_images:
                    break
                act = scene.active_objects() or scene.objects
                res = sim.apply(MoveAction(PLACE, act[int(rng.integers(len(act)))].id, yaw=float(rng.uniform(-3.14, 3.14))))
                if not res.valid:
                    continue
                scene = res.scene
                s = _caption_sample(oracle, scene, res.render.rgb, f"mujoco-{scene_seed}-{k + 1}", rng)
                if s is not None:
                    out.append(DepthSample(s, np.asarray(res.render.depth, np.float32)))
    finally:
        sim.close()
    return out


def intrinsics(scene: SceneState) -> G.Intrinsics:
    """The scene camera's pinhole intrinsics (what ``camera_info`` carries)."""
    c = scene.camera
    return G.check_intrinsics(G.Intrinsics(c.fx, c.fy, c.cx, c.cy, int(c.width), int(c.height)))


def located_point(depth: np.ndarray, pixel: Sequence[float], k: G.Intrinsics) -> Optional[Point3]:
    """3-D point [m, camera optical frame] of ``pixel`` (u, v) with the depth image's depth there;
    None without a valid depth within 2 px."""
    u, v = float(pixel[0]), float(pixel[1])
    z = G.depth_at(depth, u, v)
    return None if z is None else G.point_3d(u, v, z, k)


def object_centre(scene: SceneState, obj: ObjectState) -> Point3:
    """The object's 3-D box centre from the scene state, in the camera optical frame [m]."""
    p = scene.camera.world_to_camera(np.asarray([obj.position], float))[0]
    return float(p[0]), float(p[1]), float(p[2])


def camera_to_world(scene: SceneState, p: Sequence[float]) -> Point3:
    """A camera optical frame point -> world, with the scene's camera pose (a robot's TF)."""
    cam = scene.camera
    w = np.asarray(cam.position, float) + cam.rotation() @ np.asarray(p, float)
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
