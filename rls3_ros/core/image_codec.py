"""The one sensor_msgs/Image and CompressedImage codec: message <-> numpy, live and on replay.

Every place that turns an image message into pixels or back goes through here: the nodes
(rclpy messages), the bag readers and writers (rosbags messages) and the tests. Both message
libraries share the field names, so one function reads both; nothing here imports rclpy or a
message package (``numpy_to_image_msg`` without ``msg_type`` imports ``sensor_msgs.msg`` when
called).

    arr = image_msg_to_numpy(msg)        # the message's own encoding: (H, W, C) or (H, W)
    rgb = image_msg_to_rgb(msg)          # (H, W, 3) uint8, Image or CompressedImage
    msg = numpy_to_image_msg(arr, "16UC1", header, msg_type=store.types["sensor_msgs/msg/Image"])

Encodings (``ENCODINGS``): rgb8, bgr8, rgba8, bgra8, mono8, mono16, 16UC1, 32FC1 and the
generic 8UC1 / 8UC3. Row padding (``step`` larger than a row; the last row's padding may be
missing) and ``is_bigendian`` are honoured on reading and can be written. RGB comes of the
colour and mono encodings (``RGB_ENCODINGS``); depth (16UC1, 32FC1) and the generic
encodings have no colour meaning and are refused by ``image_msg_to_rgb``. Anything else
raises ``ImageConversionError`` (a ``ValueError``) naming the encoding, so a service can
answer with the reason.

rosbags.image does the part it covers: the dtype/channel layout and byte order of a packed
buffer (``image_to_cvimage``) and the colour conversions (``convert_color``). It ignores
``step`` and does not check sizes, so rows are unpadded and sizes checked here first.
CompressedImage (jpeg/png) is decoded with ``cv2.imdecode(IMREAD_COLOR)``: rosbags.image's
``compressed_image_to_cvimage`` reads with ANYCOLOR (a grey PNG then fails its BGR->RGB step)
and asserts instead of saying why. cv_bridge is not used (not installable here, and one
codec means one behaviour wherever the message is read).
"""

from __future__ import annotations

import dataclasses
from array import array
from types import SimpleNamespace
from typing import Any, Optional, Tuple

import numpy as np
from rosbags.image import image as _rbimage

# encoding -> (numpy dtype, channels)
ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
    "8UC1": (np.uint8, 1),
    "8UC3": (np.uint8, 3),
}
RGB_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
DEPTH_ENCODINGS = ("32FC1", "16UC1")  # metres, millimetres
MAX_PIXELS = 4096 * 4096

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"


class ImageConversionError(ValueError):
    """The image message (or array) cannot be converted; the message says why."""


def layout(encoding: str) -> Tuple[np.dtype, int]:
    """(dtype, channels) of a supported encoding; ImageConversionError naming it otherwise."""
    if encoding not in ENCODINGS:
        raise ImageConversionError(f"unsupported encoding {encoding!r} (supported: {', '.join(ENCODINGS)})")
    dtype, channels = ENCODINGS[encoding]
    return np.dtype(dtype), channels


