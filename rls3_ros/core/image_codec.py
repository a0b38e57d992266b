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

Limits before work: a compressed frame's size is read from its own header (PNG ``IHDR``, JPEG
``SOF`` marker; ``compressed_size``) and refused *before* decoding when it exceeds
``MAX_PIXELS`` (a 0.75 MB PNG can declare 16000 x 16000 px and would allocate 0.7 GB in the
decoder); streams that are neither PNG nor JPEG, and JPEGs with more than ``MAX_JPEG_SCANS``
scans (each progressive scan re-reads the whole image), are refused undecoded too. A service that
answers queries checks its own, tighter ``ImageLimits`` (``check_image_msg``: header width and
height of an Image, header size of a CompressedImage) before it converts anything.
"""

from __future__ import annotations

import dataclasses
from array import array
from dataclasses import dataclass
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
MAX_PIXELS = 4096 * 4096  # absolute cap of every conversion here (live, bags), checked before the work
# defaults of the query limits (spatial_query's max_image_side / max_image_pixels parameters)
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = 2048 * 1024  # a 1920x1080 frame fits; with its 32FC1 depth a request stays < 15 MB
MAX_JPEG_SCANS = 100  # progressive JPEGs have ~10; each scan makes the decoder pass over the image
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (every SOFn except DHT C4, JPG C8, DAC CC): they carry the image size
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"


class ImageConversionError(ValueError):
    """The image message (or array) cannot be converted; the message says why."""


def _shown(text: Any, n: int = 64) -> str:
    """repr of a message string for an error, cut at ``n`` characters (a reason never echoes 10 MB)."""
    text = str(text)
    return repr(text) if len(text) <= n else repr(text[:n]) + "..."


@dataclass(frozen=True)
class ImageLimits:
    """Largest image a service works on: each side <= ``max_side`` px and width x height <=
    ``max_pixels``. ``check`` raises ImageConversionError naming the limit."""

    max_side: int = MAX_IMAGE_SIDE
    max_pixels: int = MAX_IMAGE_PIXELS

    def check(self, width: int, height: int, what: str = "image") -> None:
        w, h = int(width), int(height)
        if w > self.max_side or h > self.max_side:
            raise ImageConversionError(f"{what} too large: {w}x{h} px, a side above max_image_side {self.max_side}")
        if w * h > self.max_pixels:
            raise ImageConversionError(f"{what} too large: {w}x{h} = {w * h} px above max_image_pixels {self.max_pixels}")


def compressed_size(data: Any) -> Tuple[str, int, int]:
    """(kind "png" | "jpeg", width, height) of a compressed image, read from its header (PNG IHDR,
    JPEG SOF marker) without decoding; ImageConversionError for anything else. ``data``: bytes,
    array.array or a uint8 array."""
    buf = _data_bytes(data)
    head = buf[:32].tobytes()
    if head.startswith(PNG_SIGNATURE):
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise ImageConversionError("PNG without an IHDR header")
        w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if w == 0 or h == 0:
            raise ImageConversionError(f"PNG header gives an empty image ({w}x{h})")
        return "png", w, h
    if head.startswith(b"\xff\xd8"):
        return ("jpeg",) + _jpeg_size(buf)
    raise ImageConversionError("not a PNG or JPEG stream")


def _jpeg_size(buf: np.ndarray, max_steps: int = 4096) -> Tuple[int, int]:
    """(width, height) from the first SOF marker, walking the marker segments after SOI (at most
    ``max_steps`` markers and fill bytes: real files have a few dozen before the frame header)."""
    data = buf.tobytes()
    n, i, steps = len(data), 2, 0
    while i < n:
        steps += 1
        if steps > max_steps:
            raise ImageConversionError(f"corrupt JPEG: no frame header (SOF) within {max_steps} markers")
        if data[i] != 0xFF:
            raise ImageConversionError(f"corrupt JPEG: no marker at byte {i}")
        i += 1
        if i < n and data[i] == 0xFF:  # fill bytes
            continue
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            raise ImageConversionError("JPEG without a frame header (SOF) before its image data")
        if i + 2 > n:
            break
        length = (data[i] << 8) | data[i + 1]
        if length < 2:
            raise ImageConversionError(f"corrupt JPEG: segment length {length}")
        if marker in _JPEG_SOF:
            if i + 7 > n:
                break
            h = (data[i + 3] << 8) | data[i + 4]
            w = (data[i + 5] << 8) | data[i + 6]
            if w == 0 or h == 0:
                raise ImageConversionError(f"JPEG frame header gives an empty image ({w}x{h}; a DNL height is not supported)")
            return w, h
        i += length
    raise ImageConversionError("truncated JPEG: no frame header (SOF)")


def check_image_msg(msg: Any, limits: ImageLimits) -> Tuple[int, int]:
    """(width, height) of an Image (its header fields) or a CompressedImage (its stream's header),
    after checking them against ``limits``; nothing is converted or decoded. ImageConversionError
    with the reason otherwise (a compressed stream larger than an uncompressed image of the limit
    is refused too)."""
    if is_compressed(msg):
        buf = _data_bytes(msg.data)
        if buf.size == 0:
            raise ImageConversionError(f"empty compressed image (format {_shown(msg.format)})")
        if buf.size > 3 * limits.max_pixels + 65536:
            raise ImageConversionError(f"compressed image of {buf.size} bytes is larger than an uncompressed "
                                       f"image of max_image_pixels {limits.max_pixels}; not decoded")
        try:
            kind, w, h = compressed_size(buf)
        except ImageConversionError as e:
            raise ImageConversionError(f"cannot decode compressed image (format {_shown(msg.format)}): {e}") from None
        try:
            limits.check(w, h, f"compressed image ({kind} header)")
        except ImageConversionError as e:
            raise ImageConversionError(f"{e}; refused before decoding") from None
        return w, h
    w, h = int(msg.width), int(msg.height)
    limits.check(w, h)
    return w, h


def layout(encoding: str) -> Tuple[np.dtype, int]:
    """(dtype, channels) of a supported encoding; ImageConversionError naming it otherwise."""
    if encoding not in ENCODINGS:
        raise ImageConversionError(f"unsupported encoding {_shown(encoding)} (supported: {', '.join(ENCODINGS)})")
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
    """(H, W, 3) uint8 RGB of a sensor_msgs/CompressedImage (jpeg/png, grey or colour). The size in
    the stream's header is checked against ``MAX_PIXELS`` before decoding."""
    import cv2

    fmt = _shown(msg.format)
    buf = _data_bytes(msg.data)
    if buf.size == 0:
        raise ImageConversionError(f"empty compressed image (format {fmt})")
    try:
        kind, w, h = compressed_size(buf)
    except ImageConversionError as e:
        raise ImageConversionError(f"cannot decode compressed image (format {fmt}): {e}") from None
    if w * h > MAX_PIXELS:
        raise ImageConversionError(f"image too large ({w}x{h} > {MAX_PIXELS} pixels in its {kind} header); "
                                   "refused before decoding")
    if kind == "jpeg":
        scans = buf.tobytes().count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise ImageConversionError(f"JPEG with {scans} scans (more than {MAX_JPEG_SCANS}); refused before decoding")
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise ImageConversionError(f"cannot decode compressed image (format {fmt}): {' '.join(str(e).split())[:200]}") from None
    if img is None:
        raise ImageConversionError(f"cannot decode compressed image (format {fmt})")
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] * img.shape[1] == 0:
        raise ImageConversionError(f"decoded image has shape {img.shape} (format {fmt})")
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
