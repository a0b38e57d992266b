"""rosbags message objects <-> core types of ``rls3_ros.scene`` (no rclpy).

Mirrors the conventions of ``rls3_ros.nodes.conversions`` (the rclpy side): headers stamped
with ``scene.stamp_ns``, frame ``world`` for samples and scenes, ``camera_optical`` for the
image and camera info, plumb_bob camera info without distortion, 2D boxes as
RegionOfInterest (x_offset, y_offset, width, height). A sample exported here and read by an
rclpy node gives the same core objects as one published by the node layer.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np
from rosbags.typesys.store import Typestore

from rls3_ros.scene import CameraModel, ObjectState, Sample, SceneState, SpatialRelation

WORLD_FRAME = "world"
CAMERA_FRAME = "camera_optical"

SAMPLE_TYPE = "rls3_msgs/msg/Sample"
SCENE_TYPE = "rls3_msgs/msg/SceneState"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"


class BagConversionError(ValueError):
    """A message from a bag cannot be converted to a core type; the message says why."""


# ---------------------------------------------------------------- time / header
def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _T(store: Typestore, name: str):
    return store.types[name]


def make_stamp(store: Typestore, ns: int):
    return _T(store, "builtin_interfaces/msg/Time")(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def make_header(store: Typestore, ns: int, frame_id: str = WORLD_FRAME):
    return _T(store, "std_msgs/msg/Header")(stamp=make_stamp(store, ns), frame_id=frame_id)


def _pose(store: Typestore, position, orientation):
    P = _T(store, "geometry_msgs/msg/Point")
    Q = _T(store, "geometry_msgs/msg/Quaternion")
    return _T(store, "geometry_msgs/msg/Pose")(
        position=P(x=float(position[0]), y=float(position[1]), z=float(position[2])),
        orientation=Q(x=float(orientation[0]), y=float(orientation[1]), z=float(orientation[2]), w=float(orientation[3])),
    )


def _pose_values(p) -> Tuple[tuple, tuple]:
    return (
        (float(p.position.x), float(p.position.y), float(p.position.z)),
        (float(p.orientation.x), float(p.orientation.y), float(p.orientation.z), float(p.orientation.w)),
    )


# ---------------------------------------------------------------- images
_ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "8UC1": (np.uint8, 1),
    "8UC3": (np.uint8, 3),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


def image_to_numpy(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image (rosbags object) as an array in its own encoding; honours ``step``."""
    enc = str(msg.encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if enc not in _ENCODINGS:
        try:  # anything else rosbags-image knows (bayer, yuv422, 16-bit colour, ...)
            from rosbags.image import image_to_cvimage

            return np.array(image_to_cvimage(msg))
        except Exception as exc:
            raise BagConversionError(f"unsupported image encoding {enc!r}: {exc}") from None
    dtype, ch = _ENCODINGS[enc]
    dtype = np.dtype(dtype)
    if h <= 0 or w <= 0:
        raise BagConversionError(f"empty image ({w}x{h})")
    row = w * ch * dtype.itemsize
    if step < row:
        raise BagConversionError(f"image step {step} is smaller than a row ({row} bytes)")
    buf = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if buf.size < step * (h - 1) + row:
        raise BagConversionError(f"image data has {buf.size} bytes, {w}x{h} {enc} with step {step} needs {step * h}")
    if buf.size < step * h:
        buf = np.concatenate([buf, np.zeros(step * h - buf.size, np.uint8)])
    rows = buf[: step * h].reshape(h, step)[:, :row]
    arr = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    arr = arr.astype(dtype, copy=False)
    return arr.reshape(h, w, ch) if ch > 1 else arr.reshape(h, w)


def image_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a sensor_msgs/Image or CompressedImage (rosbags objects)."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_to_rgb(msg)
    arr = image_to_numpy(msg)
    enc = str(msg.encoding)
    if enc in ("rgb8", "8UC3"):
        return arr
    if enc == "bgr8":
        return arr[..., ::-1].copy()
    if enc == "rgba8":
        return arr[..., :3].copy()
    if enc == "bgra8":
        return arr[..., 2::-1].copy()
    if arr.ndim == 2:
        if arr.dtype != np.uint8:
            a = arr.astype(np.float64)
            finite = a[np.isfinite(a)]
            hi = float(finite.max()) if finite.size else 1.0
            a = np.nan_to_num(a / (hi if hi > 0 else 1.0)) * 255.0
            arr = np.clip(a, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] >= 3:
        return np.ascontiguousarray(arr[..., :3]).astype(np.uint8)
    raise BagConversionError(f"cannot make RGB of encoding {enc!r}")


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a sensor_msgs/CompressedImage (jpeg/png) via cv2.imdecode."""
    import cv2

    img = cv2.imdecode(np.frombuffer(bytes(np.asarray(msg.data, dtype=np.uint8)), np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise BagConversionError(f"cannot decode compressed image (format {msg.format!r})")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def numpy_to_image(store: Typestore, arr: np.ndarray, header, encoding: str = "rgb8"):
    """sensor_msgs/Image (rosbags object) of a (H, W, C) / (H, W) array."""
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    return _T(store, IMAGE_TYPE)(
        header=header,
        height=int(h),
        width=int(w),
        encoding=encoding,
        is_bigendian=0,
        step=int(arr.strides[0]),
        data=arr.reshape(-1).view(np.uint8),
    )


# ---------------------------------------------------------------- scene
def camera_info(store: Typestore, camera: CameraModel, header):
    CI = _T(store, "sensor_msgs/msg/CameraInfo")
    ROI = _T(store, "sensor_msgs/msg/RegionOfInterest")
    return CI(
        header=header,
        height=int(camera.height),
        width=int(camera.width),
        distortion_model="plumb_bob",
        d=np.zeros(5, np.float64),
        k=np.array([camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0], np.float64),
        r=np.eye(3, dtype=np.float64).reshape(-1),
        p=np.array([camera.fx, 0.0, camera.cx, 0.0, 0.0, camera.fy, camera.cy, 0.0, 0.0, 0.0, 1.0, 0.0], np.float64),
        binning_x=0,
        binning_y=0,
        roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def object_to_bagmsg(store: Typestore, o: ObjectState):
    x0, y0, x1, y1 = (int(v) for v in o.bbox)
    return _T(store, "rls3_msgs/msg/ObjectState")(
        id=o.id,
        category=o.category,
        description=o.description,
        pose=_pose(store, o.position, o.orientation),
        size=_T(store, "geometry_msgs/msg/Vector3")(x=float(o.size[0]), y=float(o.size[1]), z=float(o.size[2])),
        bbox=_T(store, "sensor_msgs/msg/RegionOfInterest")(
            x_offset=max(x0, 0), y_offset=max(y0, 0), height=max(y1 - y0, 0), width=max(x1 - x0, 0), do_rectify=False
        ),
        visible=bool(o.visible),
        visible_fraction=float(o.visible_fraction),
        active=bool(o.active),
        supported_by=o.supported_by,
    )


def bagmsg_to_object(m: Any) -> ObjectState:
    pos, quat = _pose_values(m.pose)
    b = m.bbox
    return ObjectState(
        id=m.id,
        category=m.category,
        description=m.description,
        position=pos,
        orientation=quat,
        size=(float(m.size.x), float(m.size.y), float(m.size.z)),
        bbox=(int(b.x_offset), int(b.y_offset), int(b.x_offset) + int(b.width), int(b.y_offset) + int(b.height)),
        visible=bool(m.visible),
        visible_fraction=float(m.visible_fraction),
        active=bool(m.active),
        supported_by=m.supported_by,
    )


def scene_to_bagmsg(store: Typestore, scene: SceneState, header=None):
    header = header if header is not None else make_header(store, scene.stamp_ns)
    return _T(store, SCENE_TYPE)(
        header=header,
        scene_id=scene.scene_id,
        scene_type=scene.scene_type,
        seed=int(scene.seed),
        backend=scene.backend,
        objects=[object_to_bagmsg(store, o) for o in scene.objects],
        container_ids=list(scene.container_ids),
        camera_pose=_pose(store, scene.camera.position, scene.camera.orientation),
        camera_info=camera_info(store, scene.camera, make_header(store, stamp_to_ns(header.stamp), CAMERA_FRAME)),
    )


def bagmsg_to_scene(m: Any) -> SceneState:
    pos, quat = _pose_values(m.camera_pose)
    k = [float(v) for v in m.camera_info.k]
    if not all(math.isfinite(v) for v in (*pos, *quat, *k[:6])):
        raise BagConversionError("camera pose or intrinsics contain NaN/inf")
    if int(m.camera_info.width) == 0 or int(m.camera_info.height) == 0 or k[0] <= 0 or k[4] <= 0:
        raise BagConversionError("camera_info has no image size or focal length")
    if sum(q * q for q in quat) < 1e-12:
        raise BagConversionError("camera orientation is a zero quaternion")
    camera = CameraModel(
        position=pos,
        orientation=quat,
        width=int(m.camera_info.width),
        height=int(m.camera_info.height),
        fx=k[0],
        fy=k[4],
        cx=k[2],
        cy=k[5],
    )
    return SceneState(
        scene_id=m.scene_id,
        scene_type=m.scene_type,
        seed=int(m.seed),
        camera=camera,
        objects=[bagmsg_to_object(o) for o in m.objects],
        container_ids=list(m.container_ids),
        backend=m.backend,
        stamp_ns=stamp_to_ns(m.header.stamp),
    )


# ---------------------------------------------------------------- relations / samples
def relation_to_bagmsg(store: Typestore, r: SpatialRelation):
    return _T(store, "rls3_msgs/msg/SpatialRelation")(
        subject_id=r.subject_id,
        reference_id=r.reference_id,
        subject_description=r.subject_description,
        reference_description=r.reference_description,
        terms=list(r.terms),
        horizontal_angle=float(r.horizontal_angle),
        vertical_angle=float(r.vertical_angle),
        distance=float(r.distance),
        caption=r.caption,
        negatives=list(r.negatives),
    )


def bagmsg_to_relation(m: Any) -> SpatialRelation:
    return SpatialRelation(
        subject_id=m.subject_id,
        reference_id=m.reference_id,
        subject_description=m.subject_description,
        reference_description=m.reference_description,
        terms=list(m.terms),
        horizontal_angle=float(m.horizontal_angle),
        vertical_angle=float(m.vertical_angle),
        distance=float(m.distance),
        caption=m.caption,
        negatives=list(m.negatives),
    )


def sample_to_bagmsg(store: Typestore, s: Sample, header=None):
    header = header if header is not None else make_header(store, s.scene.stamp_ns)
    img = np.asarray(s.image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise BagConversionError(f"sample {s.sample_id!r}: image must be (H, W, 3), got {img.shape}")
    return _T(store, SAMPLE_TYPE)(
        header=header,
        sample_id=s.sample_id,
        episode=int(s.episode),
        step=int(s.step),
        image=numpy_to_image(store, img.astype(np.uint8, copy=False), make_header(store, stamp_to_ns(header.stamp), CAMERA_FRAME)),
        scene=scene_to_bagmsg(store, s.scene, header),
        relations=[relation_to_bagmsg(store, r) for r in s.relations],
        valid=bool(s.valid),
        invalid_reason=s.invalid_reason,
    )


def bagmsg_to_sample(m: Any) -> Sample:
    return Sample(
        sample_id=m.sample_id,
        image=image_to_rgb(m.image),
        scene=bagmsg_to_scene(m.scene),
        relations=[bagmsg_to_relation(r) for r in m.relations],
        valid=bool(m.valid),
        invalid_reason=m.invalid_reason,
        episode=int(m.episode),
        step=int(m.step),
    )


def header_stamp_ns(msg: Any) -> Optional[int]:
    """Stamp of a message's ``header`` in ns, or None when it has none."""
    h = getattr(msg, "header", None)
    return stamp_to_ns(h.stamp) if h is not None and hasattr(h, "stamp") else None