def is_compressed(msg: Any) -> bool:
    """True for a sensor_msgs/CompressedImage (it has ``format``, no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def _data_bytes(data: Any) -> np.ndarray:
    """The message's ``data`` as a flat uint8 array without a copy where the library allows
    (rclpy: array.array, rosbags: numpy; bytes and lists work too)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _packed_rows(msg: Any, dtype: np.dtype, channels: int) -> np.ndarray:
    """(H, row bytes) uint8 writable copy of the pixel rows, padding dropped, after checking
    that size, ``step`` and data length fit."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    enc = str(msg.encoding)
    if h <= 0 or w <= 0:
        raise ImageConversionError(f"empty image ({w}x{h})")
    if h * w > MAX_PIXELS:
        raise ImageConversionError(f"image too large ({w}x{h} > {MAX_PIXELS} pixels)")
    row = w * channels * dtype.itemsize
    if step < row:
        raise ImageConversionError(
            f"step {step} is smaller than a row ({w} px x {channels} ch x {dtype.itemsize} B = {row}) for {enc}")
    buf = _data_bytes(msg.data)
    need = step * (h - 1) + row
    if buf.size < need:
        raise ImageConversionError(f"data has {buf.size} bytes, {w}x{h} {enc} with step {step} needs {step * h}")
    rows = np.lib.stride_tricks.as_strided(buf[:need], shape=(h, row), strides=(step, 1))
    return np.array(rows, copy=True)


def image_msg_to_numpy(msg: Any) -> np.ndarray:
    """Writable array of a sensor_msgs/Image in its own encoding, native byte order:
    (H, W, C), or (H, W) for one channel."""
    enc = str(msg.encoding)
    dtype, channels = layout(enc)
    rows = _packed_rows(msg, dtype, channels)
    packed = SimpleNamespace(encoding=enc, height=int(msg.height), width=int(msg.width),
                             is_bigendian=bool(msg.is_bigendian), data=rows)
    arr = _rbimage.image_to_cvimage(packed)
    if not arr.flags.writeable:  # a view of ``rows`` (our copy); make it writable
        arr = arr.copy()
    return arr


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a sensor_msgs/Image in a colour or mono encoding, or of a
    CompressedImage. A writable copy."""
    if is_compressed(msg):
        return compressed_msg_to_rgb(msg)
    enc = str(msg.encoding)
    if enc not in RGB_ENCODINGS:
        layout(enc)  # unknown encodings: "unsupported encoding ..."
        raise ImageConversionError(f"{enc} is not a colour image encoding (colour: {', '.join(RGB_ENCODINGS)})")
    rgb = _rbimage.convert_color(image_msg_to_numpy(msg), enc, "rgb8")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def compressed_msg_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a sensor_msgs/CompressedImage (jpeg/png, grey or colour)."""
    import cv2

    fmt = str(msg.format)
    buf = _data_bytes(msg.data)
    if buf.size == 0:
        raise ImageConversionError(f"empty compressed image (format {fmt!r})")
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise ImageConversionError(f"cannot decode compressed image (format {fmt!r}): {' '.join(str(e).split())}") from None
    if img is None:
        raise ImageConversionError(f"cannot decode compressed image (format {fmt!r})")
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] * img.shape[1] == 0:
        raise ImageConversionError(f"decoded image has shape {img.shape} (format {fmt!r})")
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise ImageConversionError(f"image too large ({img.shape[1]}x{img.shape[0]} > {MAX_PIXELS} pixels)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _default_image_type():
    from sensor_msgs.msg import Image  # rclpy's message class; no rclpy import

    return Image


def numpy_to_image_msg(arr: np.ndarray, encoding: str = "rgb8", header: Any = None, msg_type: Any = None,
                       *, big_endian: bool = False, step: Optional[int] = None) -> Any:
    """A sensor_msgs/Image of ``msg_type`` (default: rclpy's ``sensor_msgs.msg.Image``; a
    rosbags typestore class works, it then needs ``header``) holding ``arr`` in ``encoding``.

    ``arr`` must have the encoding's channels ((H, W) or (H, W, 1) for one) and dtype. Rows are
    packed little-endian unless ``big_endian``; ``step`` > a row pads every row with zeros."""
    dtype, channels = layout(encoding)
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] != channels:
        raise ImageConversionError(f"array of shape {np.asarray(arr).shape} does not fit {encoding} ({channels} channels)")
    if a.dtype != dtype:
        raise ImageConversionError(f"array dtype {a.dtype} does not fit {encoding} ({dtype.name})")
    h, w = int(a.shape[0]), int(a.shape[1])
    row = w * channels * dtype.itemsize
    step = row if step is None else int(step)
    if step < row:
        raise ImageConversionError(f"step {step} is smaller than a row ({row} B) for {encoding}")
    rows = np.ascontiguousarray(a.astype(dtype.newbyteorder(">" if big_endian else "<"), copy=False)).view(np.uint8)
    rows = rows.reshape(h, row)
    if step > row:
        rows = np.concatenate([rows, np.zeros((h, step - row), np.uint8)], axis=1)
    cls = msg_type if msg_type is not None else _default_image_type()
    rosbags_type = dataclasses.is_dataclass(cls)  # rosbags classes are dataclasses; rclpy's are not
    data = rows.reshape(-1) if rosbags_type else array("B", rows.tobytes())
    fields = dict(height=h, width=w, encoding=encoding, is_bigendian=int(bool(big_endian)), step=step, data=data)
    if header is not None:
        fields["header"] = header
    return cls(**fields)
