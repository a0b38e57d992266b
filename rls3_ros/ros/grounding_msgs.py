"""Object locations for ``spatial_query`` answers: the model's grounding -> ``rls3_msgs/ObjectLocation``
(2D box, point and confidence; a 3D point in the camera optical frame when intrinsics and a depth
are known). Kept apart from the node so the node stays a thin converter.

Where the inputs of the 3D point come from, first that applies:
- intrinsics: the request's ``camera_info`` (K not all zero), the ``camera_info_topic`` message
  with the image's stamp (within ``frame_tolerance``), the matched scene state's camera, the
  latest ``camera_info_topic`` message (a real camera's intrinsics do not change per frame);
- depth: the request's ``depth`` image, the ``depth_topic`` frame matching the image stamp
  (within ``frame_tolerance``), the camera-frame depth of the named object's pose in the matched
  scene state. A depth image must have the colour image's size (``32FC1`` metres or ``16UC1``
  millimetres, 0 / NaN = no depth).
What the 3D point is: with a depth image, the object's CENTRE estimated from the depths inside its
located box (``rls3_ros.vlm.depth_centre.object_centre``: the nearest coherent depth cluster in the
box's inner part, back-projected at the box centre and moved from the visible surface to the centre
along the ray; the depth at the point, median of the valid pixels within 2 px, when the box has no
valid depth); with a scene state, the located pixel back-projected at the depth of the object's
centre.
The 3D point's header is the image's, with ``frame_id`` replaced by the camera_info's when that
names a frame (the frame of the intrinsics is the optical frame; a simulator's image header may
name the world).

Limits (all inputs are untrusted messages; ``rls3_ros.vlm.grounding`` holds the numbers): intrinsics
(from any source) need finite values, fx and fy >= 1 px, the principal point inside the image and
a camera image of at most ``max_image_side`` px a side, else the answer has no 3D points and says
why; a depth image is used only with the colour image's width and height (checked on its header,
before conversion); depths outside 0.01 .. 100 m are no depth (the note says so); no point farther
than 1 km from the camera is given. Depth frames from the depth topic larger than the image limits
are not buffered. The model's ``locate_many`` runs under the caller's model lock only.
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
from typing import ContextManager, Deque, List, Optional, Sequence, Tuple

import numpy as np
from geometry_msgs.msg import Point, PointStamped
from rls3_msgs.msg import ObjectLocation
from sensor_msgs.msg import CameraInfo, Image, RegionOfInterest
from std_msgs.msg import Header

from rls3_ros.core.image_codec import DEPTH_ENCODINGS, ImageConversionError, ImageLimits, image_msg_to_numpy
from rls3_ros.ros.conversions import stamp_to_ns
from rls3_ros.vlm import depth_centre as DC
from rls3_ros.vlm import grounding as G


def intrinsics_from_camera_info(msg: Optional[CameraInfo], max_side: Optional[int] = None) -> Optional[G.Intrinsics]:
    """Pinhole intrinsics of a CameraInfo; None when K is unset (all zero). ValueError with the
    reason if they are not a usable camera (``grounding.check_intrinsics``: finite, fx, fy >= 1 px,
    principal point inside an image of 1 .. ``max_side`` px a side)."""
    if msg is None:
        return None
    k = [float(v) for v in msg.k]
    if not any(k):
        return None
    if not all(math.isfinite(v) for v in k):
        raise ValueError("camera_info K contains NaN/inf")
    if int(msg.width) <= 0 or int(msg.height) <= 0:
        raise ValueError("camera_info has no image size (width/height 0)")
    return G.check_intrinsics(G.Intrinsics(k[0], k[4], k[2], k[5], int(msg.width), int(msg.height)), max_side,
                              "camera_info")


def depth_image_metres(msg: Image) -> np.ndarray:
    """(H, W) float depth [m] of a 32FC1 (m) or 16UC1 (mm) image; invalid pixels are 0 or NaN."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(f"depth encoding {msg.encoding!r} unsupported (use {' or '.join(DEPTH_ENCODINGS)})")
    d = image_msg_to_numpy(msg)
    if d.ndim == 3:
        d = d[:, :, 0]
    return d.astype(np.float32) / 1000.0 if msg.encoding == "16UC1" else d.astype(np.float32)


def _is_empty(msg: Image) -> bool:
    return msg.width == 0 and msg.height == 0 and len(msg.data) == 0


def location_msg(description: str, loc: Optional[G.Location]) -> ObjectLocation:
    """ObjectLocation of a 2D location (found=false when ``loc`` is None); no 3D point yet."""
    m = ObjectLocation(description=description)
    if loc is None:
        return m
    x0, y0, x1, y1 = (int(v) for v in loc.box)
    m.found = True
    m.box = RegionOfInterest(x_offset=max(0, x0), y_offset=max(0, y0), width=max(0, x1 - x0),
                             height=max(0, y1 - y0), do_rectify=False)
    m.pixel = Point(x=float(loc.point[0]), y=float(loc.point[1]), z=0.0)
    m.confidence = float(loc.confidence)
    return m


