"""AI2-THOR simulator backend behind the same interface (pure Python, no ROS).

Used when ``ai2thor`` is installed and the user gives ``local_executable_path`` (a local
Unity build: AI2-THOR otherwise downloads its build at run time). The controller is
injectable (``controller=``) so the mapping is testable without Unity.

Frames: AI2-THOR reports Unity coordinates (y up, left-handed, metres). Ours are z up,
right-handed: ``(X, Y, Z) = (x_u, z_u, y_u)`` (swapping two axes flips handedness);
rotations map by conjugation with that swap, so a Unity yaw ``θ`` about y is a yaw
``-θ`` about our z.

Objects come from ``metadata["objects"]`` (``axisAlignedBoundingBox`` centre/size give
``position``/``size``); moves use ``PlaceObjectAtPoint``, ``TeleportObject`` and
``GetSpawnCoordinatesAboveReceptacle``; success is ``lastActionSuccess``; frames come
from ``event.frame``, ``event.instance_segmentation_frame`` and
``event.instance_detections2D`` (when instance segmentation is on). AI2-THOR boxes are
(x1, y1, x2, y2) with inclusive max; ours are max-exclusive.

Visibility honours AI2-THOR: an object is visible when its own ``visible`` flag says so (Unity's
test: in view, not occluded, within ``visibilityDistance``) or when it has pixels in the
instance segmentation. Without segmentation (``renderInstanceSegmentation=False``: no mask, no
``instance_detections2D``) the flag alone decides, the 2D box is the projection of the object's
3D box clipped to the image, and the validity checks use the flag instead of mask pixels. Active
objects are drawn from the visible pickupable ones first. ``scene_id`` is the event's
``sceneName`` (what Unity actually loaded) + ``_<seed>``; the camera size is the frame's.

Limits (stated, not hidden): AI2-THOR has no state snapshot, so an invalid move is undone
by teleporting the moved objects back (forceAction); the visible fraction is the mask
area over the projected 3D box area (no unoccluded render), so the occlusion test is an
approximation. Swap exchanges an active object with a pickupable object of the same
scene (the container), as AI2-THOR cannot spawn objects from outside the scene.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.core.scene import CameraModel, ObjectState, SceneState, matrix_to_quat
from rls3_ros.sim.backend import (
    BAD_REQUEST,
    FLOATING,
    OCCLUDED,
    OUT_OF_VIEW,
    OVERLAP,
    SWAP,
    TELEPORT,
    UNSTABLE,
    MoveAction,
    MoveResult,
    Render,
    SimulatorBackend,
    move_request_problem,
)

# Our scene types -> iTHOR floor plans (kitchens 1-30, living rooms 201-230, bedrooms 301-330;
# iTHOR has no dining-room type: its kitchens stand in for them).
FLOOR_PLANS: Dict[str, Tuple[str, ...]] = {
    "kitchen": tuple(f"FloorPlan{i}" for i in range(1, 31)),
    "living_room": tuple(f"FloorPlan{i}" for i in range(201, 231)),
    "bedroom": tuple(f"FloorPlan{i}" for i in range(301, 331)),
    "dining_room": tuple(f"FloorPlan{i}" for i in range(1, 31)),
}

_P = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])  # Unity (x, y, z) <-> ours (X, Y, Z)


def unity_to_world(v: Any) -> Tuple[float, float, float]:
    """Unity point/vector ({x, y, z} or sequence) -> ours (z up, right-handed)."""
    x, y, z = (v["x"], v["y"], v["z"]) if isinstance(v, dict) else v
    return float(x), float(z), float(y)


def world_to_unity(p: Sequence[float]) -> Dict[str, float]:
    return {"x": float(p[0]), "y": float(p[2]), "z": float(p[1])}


def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def unity_rotation_matrix(rot: Dict[str, float]) -> np.ndarray:
    """Unity Euler angles (degrees; applied z, then x, then y) as a matrix on Unity vectors."""
    return _ry(math.radians(rot["y"])) @ _rx(math.radians(rot["x"])) @ _rz(math.radians(rot["z"]))


def unity_rotation_to_quat(rot: Dict[str, float]) -> Tuple[float, float, float, float]:
    """Unity Euler rotation -> our quaternion (x, y, z, w)."""
    return matrix_to_quat(_P @ unity_rotation_matrix(rot) @ _P)


def camera_from_metadata(meta: Dict[str, Any], width: int, height: int) -> CameraModel:
    """Our pinhole camera from AI2-THOR's cameraPosition, agent yaw, cameraHorizon and (vertical) fov."""
    yaw = math.radians(meta["agent"]["rotation"]["y"])
    horizon = math.radians(meta["agent"].get("cameraHorizon", 0.0))
    fwd_u = _ry(yaw) @ _rx(horizon) @ np.array([0.0, 0.0, 1.0])
    pos = np.array(unity_to_world(meta["cameraPosition"]))
    fwd = _P @ fwd_u
    return CameraModel.look_at(tuple(pos), tuple(pos + fwd), width, height, float(meta.get("fov", 90.0)))


