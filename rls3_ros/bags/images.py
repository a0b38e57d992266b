"""Camera frames from bags: sensor_msgs/Image and CompressedImage topics of any rosbag2 writer.

    for f in iter_images("robot_bag", topic="/camera/image_raw"):
        f.rgb      # (H, W, 3) uint8
        f.stamp_ns # header stamp (bag time if the header has none)
    frame = image_at("robot_bag", "/camera/image_raw", stamp_ns)   # exact stamp or nearest

Frames are decoded by :mod:`rls3_ros.core.image_codec`, the codec the nodes use live: colour and
mono encodings (rgb8, bgr8, rgba8, bgra8, mono8, mono16; row padding and byte order honoured)
and jpeg/png CompressedImage; a depth or unknown encoding is a BagError naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, List, Optional

import numpy as np

from rls3_ros.bags.bagio import BagError, BagReader
from rls3_ros.bags.convert import header_stamp_ns
from rls3_ros.core.image_codec import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, ImageConversionError, image_msg_to_rgb

IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)


@dataclass
class BagFrame:
    topic: str
    stamp_ns: int  # header stamp (the bag time when the stamp is zero)
    bag_time_ns: int
    frame_id: str
    rgb: np.ndarray


def image_topics(path: os.PathLike | str) -> List[str]:
    """Topics of the bag that carry Image or CompressedImage."""
    with BagReader(path) as bag:
        return sorted(t for t, ty in bag.topics.items() if ty in IMAGE_TYPES)


def _iter_msgs(path, topic):
    with BagReader(path) as bag:
        conns = bag.connections_for([topic] if topic else None, IMAGE_TYPES)
        if not conns:
            raise BagError(f"bag {str(path)!r} has no image topic{' ' + topic if topic else ''} (it has {bag.topics})")
        for conn, t, raw in bag.messages(conns):
            yield conn, t, bag.deserialize(raw, conn.msgtype)


def _frame(path, conn, t, msg) -> BagFrame:
    try:
        rgb = image_msg_to_rgb(msg)
        return BagFrame(conn.topic, header_stamp_ns(msg) or t, t, str(msg.header.frame_id), rgb)
    except ImageConversionError as exc:
        raise BagError(f"bag {str(path)!r}: frame on {conn.topic} at {t}: {exc}") from None
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        # a bag whose own Image definition differs from this install's
        raise BagError(f"bag {str(path)!r}: frame on {conn.topic} at {t} does not convert to an image "
                       f"({exc.__class__.__name__}: {exc})") from None


def iter_images(path: os.PathLike | str, topic: Optional[str] = None) -> Iterator[BagFrame]:
    """Decoded frames of ``topic`` (default: every image topic) in bag-time order."""
    for conn, t, msg in _iter_msgs(path, topic):
        yield _frame(path, conn, t, msg)


def image_at(path: os.PathLike | str, topic: str, stamp_ns: Optional[int] = None) -> BagFrame:
    """The frame of ``topic`` whose header stamp equals ``stamp_ns`` (or the nearest); the last
    frame when ``stamp_ns`` is None. Only the chosen frame is decoded."""
    best = None
    best_d = None
    for conn, t, msg in _iter_msgs(path, topic):
        stamp = header_stamp_ns(msg) or t
        d = 0 if stamp_ns is None else abs(stamp - stamp_ns)
        if best is None or stamp_ns is None or d < best_d:
            best, best_d = (conn, t, msg), d
        if stamp_ns is not None and d == 0:
            break
    if best is None:
        raise BagError(f"bag {str(path)!r} has no frame on {topic}")
    return _frame(path, *best)