def location_from_msg(m: ObjectLocation) -> Optional[G.Location]:
    if not m.found:
        return None
    b = m.box
    return G.Location((b.x_offset, b.y_offset, b.x_offset + b.width, b.y_offset + b.height), (m.pixel.x, m.pixel.y),
                      float(m.confidence))


class GroundingInputs:
    """Camera-info and depth frames buffered for the 3D points (thread-safe, bounded: ``size``
    messages each, depth frames within ``limits``; larger ones are counted in ``dropped_depths``
    and not kept)."""

    def __init__(self, size: int = 30, limits: Optional[ImageLimits] = None) -> None:
        self._lock = threading.Lock()
        self.limits = limits or ImageLimits()
        self.dropped_depths = 0
        self.infos: Deque[CameraInfo] = collections.deque(maxlen=size)
        self.depths: Deque[Image] = collections.deque(maxlen=size)

    def resize(self, size: int) -> None:
        with self._lock:
            self.infos = collections.deque(self.infos, maxlen=size)
            self.depths = collections.deque(self.depths, maxlen=size)

    def clear(self) -> None:
        with self._lock:
            self.infos.clear()
            self.depths.clear()

    def on_camera_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self.infos.append(msg)

    def on_depth(self, msg: Image) -> None:
        try:
            self.limits.check(int(msg.width), int(msg.height), "depth image")
        except ImageConversionError:
            self.dropped_depths += 1
            return
        with self._lock:
            self.depths.append(msg)

    @staticmethod
    def _nearest(msgs, stamp_ns: int, tolerance_ns: float):
        if not msgs or stamp_ns == 0:
            return None
        best = min(msgs, key=lambda m: abs(stamp_to_ns(m.header.stamp) - stamp_ns))
        return best if abs(stamp_to_ns(best.header.stamp) - stamp_ns) <= tolerance_ns else None

    def camera_info_for(self, stamp_ns: int, tolerance_s: float) -> Optional[CameraInfo]:
        """The camera_info nearest ``stamp_ns`` within tolerance (None if none is that close)."""
        with self._lock:
            infos = list(self.infos)
        return self._nearest(infos, stamp_ns, tolerance_s * 1e9)

    def latest_camera_info(self) -> Optional[CameraInfo]:
        with self._lock:
            return self.infos[-1] if self.infos else None

    def depth_for(self, stamp_ns: int, tolerance_s: float) -> Optional[Image]:
        """The depth frame nearest ``stamp_ns`` within tolerance (never an unmatched frame)."""
        with self._lock:
            depths = list(self.depths)
        return self._nearest(depths, stamp_ns, tolerance_s * 1e9)


def fill_locations(
    resp,
    model,
    image: np.ndarray,
    subject: str,
    reference: str,
    image_header: Header,
    req_camera_info: Optional[CameraInfo] = None,
    req_depth: Optional[Image] = None,
    inputs: Optional[GroundingInputs] = None,
    scene=None,
    tolerance_s: float = 0.1,
    model_lock: Optional[ContextManager] = None,
    max_side: Optional[int] = None,
) -> List[str]:
    """Set ``resp.subject_location`` / ``resp.reference_location`` of a SpatialQuery response from
    ``model.locate_many`` (run inside ``model_lock`` when given: nothing else here needs the model);
    returns notes for the response message (why something is missing). ``max_side``: largest
    camera image side accepted in intrinsics."""
    locs, notes = locate(model, image, [subject, reference], model_lock)
    set_locations(resp, image, [subject, reference], locs, notes, image_header, req_camera_info, req_depth, inputs,
                  scene, tolerance_s, max_side)
    return notes


def locate(model, image: np.ndarray, names: Sequence[str], model_lock: Optional[ContextManager] = None
           ) -> Tuple[List[Optional[G.Location]], List[str]]:
    """(locations of ``names`` from ``model.locate_many`` under ``model_lock``, notes). Never raises."""
    notes: List[str] = []
    try:
        with model_lock if model_lock is not None else contextlib.nullcontext():
            locs = list(model.locate_many(image, list(names)))
        if len(locs) != len(names):
            raise ValueError(f"locate_many gave {len(locs)} locations for {len(names)} descriptions")
    except Exception as e:  # noqa: BLE001 - a location problem must not fail the answer
        notes.append(f"no object locations: {type(e).__name__}: {e}")
        locs = [None] * len(names)
    else:
        if all(l is None for l in locs):
            notes.append(f"no object locations: model {type(model).__name__} does not ground descriptions")
    return locs, notes