def object_box(obj: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    """World (centre, size) of an AI2-THOR object's axis-aligned box."""
    bb = obj["axisAlignedBoundingBox"]
    c = np.array(unity_to_world(bb["center"]))
    s = np.abs(np.array(unity_to_world(bb["size"])))
    return c, s


def _reason_of_error(msg: str) -> str:
    m = (msg or "").lower()
    if any(k in m for k in ("collid", "obstruct", "intersect", "overlap", "blocking")):
        return OVERLAP
    if any(k in m for k in ("no valid", "surface", "receptacle", "float", "fall", "drop")):
        return FLOATING
    return UNSTABLE


class AI2ThorBackend(SimulatorBackend):
    """AI2-THOR behind the simulator interface (see module docstring).

    Parameters: image_size=224, seed=0, scene_types=all four (mapped to iTHOR floor plans),
    local_executable_path="" (required without an injected controller), controller=None
    (an object with ``reset(scene=...)`` and ``step(action=..., **kw)`` returning events),
    min_visible_fraction=0.3, min_in_view_fraction=0.8, n_active=3, n_container=5,
    drop_tol=0.05 m, fill_factor=0.5 (expected mask/box area ratio of an unoccluded object).
    """

    name = "ai2thor"

    def __init__(self, image_size: int = 224, seed: int = 0, scene_types: Optional[Sequence[str]] = None,
                 local_executable_path: str = "", controller: Any = None, min_visible_fraction: float = 0.3,
                 min_in_view_fraction: float = 0.8, n_active: int = 3, n_container: int = 5,
                 drop_tol: float = 0.05, fill_factor: float = 0.5):
        if not isinstance(image_size, (int, np.integer)) or not 16 <= int(image_size) <= 2048:
            raise ValueError(f"image_size must be an int in [16, 2048], got {image_size!r}")
        types = tuple(scene_types) if scene_types else tuple(FLOOR_PLANS)
        bad = [t for t in types if t not in FLOOR_PLANS]
        if bad:
            raise ValueError(f"unknown scene types {bad}; known: {', '.join(FLOOR_PLANS)}")
        if not 0.0 <= float(min_visible_fraction) <= 1.0 or not 0.0 <= float(min_in_view_fraction) <= 1.0:
            raise ValueError("min_visible_fraction and min_in_view_fraction must be in [0, 1]")
        self.image_size = int(image_size)
        self.seed = int(seed)
        self._types = types
        self.min_visible_fraction = float(min_visible_fraction)
        self.min_in_view_fraction = float(min_in_view_fraction)
        self.n_active, self.n_container = int(n_active), int(n_container)
        self.drop_tol, self.fill_factor = float(drop_tol), float(fill_factor)
        self._lock = threading.RLock()
        self._event = None
        self._active: List[str] = []
        self._container: List[str] = []
        if controller is None:
            if not local_executable_path:
                raise ValueError(
                    "the ai2thor backend needs local_executable_path (a local AI2-THOR Unity build); "
                    "without it AI2-THOR downloads its build at run time")
            try:
                from ai2thor.controller import Controller  # type: ignore[import-not-found]
            except ImportError as e:
                raise RuntimeError(
                    "the ai2thor backend needs the ai2thor package: `pip install ai2thor` (it pulls "
                    "opencv-python; keep it out of the headless venv) and a local build passed as "
                    "local_executable_path") from e
            controller = Controller(local_executable_path=local_executable_path, width=self.image_size,
                                    height=self.image_size, renderInstanceSegmentation=True,
                                    renderDepthImage=True)
        self.controller = controller

    @property
    def scene_types(self) -> Sequence[str]:
        return self._types

    # ------------------------------------------------------------------ metadata helpers
    @property
    def _meta(self) -> Dict[str, Any]:
        if self._event is None:
            raise RuntimeError("call reset() first")
        return self._event.metadata

    def _objects(self) -> Dict[str, Dict[str, Any]]:
        return {o["objectId"]: o for o in self._meta["objects"]}

    def _step(self, **kw):
        self._event = self.controller.step(**kw)
        return self._event

    def _detections(self) -> Dict[str, Tuple[int, int, int, int]]:
        det = getattr(self._event, "instance_detections2D", None) or {}
        return {k: (int(v[0]), int(v[1]), int(v[2]) + 1, int(v[3]) + 1) for k, v in det.items()}

    def _has_segmentation(self) -> bool:
        """Does the current event carry instance segmentation (mask frame or 2D detections)?"""
        ev = self._event
        return getattr(ev, "instance_segmentation_frame", None) is not None or \
            getattr(ev, "instance_detections2D", None) is not None

    def _visible(self, oid: str) -> bool:
        """AI2-THOR's own ``visible`` flag, or pixels of the object in the instance segmentation."""
        if bool(self._objects()[oid].get("visible")):
            return True
        if oid in self._detections():
            return True
        mask = self._mask(oid)
        return mask is not None and bool(mask.any())

    def _box_2d(self, oid: str, cam: CameraModel) -> Tuple[int, int, int, int]:
        """The object's 2D box: its detection, else (no segmentation, flagged visible) its projected
        3D box clipped to the image, else (0, 0, 0, 0)."""
        det = self._detections()
        if oid in det:
            return det[oid]
        if self._has_segmentation() or not self._visible(oid):
            return (0, 0, 0, 0)
        pb = self._projected_box(oid, cam)
        if pb is None:
            return (0, 0, 0, 0)
        (u0, v0), (u1, v1) = pb
        x0, y0 = int(max(0, math.floor(u0))), int(max(0, math.floor(v0)))
        x1, y1 = int(min(cam.width, math.ceil(u1))), int(min(cam.height, math.ceil(v1)))
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else (0, 0, 0, 0)

    def _mask(self, oid: str) -> Optional[np.ndarray]:
        seg = getattr(self._event, "instance_segmentation_frame", None)
        colors = getattr(self._event, "object_id_to_color", None) or {}
        if seg is None or oid not in colors:
            return None
        return np.all(seg == np.asarray(colors[oid], dtype=seg.dtype), axis=-1)

    def _projected_box(self, oid: str, cam: CameraModel):
        c, s = object_box(self._objects()[oid])
        corners = np.array([[c[0] + dx * s[0] / 2, c[1] + dy * s[1] / 2, c[2] + dz * s[2] / 2]
                            for dx in (-1, 1) for dy in (-1, 1) for dz in (-1, 1)])
        uv = cam.project(corners)
        if not np.all(np.isfinite(uv)):
            return None
        return uv.min(0), uv.max(0)

    def _view_stats(self, oid: str, cam: CameraModel) -> Tuple[float, int, float]:
        """(fraction of the projected box inside the image, mask pixels, visible fraction)."""
        pb = self._projected_box(oid, cam)
        mask = self._mask(oid)
        n = int(mask.sum()) if mask is not None else 0
        if n == 0 and oid in self._detections():
            x0, y0, x1, y1 = self._detections()[oid]
            n = (x1 - x0) * (y1 - y0)
        if pb is None:
            return 0.0, n, 0.0
        (u0, v0), (u1, v1) = pb
        area = max((u1 - u0) * (v1 - v0), 1e-9)
        w, h = cam.width, cam.height
        inside = max(0.0, min(u1, w) - max(u0, 0.0)) * max(0.0, min(v1, h) - max(v0, 0.0))
        if not self._has_segmentation():  # no pixels to count: Unity's visible flag decides
            seen = bool(self._objects()[oid].get("visible"))
            return float(inside / area), int(round(inside)) if seen else 0, 1.0 if seen else 0.0
        frac = min(1.0, n / (self.fill_factor * max(inside, 1e-9))) if inside > 0 else 0.0
        return float(inside / area), n, float(frac)

    # ------------------------------------------------------------------ interface
    def reset(self, seed: Optional[int] = None, scene_type: Optional[str] = None) -> SceneState:
        with self._lock:
            seed = self.seed if seed is None else int(seed)
            if scene_type is None:
                scene_type = self._types[seed % len(self._types)]
            if scene_type not in self._types:
                raise ValueError(f"scene type {scene_type!r} not in {self._types}")
            rng = np.random.default_rng([seed, 4099])
            plans = FLOOR_PLANS[scene_type]
            plan = plans[int(rng.integers(len(plans)))]
            self._event = self.controller.reset(scene=plan)
            self._scene_type, self._seed_now, self._plan = scene_type, seed, plan
            self._rng = rng
            objs = sorted(self._objects().values(), key=lambda o: o["objectId"])
            pick = [o["objectId"] for o in objs if o.get("pickupable")]
            seen = [o for o in pick if self._visible(o)]
            unseen = [o for o in pick if o not in seen]
            rng.shuffle(seen)
            rng.shuffle(unseen)
            order = seen + unseen
            if len(order) < self.n_active:
                raise RuntimeError(f"{plan} has only {len(order)} pickupable objects")
            self._active = order[: self.n_active]
            self._container = order[self.n_active: self.n_active + self.n_container]
            return self._state()

    def state(self) -> SceneState:
        with self._lock:
            return self._state()

    def _camera(self) -> CameraModel:
        m = self._meta
        frame = getattr(self._event, "frame", None)
        if frame is not None and np.ndim(frame) >= 2:  # the image the camera really took
            h, w = int(np.shape(frame)[0]), int(np.shape(frame)[1])
        else:
            w = int(m.get("screenWidth", self.image_size))
            h = int(m.get("screenHeight", self.image_size))
        return camera_from_metadata(m, w, h)

    def _object_state(self, o: Dict[str, Any], cam: CameraModel, active: bool) -> ObjectState:
        c, s = object_box(o)
        _, n, frac = self._view_stats(o["objectId"], cam)
        visible = self._visible(o["objectId"])
        parents = o.get("parentReceptacles") or []
        return ObjectState(
            id=o["objectId"], category=o["objectType"], description=self._describe(o),
            position=tuple(float(v) for v in c), orientation=unity_rotation_to_quat(o["rotation"]),
            size=tuple(float(v) for v in s), bbox=self._box_2d(o["objectId"], cam),
            visible=visible, visible_fraction=frac if visible else 0.0,
            active=active, supported_by=parents[0] if parents else "",
        )

    def _describe(self, o: Dict[str, Any]) -> str:
        t = o["objectType"]
        words = "".join(" " + ch.lower() if ch.isupper() else ch for ch in t).strip()
        same = [a for a in self._active if self._objects()[a]["objectType"] == t]
        if len(same) > 1 and o["objectId"] in same:
            return f"{words} {same.index(o['objectId']) + 1}"
        return words

    def _state(self) -> SceneState:
        cam = self._camera()
        objs = self._objects()
        return SceneState(
            scene_id=f"{self._meta.get('sceneName') or self._plan}_{self._seed_now}", scene_type=self._scene_type,
            seed=self._seed_now,
            camera=cam, objects=[self._object_state(objs[a], cam, True) for a in self._active],
            container_ids=list(self._container), backend=self.name)

    def render(self) -> Render:
        with self._lock:
            return self._render()

    def _render(self) -> Render:
        ev = self._event
        if ev is None:
            raise RuntimeError("call reset() first")
        rgb = np.asarray(ev.frame, dtype=np.uint8)
        h, w = rgb.shape[:2]
        seg = np.full((h, w), -1, np.int32)
        for i, a in enumerate(self._active):
            m = self._mask(a)
            if m is not None:
                seg[m] = i
        depth = getattr(ev, "depth_frame", None)
        depth = np.zeros((h, w), np.float32) if depth is None else np.asarray(depth, np.float32)
        cam = self._camera()
        return Render(rgb=rgb, segmentation=seg, depth=depth, boxes={a: self._box_2d(a, cam) for a in self._active})

    def receptacles(self) -> List[Tuple[str, float, Tuple[float, float], Tuple[float, float]]]:
        with self._lock:
            out = []
            for o in self._meta["objects"]:
                if o.get("receptacle"):
                    c, s = object_box(o)
                    out.append((o["objectId"], float(c[2] + s[2] / 2), (float(c[0] - s[0] / 2), float(c[1] - s[1] / 2)),
                                (float(c[0] + s[0] / 2), float(c[1] + s[1] / 2))))
            return out

    def placement_bounds(self):
        with self._lock:
            recs = [r for r in self.receptacles()]
            cam = self._camera()
            near = [r for r in recs if np.linalg.norm(np.array([(r[2][0] + r[3][0]) / 2, (r[2][1] + r[3][1]) / 2])
                                                      - np.array(cam.position[:2])) < 4.0] or recs
            lo = np.min([r[2] for r in near], 0)
            hi = np.max([r[3] for r in near], 0)
            return (float(lo[0]), float(lo[1]), 0.0), (float(hi[0]), float(hi[1]), float(max(r[1] for r in near) + 0.3))

    def apply(self, action: MoveAction) -> MoveResult:
        with self._lock:
            return self._apply(action)

    def _pose_of(self, oid: str):
        o = self._objects()[oid]
        return dict(o["position"]), dict(o["rotation"])

    def _apply(self, a: MoveAction) -> MoveResult:
        prev_render = self._render()
        bad = self._validate(a)
        if bad:
            return MoveResult(False, BAD_REQUEST, self._state(), prev_render, message=bad)
        oid = a.object_id
        saved = {k: self._pose_of(k) for k in set(self._active) | set(self._container)}
        prev_active, prev_container = list(self._active), list(self._container)
        moved = oid
        if a.action_type == SWAP:
            cid = a.container_object_id or self._container[int(self._rng.integers(len(self._container)))]
            c, s = object_box(self._objects()[oid])
            bottom = (c[0], c[1], c[2] - s[2] / 2)
            ev = self._step(action="PlaceObjectAtPoint", objectId=cid, position=world_to_unity(bottom))
            if ev.metadata.get("lastActionSuccess"):
                cpos, crot = saved[cid]
                self._step(action="TeleportObject", objectId=oid, position=cpos, rotation=crot, forceAction=True)
                self._active[self._active.index(oid)] = cid
                self._container[self._container.index(cid)] = oid
            moved = cid
            target_bottom_z = bottom[2]
        elif a.action_type == TELEPORT:
            c, _ = object_box(self._objects()[oid])
            pivot = np.array(unity_to_world(self._objects()[oid]["position"]))
            target = np.asarray(a.position, float) + (pivot - c)
            self._step(action="TeleportObject", objectId=oid, position=world_to_unity(target),
                       rotation={"x": 0.0, "y": -math.degrees(a.yaw), "z": 0.0}, forceAction=False)
            target_bottom_z = float(a.position[2]) - object_box(self._objects()[oid])[1][2] / 2
        else:
            point = None
            if a.receptacle_id:
                ev = self._step(action="GetSpawnCoordinatesAboveReceptacle", objectId=a.receptacle_id, anywhere=True)
                pts = [unity_to_world(p) for p in (ev.metadata.get("actionReturn") or [])]
                if not ev.metadata.get("lastActionSuccess") or not pts:
                    return self._undo(saved, prev_active, prev_container, prev_render,
                                      FLOATING, f"no spawn point above {a.receptacle_id}")
                pts_a = np.array(pts)
                if a.position is not None:
                    k = int(np.argmin(np.linalg.norm(pts_a[:, :2] - np.asarray(a.position[:2]), axis=1)))
                else:
                    k = int(self._rng.integers(len(pts_a)))
                point = pts_a[k]
            else:
                if a.position is None:
                    return MoveResult(False, BAD_REQUEST, self._state(), prev_render,
                                      message="place needs a position or a receptacle_id")
                point = np.asarray(a.position, float)
            self._step(action="PlaceObjectAtPoint", objectId=oid, position=world_to_unity(point))
            target_bottom_z = float(point[2])
        meta = self._event.metadata
        if not meta.get("lastActionSuccess"):
            return self._undo(saved, prev_active, prev_container, prev_render,
                              _reason_of_error(meta.get("errorMessage", "")), meta.get("errorMessage", ""))
        c, s = object_box(self._objects()[moved])
        if target_bottom_z - (c[2] - s[2] / 2) > self.drop_tol:
            return self._undo(saved, prev_active, prev_container, prev_render, FLOATING, f"{moved} fell")
        cam = self._camera()
        for x in self._active:
            inview, n, frac = self._view_stats(x, cam)
            if inview < self.min_in_view_fraction or n == 0 and inview == 0.0:
                return self._undo(saved, prev_active, prev_container, prev_render, OUT_OF_VIEW, f"{x} out of view")
            if n == 0 or frac < self.min_visible_fraction:
                return self._undo(saved, prev_active, prev_container, prev_render, OCCLUDED, f"{x} occluded")
        return MoveResult(True, "", self._state(), self._render(), message=f"{moved} moved")

    def _undo(self, saved, prev_active, prev_container, prev_render, reason: str, message: str) -> MoveResult:
        objs = self._objects()
        for k, (pos, rot) in saved.items():
            if k in objs and (objs[k]["position"] != pos or objs[k]["rotation"] != rot):
                self._step(action="TeleportObject", objectId=k, position=pos, rotation=rot, forceAction=True)
                objs = self._objects()
        self._active, self._container = list(prev_active), list(prev_container)
        return MoveResult(False, reason, self._state(), prev_render, message=message)

    def _validate(self, a: MoveAction) -> str:
        return move_request_problem(a, self._active, self._container, lambda: self._objects().keys())

    def close(self) -> None:
        stop = getattr(self.controller, "stop", None)
        if callable(stop):
            stop()
