"""rosbags message objects <-> core types of ``rls3_ros.core.scene`` (no rclpy).

The scene/sample mapping is :mod:`rls3_ros.core.scene_msgs`, the same one the rclpy node layer
(``rls3_ros.ros.conversions``) uses, bound here to a rosbags typestore: a sample exported
here and read by an rclpy node gives the same core objects as one published by the node
layer. Images (Image and CompressedImage) go through :mod:`rls3_ros.core.image_codec`, the codec
the nodes use, so a frame decodes to the same array live and on replay.
"""

from __future__ import annotations

from typing import Any, Optional

from rosbags.typesys.store import Typestore

from rls3_ros.core.image_codec import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE  # noqa: F401  (re-exported)
from rls3_ros.core.scene import CameraModel, ObjectState, Sample, SceneState, SpatialRelation
from rls3_ros.core.scene_msgs import (  # noqa: F401  (re-exported for the bag modules)
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


BagConversionError = MessageConversionError  # a message from a bag cannot be converted; says why


# ---------------------------------------------------------------- time / header
def make_stamp(store: Typestore, ns: int):
    return bag_codec(store).stamp(ns)


def make_header(store: Typestore, ns: int, frame_id: str = WORLD_FRAME):
    return bag_codec(store).header(ns, frame_id)


# ---------------------------------------------------------------- scene / samples
def bag_codec(store: Typestore) -> SceneMessageCodec:
    """The core-type mapping of :mod:`rls3_ros.core.scene_msgs` bound to the typestore's classes."""
    return SceneMessageCodec(lambda name: store.types[name])


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


bagmsg_to_sample = msg_to_sample
bagmsg_to_object = msg_to_object
bagmsg_to_scene = msg_to_scene
bagmsg_to_relation = msg_to_relation


def header_stamp_ns(msg: Any) -> Optional[int]:
    """Stamp of a message's ``header`` in ns, or None when it has none."""
    h = getattr(msg, "header", None)
    return stamp_to_ns(h.stamp) if h is not None and hasattr(h, "stamp") else None