def set_locations(resp, image: np.ndarray, names: Sequence[str], locs: Sequence[Optional[G.Location]],
                  notes: List[str], image_header: Header, req_camera_info: Optional[CameraInfo] = None,
                  req_depth: Optional[Image] = None, inputs: Optional[GroundingInputs] = None, scene=None,
                  tolerance_s: float = 0.1, max_side: Optional[int] = None) -> None:
    """Set the subject's and reference's ObjectLocation of ``resp`` from ``locs`` (with 3D points
    where intrinsics and a depth allow); notes on what is missing are appended to ``notes``."""
    msgs = [location_msg(n, l) for n, l in zip(names, locs)]
    if any(m.found for m in msgs):
        notes += _add_points_3d(msgs, image, image_header, req_camera_info, req_depth, inputs, scene, tolerance_s,
                                max_side)
    resp.subject_location, resp.reference_location = msgs


def _add_points_3d(msgs: List[ObjectLocation], image: np.ndarray, header: Header, req_info, req_depth, inputs,
                   scene, tolerance_s: float, max_side: Optional[int] = None) -> List[str]:
    h, w = image.shape[:2]
    stamp = stamp_to_ns(header.stamp)
    # intrinsics
    k, frame = None, header.frame_id
    try:
        info = req_info if req_info is not None and any(req_info.k) else (
            inputs.camera_info_for(stamp, tolerance_s) if inputs is not None else None)
        if info is not None:
            k = intrinsics_from_camera_info(info, max_side)
            frame = info.header.frame_id or frame
        if k is None and scene is not None and scene.camera is not None:  # the matched scene's own camera
            k = G.check_intrinsics(G.Intrinsics.of_camera(scene.camera), max_side, "scene_state camera")
        if k is None and inputs is not None:  # intrinsics rarely change: the latest camera_info
            info = inputs.latest_camera_info()
            k = intrinsics_from_camera_info(info, max_side)
            frame = (info.header.frame_id if info is not None else "") or frame
        if k is None:
            return ["no 3D points: no camera intrinsics (request camera_info, camera_info topic or scene state)"]
        k = k.scaled_to(w, h)
    except ValueError as e:
        return [f"no 3D points: {e}"]
    # depth image: its header size first (no conversion of a depth image that cannot be used)
    depth, depth_note = None, ""
    dmsg = req_depth if req_depth is not None and not _is_empty(req_depth) else (
        inputs.depth_for(stamp, tolerance_s) if inputs is not None else None)
    if dmsg is not None:
        if (int(dmsg.width), int(dmsg.height)) != (w, h):
            depth_note = f"depth image is {int(dmsg.width)}x{int(dmsg.height)}, the image {w}x{h}: not used"
        else:
            try:
                depth = depth_image_metres(dmsg)
            except ImageConversionError as e:
                depth_note = f"depth image not used: {e}"
                depth = None
    notes = [depth_note] if depth_note else []
    out_header = Header(stamp=header.stamp, frame_id=frame)
    for m in msgs:
        if not m.found:
            continue
        z, source, why, p = None, "", "", None
        if depth is not None:  # pixels outside the depth range are no depth
            b = m.box
            c = DC.object_centre(depth, (b.x_offset, b.y_offset, b.x_offset + b.width, b.y_offset + b.height),
                                 (m.pixel.x, m.pixel.y), k)
            z, p = (c.surface_depth, c.point) if c is not None else (None, None)
            source = "depth_image" if z is not None else ""
        if z is None and scene is not None:
            z = G.scene_depth(scene, m.description)
            source = "scene_state" if z is not None else ""
            if z is not None and not G.depth_in_range(z):
                why = f" (scene_state depth {z:g} m)"
                z = None
        if z is None:
            notes.append(f"no 3D point for {m.description!r}: no depth within {G.MIN_DEPTH_M:g} .. {G.MAX_DEPTH_M:g} m "
                         f"in its box or at its point{why}"
                         + ("" if depth is not None or why else " (no depth image and not in the scene state)"))
            continue
        p = p or G.point_3d(m.pixel.x, m.pixel.y, z, k)
        if p is None:
            notes.append(f"no 3D point for {m.description!r}: the intrinsics put it more than "
                         f"{G.MAX_POINT_RANGE_M:g} m from the camera")
            continue
        x, y, zz = p
        m.has_point_3d = True
        m.point_3d = PointStamped(header=out_header, point=Point(x=x, y=y, z=zz))
        m.depth_source = source
    return notes


def labelled_locations(msgs: Sequence[ObjectLocation]) -> List[Tuple[str, G.Location]]:
    """(description, Location) of the found locations, for the annotated image."""
    out = []
    for m in msgs:
        loc = location_from_msg(m)
        if loc is not None:
            out.append((m.description, loc))
    return out
