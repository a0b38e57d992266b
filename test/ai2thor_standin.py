"""A stand-in for ``ai2thor.controller.Controller`` (Unity cannot start here).

It serves the REAL event metadata in ``test/data/ai2thor/instance_segmentation_metadata.json`` (a copy of AI2-THOR's own test data, Apache-2.0)
(AI2-THOR's own test data) and follows AI2-THOR's documented behaviour for the actions the
backend uses, computed in Unity's own frame (y up, left-handed) independently of the
backend's conversion code:

- ``reset(scene=...)`` -> an event whose metadata is the real event's, UNCHANGED (its
  ``sceneName`` ``iTHOR_Kitchen_Val_09``, ``screenWidth``/``screenHeight`` 600, each object's
  own ``visible`` flag: 17 visible): there is one real event, so whatever floor plan is asked
  for, this is the scene served (``requested_scenes`` records what was asked);
  ``step(action=..., **kw)`` -> event with ``metadata["lastActionSuccess"]``/``errorMessage``/
  ``actionReturn``;
- ``PlaceObjectAtPoint(objectId, position)``: the object's bottom goes to the highest
  receptacle surface under the point; fails if it would collide;
- ``TeleportObject(objectId, position, rotation, forceAction)``: moves the pivot; without
  ``forceAction`` fails on collision; then the object falls onto the surface below;
- ``GetSpawnCoordinatesAboveReceptacle(objectId, anywhere)``: points on its top surface;
- ``visible``: only an object an action moved gets a new flag, as Unity would recompute it
  (approximated: its box centre projects into the image, in front of the camera, within
  AI2-THOR's default ``visibilityDistance`` of 1.5 m); every other object keeps the real one;
- frames at the metadata's screen size: ``frame``, ``instance_segmentation_frame`` (each
  object's projected box painted far-to-near in its segmentation colour),
  ``instance_detections2D`` ((x1, y1, x2, y2), inclusive max), ``object_id_to_color``,
  ``depth_frame``. With ``renderInstanceSegmentation=False`` (AI2-THOR's own flag) the
  segmentation frame and ``instance_detections2D`` are None, as AI2-THOR sends them.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

METADATA = Path(__file__).resolve().parent / "data" / "ai2thor" / "instance_segmentation_metadata.json"


def load_metadata() -> Dict[str, Any]:
    return json.loads(METADATA.read_text())


def _v(d):
    return np.array([d["x"], d["y"], d["z"]], dtype=float)


def _d(v):
    return {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}


class Event:
    def __init__(self, metadata, frame, seg, detections, colors, depth):
        self.metadata = metadata
        self.frame = frame
        self.instance_segmentation_frame = seg
        self.instance_detections2D = detections
        self.object_id_to_color = colors
        self.color_to_object_id = {v: k for k, v in colors.items()}
        self.depth_frame = depth


VISIBILITY_DISTANCE = 1.5  # AI2-THOR's default visibilityDistance [m]


class StandInController:
    def __init__(self, renderInstanceSegmentation: bool = True):  # noqa: N803 - AI2-THOR's own keyword
        self.render_instance_segmentation = bool(renderInstanceSegmentation)
        self.actions: List[str] = []
        self.requested_scenes: List[str] = []
        self._meta = None
        self.width = self.height = 0

    # ---------------------------------------------------------------- api
    def reset(self, scene: str = "FloorPlan1", **kw) -> Event:
        self.requested_scenes.append(scene)
        m = load_metadata()  # served as recorded: scene name, screen size, visibility, lastAction
        self.width, self.height = int(m["screenWidth"]), int(m["screenHeight"])
        self._meta = m
        return self._event()

    def step(self, action: str, **kw) -> Event:
        self.actions.append(action)
        m = self._meta
        m["lastAction"], m["lastActionSuccess"], m["errorMessage"], m["actionReturn"] = action, True, "", None
        handler = getattr(self, f"_do_{action}", None)
        if handler is None:
            m["lastActionSuccess"], m["errorMessage"] = False, f"Invalid action: {action}"
        else:
            before = {o["objectId"]: o["axisAlignedBoundingBox"]["center"] for o in m["objects"]}
            err = handler(**kw)
            if err:
                m["lastActionSuccess"], m["errorMessage"] = False, err
            for o in m["objects"]:  # Unity recomputes what it moved
                if o["axisAlignedBoundingBox"]["center"] != before[o["objectId"]]:
                    o["visible"] = self._seen(o)
        return self._event()

    def _seen(self, o) -> bool:
        c, _ = self._box(o)
        u, v, z = self.project_unity(c[None])[0]
        dist = float(np.linalg.norm(c - _v(self._meta["cameraPosition"])))
        return bool(z > 0.05 and 0 <= u < self.width and 0 <= v < self.height and dist <= VISIBILITY_DISTANCE)

    def stop(self):
        pass

    # ---------------------------------------------------------------- physics-ish
    def _obj(self, oid):
        for o in self._meta["objects"]:
            if o["objectId"] == oid:
                return o
        return None

    @staticmethod
    def _box(o):
        bb = o["axisAlignedBoundingBox"]
        return _v(bb["center"]), np.abs(_v(bb["size"]))

    def _move_box(self, o, new_center):
        c, s = self._box(o)
        delta = np.asarray(new_center) - c
        o["position"] = _d(_v(o["position"]) + delta)
        bb = o["axisAlignedBoundingBox"]
        bb["center"] = _d(new_center)
        bb["cornerPoints"] = [list(np.asarray(p) + delta) for p in bb["cornerPoints"]]

    def _support_below(self, o, x, z, y_from):
        """Highest receptacle top at (x, z) not above ``y_from`` (+ small tolerance)."""
        best, best_top = None, -np.inf
        for r in self._meta["objects"]:
            if r is o or not r.get("receptacle"):
                continue
            c, s = self._box(r)
            top = c[1] + s[1] / 2
            if abs(x - c[0]) <= s[0] / 2 and abs(z - c[2]) <= s[2] / 2 and top <= y_from + 0.05 and top > best_top:
                best, best_top = r, top
        return best, best_top

    def _collides(self, o, support):
        c, s = self._box(o)
        for other in self._meta["objects"]:
            if other is o or other is support or other["objectType"] in ("Floor",):
                continue
            if support is not None and other["objectId"] in (support.get("parentReceptacles") or []):
                continue
            oc, os_ = self._box(other)
            if max(os_) > 2.0:
                continue
            pen = (s + os_) / 2 - np.abs(c - oc)
            if np.all(pen > 0.01):
                return other["objectId"]
        return None

    def _rest(self, o, x, z, bottom_y):
        c, s = self._box(o)
        self._move_box(o, (x, bottom_y + s[1] / 2, z))

    def _do_PlaceObjectAtPoint(self, objectId, position, **kw):
        o = self._obj(objectId)
        if o is None:
            return f"object {objectId} not found"
        p = _v(position)
        support, top = self._support_below(o, p[0], p[2], p[1])
        if support is None:
            return f"No valid surface below point {position}"
        saved = copy.deepcopy(o)
        self._rest(o, p[0], p[2], top)
        hit = self._collides(o, support)
        if hit:
            o.clear()
            o.update(saved)
            return f"{objectId} collided with {hit}"
        o["parentReceptacles"] = [support["objectId"]]
        return ""

    def _do_TeleportObject(self, objectId, position, rotation=None, forceAction=False, **kw):
        o = self._obj(objectId)
        if o is None:
            return f"object {objectId} not found"
        saved = copy.deepcopy(o)
        c, s = self._box(o)
        delta = _v(position) - _v(o["position"])
        self._move_box(o, c + delta)
        if rotation is not None:
            o["rotation"] = dict(rotation)
        if forceAction:
            return ""
        c, s = self._box(o)
        support, top = self._support_below(o, c[0], c[2], c[1] - s[1] / 2)
        if support is None:
            o.clear()
            o.update(saved)
            return "no surface below the object"
        if self._collides(o, support):
            o.clear()
            o.update(saved)
            return f"{objectId} is obstructed"
        self._rest(o, c[0], c[2], top)  # gravity: it falls onto the surface below
        o["parentReceptacles"] = [support["objectId"]]
        return ""

    def _do_GetSpawnCoordinatesAboveReceptacle(self, objectId, anywhere=False, **kw):
        r = self._obj(objectId)
        if r is None or not r.get("receptacle"):
            return f"{objectId} is not a receptacle"
        c, s = self._box(r)
        top = c[1] + s[1] / 2
        pts = [{"x": float(x), "y": float(top), "z": float(z)}
               for x in np.arange(c[0] - s[0] / 2 + 0.05, c[0] + s[0] / 2 - 0.04, 0.1)
               for z in np.arange(c[2] - s[2] / 2 + 0.05, c[2] + s[2] / 2 - 0.04, 0.1)]
        self._meta["actionReturn"] = pts
        return ""

    # ---------------------------------------------------------------- frames
    def project_unity(self, pts: np.ndarray) -> np.ndarray:
        """Pixels (u right, v down) of Unity points, computed in Unity's own frame."""
        m = self._meta
        yaw = math.radians(m["agent"]["rotation"]["y"])
        hor = math.radians(m["agent"]["cameraHorizon"])
        cy_, sy_ = math.cos(yaw), math.sin(yaw)
        ch, sh = math.cos(hor), math.sin(hor)
        right = np.array([cy_, 0.0, -sy_])
        fwd = np.array([sy_ * ch, -sh, cy_ * ch])
        up = np.array([sy_ * sh, ch, cy_ * sh])
        f = 0.5 * self.height / math.tan(math.radians(m["fov"]) / 2)
        rel = np.atleast_2d(pts) - _v(m["cameraPosition"])
        zc = rel @ fwd
        u = self.width / 2 + f * (rel @ right) / zc
        v = self.height / 2 - f * (rel @ up) / zc
        return np.stack([u, v, zc], 1)

    def _event(self) -> Event:
        m = self._meta
        colors = {c["name"]: tuple(int(x) for x in c["color"]) for c in m["colors"]}
        seg = np.zeros((self.height, self.width, 3), np.uint8)
        depth = np.full((self.height, self.width), 5.0, np.float32)
        order = []
        for o in m["objects"]:
            c, s = self._box(o)
            if max(s) > 2.0 or o["objectId"] not in colors:
                continue
            corners = np.array(o["axisAlignedBoundingBox"]["cornerPoints"], float)
            uvz = self.project_unity(corners)
            if np.any(uvz[:, 2] <= 0.05):
                continue
            order.append((float(np.linalg.norm(c - _v(m["cameraPosition"]))), o["objectId"], uvz))
        ids = np.full((self.height, self.width), -1, np.int32)
        names = []
        for dist, oid, uvz in sorted(order, reverse=True):
            u0, v0 = np.floor(uvz[:, :2].min(0)).astype(int)
            u1, v1 = np.ceil(uvz[:, :2].max(0)).astype(int)
            u0, v0 = max(u0, 0), max(v0, 0)
            u1, v1 = min(u1, self.width), min(v1, self.height)
            if u1 > u0 and v1 > v0:
                ids[v0:v1, u0:u1] = len(names)
                depth[v0:v1, u0:u1] = dist
                names.append(oid)
        detections = {}
        for k, oid in enumerate(names):
            ys, xs = np.nonzero(ids == k)
            if len(xs):
                seg[ys, xs] = colors[oid]
                detections[oid] = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
        frame = (seg // 2 + 60).astype(np.uint8)
        if not self.render_instance_segmentation:
            seg, detections = None, None
        return Event(copy.deepcopy(m), frame, seg, detections, colors, depth)
