"""sensor_msgs/Image <-> numpy, with cv_bridge when the ROS install has a working one.

The project's own converter handles rgb8, bgr8, rgba8, bgra8, mono8, 16UC1 and 32FC1,
honours row padding (``step``) and rejects what it cannot read with a clear
``ImageConversionError`` (a ``ValueError``), so a service can answer with the reason.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from rls3_ros.image_arrays import ENCODINGS as PIXEL_ENCODINGS
from rls3_ros.image_arrays import ImageConversionError, image_buffer, image_pixels

# encoding -> (numpy dtype, channels): the encodings the nodes take
ENCODINGS = {e: PIXEL_ENCODINGS[e] for e in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "16UC1", "32FC1")}

MAX_PIXELS = 4096 * 4096


def _load_cv_bridge():
    """A working cv_bridge.CvBridge, or None (PyPI's cv-bridge is a broken ROS 1 copy)."""
    try:  # pragma: no cover - depends on the user's ROS install
        from cv_bridge import CvBridge  # type: ignore

        bridge = CvBridge()
        probe = bridge.cv2_to_imgmsg(np.zeros((2, 2, 3), np.uint8), encoding="rgb8")
        bridge.imgmsg_to_cv2(probe)
        return bridge
    except Exception:
        return None


_CV_BRIDGE = _load_cv_bridge()


def using_cv_bridge() -> bool:
    return _CV_BRIDGE is not None


def _layout(msg: Image) -> Tuple[np.dtype, int]:
    if msg.encoding not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported encoding {msg.encoding!r} (supported: {', '.join(ENCODINGS)})"
        )
    if msg.is_bigendian:
        raise ImageConversionError("big-endian images are not supported (is_bigendian=1)")
    dtype, channels = ENCODINGS[msg.encoding]
    return np.dtype(dtype), channels


def image_msg_to_numpy(msg: Image) -> np.ndarray:
    """Array in the message's own encoding: (H, W, C) or (H, W) for one channel. A copy."""
    dtype, channels = _layout(msg)
    h, w = int(msg.height), int(msg.width)
    if h * w > MAX_PIXELS:
        raise ImageConversionError(f"image too large ({w}x{h} > {MAX_PIXELS} pixels)")
    if _CV_BRIDGE is not None:  # pragma: no cover - depends on the user's ROS install
        image_buffer(msg, dtype, channels)
        return np.array(_CV_BRIDGE.imgmsg_to_cv2(msg))
    return image_pixels(msg, dtype, channels)


def image_msg_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any supported colour or mono8 encoding."""
    arr = image_msg_to_numpy(msg)
    enc = msg.encoding
    if enc == "rgb8":
        return arr
    if enc == "bgr8":
        return np.ascontiguousarray(arr[:, :, ::-1])
    if enc == "rgba8":
        return np.ascontiguousarray(arr[:, :, :3])
    if enc == "bgra8":
        return np.ascontiguousarray(arr[:, :, 2::-1])
    if enc == "mono8":
        return np.repeat(arr[:, :, None], 3, axis=2)
    raise ImageConversionError(f"{enc} is not a colour image encoding")


def numpy_to_image_msg(arr: np.ndarray, encoding: str = "rgb8", header: Optional[Header] = None) -> Image:
    """An Image message holding ``arr`` (packed rows, little-endian)."""
    if encoding not in ENCODINGS:
        raise ImageConversionError(f"unsupported encoding {encoding!r} (supported: {', '.join(ENCODINGS)})")
    dtype, channels = ENCODINGS[encoding]
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] != channels:
        raise ImageConversionError(f"array of shape {np.asarray(arr).shape} does not fit {encoding} ({channels} channels)")
    if a.dtype != dtype:
        raise ImageConversionError(f"array dtype {a.dtype} does not fit {encoding} ({np.dtype(dtype).name})")
    a = np.ascontiguousarray(a.astype(np.dtype(dtype).newbyteorder("<"), copy=False))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(a.shape[1] * channels * np.dtype(dtype).itemsize)
    msg.data = a.tobytes()
    return msg
