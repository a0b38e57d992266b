"""rls3_msgs messages <-> core types of ``rls3_ros.core.scene``, as rclpy messages.

The mapping itself is :mod:`rls3_ros.core.scene_msgs` (shared with the rclpy-free bag side);
this module binds it to the rclpy message classes (images: :mod:`rls3_ros.core.image_codec`).
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Optional

from builtin_interfaces.msg import Time
from rls3_msgs.msg import ObjectState as ObjectStateMsg
from rls3_msgs.msg import Sample as SampleMsg
from rls3_msgs.msg import SceneState as SceneStateMsg
from rls3_msgs.msg import SpatialRelation as SpatialRelationMsg
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from rls3_ros.core import scene_msgs
from rls3_ros.core.scene import CameraModel, ObjectState, Sample, SceneState, SpatialRelation
from rls3_ros.core.scene_msgs import (  # noqa: F401  (re-exported for the nodes)
    CAMERA_FRAME,
    MAX_STAMP_NS,
    WORLD_FRAME,
    msg_to_object,
    msg_to_relation,
    msg_to_scene,
    stamp_to_ns,
)


@lru_cache(maxsize=None)
def rclpy_message_type(name: str):
    """The rclpy message class of a full type name such as ``"std_msgs/msg/Header"``."""
    package, _, cls = name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), cls)


_CODEC = scene_msgs.SceneMessageCodec(rclpy_message_type)


def ns_to_stamp(ns: int) -> Time:
    return _CODEC.stamp(ns)


def header_from_ns(ns: int, frame_id: str = WORLD_FRAME) -> Header:
    return _CODEC.header(ns, frame_id)


def camera_info_msg(camera: CameraModel, header: Optional[Header] = None) -> CameraInfo:
    """CameraInfo of a pinhole camera without distortion (frame: camera optical frame)."""
    return _CODEC.camera_info(camera, header)


def object_to_msg(o: ObjectState) -> ObjectStateMsg:
    return _CODEC.object_to_msg(o)


def scene_to_msg(scene: SceneState, header: Optional[Header] = None) -> SceneStateMsg:
    return _CODEC.scene_to_msg(scene, header)


def relation_to_msg(r: SpatialRelation) -> SpatialRelationMsg:
    return _CODEC.relation_to_msg(r)


def sample_to_msg(s: Sample, header: Optional[Header] = None) -> SampleMsg:
    return _CODEC.sample_to_msg(s, header)


def msg_to_sample(m: SampleMsg) -> Sample:
    return _CODEC.msg_to_sample(m)
