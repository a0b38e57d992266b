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
  millimetres, 0 / NaN = no depth); the depth at the point is the median of the valid pixels
  within 2 px.
The 3D point's header is the image's, with ``frame_id`` replaced by the camera_info's when that
names a frame (the frame of the intrinsics is the optical frame; a simulator's image header may
name the world).
"""

from __future__ import annotations

import collections
import math
import threading
from typing import Deque, List, Optional, Sequence, Tuple

import numpy as np
from geometry_msgs.msg import Point, PointStamped
from rls3_msgs.msg import ObjectLocation
from sensor_msgs.msg import CameraInfo, Image, RegionOfInterest
from std_msgs.msg import Header

from rls3_ros.core.image_codec import DEPTH_ENCODINGS, ImageConversionError, image_msg_to_numpy
from rls3_ros.ros.nodes.conversions import stamp_to_ns
from rls3_ros.vlm import grounding as G


def intrinsics_from_camera_info(msg: Optional[CameraInfo]) -> Optional[G.Intrinsics]:
    """Pinhole intrinsics of a CameraInfo; None when K is unset (all zero). ValueError if malformed."""
    if msg is None:
        return None
    k = [float(v) for v in msg.k]
    if not any(k):
        return None
    if not all(math.isfinite(v) for v in k):
        raise ValueError("camera_info K contains NaN/inf")
    if k[0] <= 0 or k[4] <= 0:
        raise ValueError(f"camera_info focal lengths must be > 0 (fx={k[0]}, fy={k[4]})")
    if int(msg.width) <= 0 or int(msg.height) <= 0:
        raise ValueError("camera_info has no image size (width/height 0)")
    return G.Intrinsics(k[0], k[4], k[2], k[5], int(msg.width), int(msg.height))


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
    """Camera-info and depth frames buffered for the 3D points (thread-safe, bounded)."""

    def __init__(self, size: int = 30) -> None:
        self._lock = threading.Lock()
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
) -> List[str]:
    """Set ``resp.subject_location`` / ``resp.reference_location`` of a SpatialQuery response from
    ``model.locate_many``; returns notes for the response message (why something is missing)."""
    notes: List[str] = []
    names = [subject, reference]
    locs: Sequence[Optional[G.Location]] = [None, None]
    try:
        locs = list(model.locate_many(image, names))
        if len(locs) != 2:
            raise ValueError(f"locate_many gave {len(locs)} locations for 2 descriptions")
    except Exception as e:  # noqa: BLE001 - a location problem must not fail the answer
        notes.append(f"no object locations: {type(e).__name__}: {e}")
        locs = [None, None]
    else:
        if all(l is None for l in locs):
            notes.append(f"no object locations: model {type(model).__name__} does not ground descriptions")
    msgs = [location_msg(n, l) for n, l in zip(names, locs)]
    if any(m.found for m in msgs):
        notes += _add_points_3d(msgs, image, image_header, req_camera_info, req_depth, inputs, scene, tolerance_s)
    resp.subject_location, resp.reference_location = msgs
    return notes


def _add_points_3d(msgs: List[ObjectLocation], image: np.ndarray, header: Header, req_info, req_depth, inputs,
                   scene, tolerance_s: float) -> List[str]:
    h, w = image.shape[:2]
    stamp = stamp_to_ns(header.stamp)
    # intrinsics
    k, frame = None, header.frame_id
    try:
        info = req_info if req_info is not None and any(req_info.k) else (
            inputs.camera_info_for(stamp, tolerance_s) if inputs is not None else None)
        if info is not None:
            k = intrinsics_from_camera_info(info)
            frame = info.header.frame_id or frame
        if k is None and scene is not None and scene.camera is not None:  # the matched scene's own camera
            c = scene.camera
            k = G.Intrinsics(c.fx, c.fy, c.cx, c.cy, int(c.width), int(c.height))
        if k is None and inputs is not None:  # intrinsics rarely change: the latest camera_info
            info = inputs.latest_camera_info()
            k = intrinsics_from_camera_info(info)
            frame = (info.header.frame_id if info is not None else "") or frame
        if k is None:
            return ["no 3D points: no camera intrinsics (request camera_info, camera_info topic or scene state)"]
        k = k.scaled_to(w, h)
    except ValueError as e:
        return [f"no 3D points: {e}"]
    # depth image
    depth, depth_note = None, ""
    dmsg = req_depth if req_depth is not None and not _is_empty(req_depth) else (
        inputs.depth_for(stamp, tolerance_s) if inputs is not None else None)
    if dmsg is not None:
        try:
            depth = depth_image_metres(dmsg)
            if depth.shape != (h, w):
                depth_note = f"depth image is {depth.shape[1]}x{depth.shape[0]}, the image {w}x{h}: not used"
                depth = None
        except ImageConversionError as e:
            depth_note = f"depth image not used: {e}"
            depth = None
    notes = [depth_note] if depth_note else []
    out_header = Header(stamp=header.stamp, frame_id=frame)
    for m in msgs:
        if not m.found:
            continue
        z, source = None, ""
        if depth is not None:
            z = G.depth_at(depth, m.pixel.x, m.pixel.y)
            source = "depth_image" if z is not None else ""
        if z is None and scene is not None:
            z = G.scene_depth(scene, m.description)
            source = "scene_state" if z is not None else ""
        if z is None:
            notes.append(f"no 3D point for {m.description!r}: no depth at its point"
                         + ("" if depth is not None else " (no depth image and not in the scene state)"))
            continue
        x, y, zz = G.back_project(m.pixel.x, m.pixel.y, z, k)
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
