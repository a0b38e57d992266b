"""sensor_msgs/Image pixel buffers -> numpy arrays, for any message library (no rclpy).

The layout rules both readers share: the rclpy node side (``rls3_ros.nodes.image_conversion``)
and the bag side (``rls3_ros.bags.convert``), each of which decides which encodings it takes.
Reading honours row padding (``step``); a buffer one short last row's padding is accepted.
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

# encoding -> (numpy dtype, channels): every raw encoding the project reads itself
ENCODINGS = {
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


class ImageConversionError(ValueError):
    """The image message cannot be converted; the message says why."""


def image_buffer(msg: Any, dtype: np.dtype, channels: int) -> Tuple[bytes, int]:
    """The message's data as bytes and its packed row length, after checking that the size,
    ``step`` and data length fit; ImageConversionError saying why when they do not."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageConversionError(f"empty image ({w}x{h})")
    row = w * channels * dtype.itemsize
    if step < row:
        raise ImageConversionError(f"step {step} is smaller than a row ({w} px x {channels} ch x {dtype.itemsize} B = {row})")
    data = msg.data
    buf = data.tobytes() if hasattr(data, "tobytes") else bytes(data)
    if len(buf) < step * (h - 1) + row:
        raise ImageConversionError(f"data has {len(buf)} bytes, {w}x{h} {msg.encoding} with step {step} needs {step * h}")
    return buf, row


def image_pixels(msg: Any, dtype: np.dtype, channels: int, big_endian: bool = False) -> np.ndarray:
    """Writable copy of the pixels: (H, W, C), or (H, W) for one channel, in ``dtype``."""
    buf, row = image_buffer(msg, dtype, channels)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    rows = np.frombuffer(buf, dtype=np.uint8, count=step * (h - 1) + row)
    rows = np.lib.stride_tricks.as_strided(rows, shape=(h, row), strides=(step, 1))
    arr = np.array(rows, copy=True).view(dtype.newbyteorder(">" if big_endian else "<"))
    arr = arr.astype(dtype, copy=False).reshape(h, w, channels)
    return arr[:, :, 0] if channels == 1 else arr
