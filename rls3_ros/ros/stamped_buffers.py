"""The camera frames and scene states a query node keeps, looked up by stamp.

A query without an image uses the buffered camera frame nearest its stamp (the latest when the
stamp is zero); every query uses the scene state nearest its image's stamp (object names, 'what'
candidates, annotation boxes). Both buffers are bounded (``frame_buffer``) and checked on arrival,
so nothing that arrives on a topic can fail or stall a later query:

- a camera frame over the image limits (Image header size, compressed stream header size:
  ``image_codec.check_image_msg``) is not buffered: a ``RefusedFrame`` keeps its stamp and the
  reason, and a query for that frame is answered with it;
- a scene state with more than ``max_scene_objects`` objects is dropped on the object count read
  from the serialized message (``cdr_peek``), before rclpy deserializes it (a 10,000-object message
  held the GIL 1.1 s in deserialization); one that does not convert (no image size or focal length,
  NaN/inf numbers) is dropped too. Drops are logged with a throttled warning.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Deque, List, Optional, Tuple

from rclpy.serialization import deserialize_message
from rls3_msgs.msg import SceneState as SceneStateMsg
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from rls3_ros.core.image_codec import ImageConversionError, ImageLimits, check_image_msg
from rls3_ros.core.scene import SceneState
from rls3_ros.ros.cdr_peek import scene_state_prefix
from rls3_ros.ros.conversions import msg_to_scene, stamp_to_ns


@dataclass
class RefusedFrame:
    """A camera frame over the image limits, kept in the frame buffer instead of its pixels: its
    header (for lookups by stamp) and why it cannot be used."""

    header: Header
    reason: str


class StampedBuffers:
    """Bounded buffers of camera frames (Image, CompressedImage or ``RefusedFrame``) and valid scene
    states, thread-safe; ``logger`` is the node's."""

    def __init__(self, logger, size: int = 30) -> None:
        self.log = logger
        self._lock = threading.Lock()
        self._frames: Deque = collections.deque(maxlen=size)
        self._scenes: Deque[Tuple[int, SceneState]] = collections.deque(maxlen=size)  # (stamp ns, valid scene)
        self.n_bad_scenes = 0
        self.n_refused_frames = 0

    def resize(self, size: int) -> None:
        with self._lock:
            self._frames = collections.deque(maxlen=size)
            self._scenes = collections.deque(maxlen=size)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._scenes.clear()

    # -- arrivals --------------------------------------------------------------------------
    def add_frame(self, msg, limits: ImageLimits) -> None:
        """Buffer a camera frame; one over ``limits`` is kept as a ``RefusedFrame`` (stamp + reason, no pixels)."""
        try:
            check_image_msg(msg, limits)
        except ImageConversionError as e:
            self.n_refused_frames += 1
            kind = "compressed image" if isinstance(msg, CompressedImage) else "image"
            msg = RefusedFrame(msg.header, f"bad {kind}: {e}")
            self.log.warning(f"camera frame refused: {msg.reason} ({self.n_refused_frames} so far)",
                             throttle_duration_sec=5.0)
        with self._lock:
            self._frames.append(msg)

    def _drop_scene(self, stamp_ns: int, scene_id: str, n_objects: int, limit: int) -> None:
        self.n_bad_scenes += 1
        self.log.warning(
            f"dropped scene_state (stamp {stamp_ns / 1e9:.3f}, scene {scene_id[:80]!r}): {n_objects} objects > "
            f"max_scene_objects {limit} ({self.n_bad_scenes} dropped so far)", throttle_duration_sec=5.0)

    def add_scene_raw(self, data: bytes, limit: int) -> None:
        """A serialized scene state: one with more than ``limit`` objects is dropped on its CDR object
        count, before deserialization (rclpy would hold the GIL ~0.1 ms per object)."""
        prefix = scene_state_prefix(data)
        if prefix is not None and prefix.n_objects > limit:
            self._drop_scene(prefix.sec * 10**9 + prefix.nanosec, prefix.scene_id, prefix.n_objects, limit)
            return
        try:
            msg = deserialize_message(data, SceneStateMsg)
        except Exception as e:  # noqa: BLE001 - malformed bytes: drop them
            self.n_bad_scenes += 1
            self.log.warning(f"dropped scene_state: cannot deserialize ({type(e).__name__}) "
                             f"({self.n_bad_scenes} dropped so far)", throttle_duration_sec=5.0)
            return
        self.add_scene(msg, limit)

    def add_scene(self, msg: SceneStateMsg, limit: int) -> None:
        """Keep a scene state only if it converts (usable camera info, finite numbers) and has at
        most ``limit`` objects (counted before conversion): a bad one is dropped here, so it can
        never fail or stall a later query."""
        if len(msg.objects) > limit:
            self._drop_scene(stamp_to_ns(msg.header.stamp), msg.scene_id, len(msg.objects), limit)
            return
        try:
            scene = msg_to_scene(msg)
        except Exception as e:  # noqa: BLE001 - MessageConversionError and anything else: drop it
            self.n_bad_scenes += 1
            self.log.warning(
                f"dropped scene_state (stamp {stamp_to_ns(msg.header.stamp) / 1e9:.3f}, scene {msg.scene_id[:80]!r}): "
                f"{' '.join(str(e).split())[:300]} ({self.n_bad_scenes} dropped so far)", throttle_duration_sec=5.0)
            return
        with self._lock:
            self._scenes.append((stamp_to_ns(msg.header.stamp), scene))

    # -- lookups ---------------------------------------------------------------------------
    def frame_for(self, stamp_ns: int, tolerance: float, topic: str, qos: str) -> Tuple[Optional[object], str]:
        """(the frame nearest ``stamp_ns`` within ``tolerance`` s, the latest for stamp 0; or None
        and why not). ``topic`` and ``qos`` name the camera subscription in the reason."""
        with self._lock:
            frames: List = list(self._frames)
        if not frames:
            return None, (f"request has no image and no frame was received on {topic!r} "
                          f"(QoS {qos}); send an image or check the camera topic")
        if stamp_ns == 0:
            return frames[-1], ""
        best = min(frames, key=lambda f: abs(stamp_to_ns(f.header.stamp) - stamp_ns))
        dt = abs(stamp_to_ns(best.header.stamp) - stamp_ns) / 1e9
        if dt > tolerance:
            lo = min(stamp_to_ns(f.header.stamp) for f in frames) / 1e9
            hi = max(stamp_to_ns(f.header.stamp) for f in frames) / 1e9
            return None, (f"no frame on {topic!r} within {tolerance:.3f} s of stamp "
                          f"{stamp_ns / 1e9:.3f} (buffer holds {len(frames)} frames, {lo:.3f}..{hi:.3f})")
        return best, ""

    def scene_for(self, stamp_ns: int, tolerance: float, topic: str) -> Tuple[Optional[SceneState], str]:
        """(the scene state nearest ``stamp_ns`` within ``tolerance`` s, or None and why not)."""
        with self._lock:
            scenes = list(self._scenes)
        if not scenes:
            return None, f"no scene_state received on {topic!r}"
        best_ns, best = min(scenes, key=lambda s: abs(s[0] - stamp_ns))
        dt = abs(best_ns - stamp_ns) / 1e9
        if dt <= tolerance:
            return best, ""
        return None, (f"no scene_state on {topic!r} within {tolerance:.3f} s of the image stamp {stamp_ns / 1e9:.3f} "
                      f"(nearest {dt:.3f} s away)")
