"""rosbags message objects <-> core types of ``rls3_ros.scene`` (no rclpy).

The scene/sample mapping is :mod:`rls3_ros.scene_msgs`, the same one the rclpy node layer
(``rls3_ros.nodes.conversions``) uses, bound here to a rosbags typestore: a sample exported
here and read by an rclpy node gives the same core objects as one published by the node
layer. Images are decoded here (more encodings than the node side, big-endian, rosbags-image
fallback, CompressedImage).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from rosbags.typesys.store import Typestore

from rls3_ros.image_arrays import ENCODINGS, ImageConversionError, image_pixels

from rls3_ros.scene import CameraModel, ObjectState, Sample, SceneState, SpatialRelation
from rls3_ros.scene_msgs import (  # noqa: F401  (re-exported for the bag modules)
    CAMERA_FRAME,
    WORLD_FRAME,
    MessageConversionError,
    SceneMessageCodec,
    msg_to_object,
    msg_to_relation,
    msg_to_sample,
    msg_to_scene,
    stamp_to_ns,
)

SAMPLE_TYPE = "rls3_msgs/msg/Sample"
SCENE_TYPE = "rls3_msgs/msg/SceneState"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"


BagConversionError = MessageConversionError  # a message from a bag cannot be converted; says why


# ---------------------------------------------------------------- time / header
def make_stamp(store: Typestore, ns: int):
    return bag_codec(store).stamp(ns)


def make_header(store: Typestore, ns: int, frame_id: str = WORLD_FRAME):
    return bag_codec(store).header(ns, frame_id)


# ---------------------------------------------------------------- images
def image_to_numpy(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image (rosbags object) as an array in its own encoding; honours ``step``."""
    enc = str(msg.encoding)
    if enc not in ENCODINGS:
        try:  # anything else rosbags-image knows (bayer, yuv422, 16-bit colour, ...)
            from rosbags.image import image_to_cvimage

            return np.array(image_to_cvimage(msg))
        except Exception as exc:
            raise BagConversionError(f"unsupported image encoding {enc!r}: {exc}") from None
    dtype, channels = ENCODINGS[enc]
    try:
        return image_pixels(msg, np.dtype(dtype), channels, big_endian=bool(msg.is_bigendian))
    except ImageConversionError as exc:
        raise BagConversionError(f"image {exc}") from None


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
    return store.types[IMAGE_TYPE](
        header=header,
        height=int(h),
        width=int(w),
        encoding=encoding,
        is_bigendian=0,
        step=int(arr.strides[0]),
        data=arr.reshape(-1).view(np.uint8),
    )


# ---------------------------------------------------------------- scene / samples
def bag_codec(store: Typestore) -> SceneMessageCodec:
    """The core-type mapping of :mod:`rls3_ros.scene_msgs` bound to the typestore's classes."""
    return SceneMessageCodec(
        lambda name: store.types[name],
        image_to_msg=lambda rgb, header: numpy_to_image(store, rgb, header),
        image_to_rgb=image_to_rgb,
    )


def camera_info(store: Typestore, camera: CameraModel, header):
    return bag_codec(store).camera_info(camera, header)


def object_to_bagmsg(store: Typestore, o: ObjectState):
    return bag_codec(store).object_to_msg(o)


def scene_to_bagmsg(store: Typestore, scene: SceneState, header=None):
    return bag_codec(store).scene_to_msg(scene, header)


def relation_to_bagmsg(store: Typestore, r: SpatialRelation):
    return bag_codec(store).relation_to_msg(r)


def sample_to_bagmsg(store: Typestore, s: Sample, header=None):
    return bag_codec(store).sample_to_msg(s, header)


def bagmsg_to_sample(m: Any) -> Sample:
    return msg_to_sample(m, image_to_rgb)


bagmsg_to_object = msg_to_object
bagmsg_to_scene = msg_to_scene
bagmsg_to_relation = msg_to_relation


def header_stamp_ns(msg: Any) -> Optional[int]:
    """Stamp of a message's ``header`` in ns, or None when it has none."""
    h = getattr(msg, "header", None)
    return stamp_to_ns(h.stamp) if h is not None and hasattr(h, "stamp") else None
