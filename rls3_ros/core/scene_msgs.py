"""Core types of ``rls3_ros.core.scene`` <-> rls3_msgs message objects of any Python message library.

One mapping for both places that convert: rclpy messages (``rls3_ros.ros.conversions``)
and rosbags typestore messages (``rls3_ros.bags.convert``, which must work without rclpy).
Fields are read by attribute; messages are built through a ``types`` lookup (full type name,
e.g. ``"std_msgs/msg/Header"`` -> a class whose constructor takes every field by keyword),
which both libraries provide. Images go through the one image codec, :mod:`rls3_ros.core.image_codec`
(the Image class from the same ``types`` lookup), so a sample's image decodes alike everywhere.

Conventions: headers stamped with ``scene.stamp_ns``, frame ``world`` for samples and scenes,
``camera_optical`` for the image and camera info, plumb_bob camera info without distortion,
2D boxes as RegionOfInterest (x_offset, y_offset, width, height). No rclpy here.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Tuple

import numpy as np

from rls3_ros.core.image_codec import IMAGE_TYPE, image_msg_to_rgb, numpy_to_image_msg
from rls3_ros.core.scene import CameraModel, ObjectState, Sample, SceneState, SpatialRelation

WORLD_FRAME = "world"
CAMERA_FRAME = "camera_optical"
MAX_STAMP_NS = (2**31 - 1) * 1_000_000_000 + 999_999_999  # builtin_interfaces/Time.sec is int32

MessageTypes = Callable[[str], Callable[..., Any]]


class MessageConversionError(ValueError):
    """A message cannot be converted to a core type (or back); the message says why."""


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _pose_values(p: Any) -> Tuple[tuple, tuple]:
    return (
        (float(p.position.x), float(p.position.y), float(p.position.z)),
        (float(p.orientation.x), float(p.orientation.y), float(p.orientation.z), float(p.orientation.w)),
    )


def _relation_fields(r: Any) -> dict:
    """The fields a SpatialRelation and its message share (same names on both sides)."""
    return dict(
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


def msg_to_object(m: Any) -> ObjectState:
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


def msg_to_scene(m: Any) -> SceneState:
    """Core scene of a message; MessageConversionError if its numbers are unusable (NaN/inf, no intrinsics)."""
    pos, quat = _pose_values(m.camera_pose)
    k = [float(v) for v in m.camera_info.k]
    if not all(math.isfinite(v) for v in (*pos, *quat, *k[:6])):
        raise MessageConversionError("camera pose or intrinsics contain NaN/inf")
    if int(m.camera_info.width) == 0 or int(m.camera_info.height) == 0 or k[0] <= 0 or k[4] <= 0:
        raise MessageConversionError("camera_info has no image size or focal length")
    if sum(q * q for q in quat) < 1e-12:
        raise MessageConversionError("camera orientation is a zero quaternion")
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
    objects = [msg_to_object(o) for o in m.objects]
    for o in objects:
        if not all(math.isfinite(v) for v in (*o.position, *o.orientation, *o.size)):
            raise MessageConversionError(f"object {o.id!r} has a NaN/inf pose or size")
    return SceneState(
        scene_id=m.scene_id,
        scene_type=m.scene_type,
        seed=int(m.seed),
        camera=camera,
        objects=objects,
        container_ids=list(m.container_ids),
        backend=m.backend,
        stamp_ns=stamp_to_ns(m.header.stamp),
    )


def msg_to_relation(m: Any) -> SpatialRelation:
    return SpatialRelation(**_relation_fields(m))


def msg_to_sample(m: Any) -> Sample:
    """Core sample of a message (of either library); its image decoded to RGB by the codec."""
    return Sample(
        sample_id=m.sample_id,
        image=image_msg_to_rgb(m.image),
        scene=msg_to_scene(m.scene),
        relations=[msg_to_relation(r) for r in m.relations],
        valid=bool(m.valid),
        invalid_reason=m.invalid_reason,
        episode=int(m.episode),
        step=int(m.step),
    )


class SceneMessageCodec:
    """Builds rls3_msgs messages of one message library and reads them back to core types.

    ``types``: full type name -> message class (its sensor_msgs/Image class carries images).
    """

    def __init__(self, types: MessageTypes):
        self.types = types

    # ------------------------------------------------------------ time / header
    def stamp(self, ns: int):
        if not 0 <= int(ns) <= MAX_STAMP_NS:
            raise MessageConversionError(f"stamp {ns} ns is outside builtin_interfaces/Time (0 .. {MAX_STAMP_NS} ns)")
        return self.types("builtin_interfaces/msg/Time")(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))

    def header(self, ns: int, frame_id: str = WORLD_FRAME):
        return self.types("std_msgs/msg/Header")(stamp=self.stamp(ns), frame_id=frame_id)

    def _pose(self, position, orientation):
        T = self.types
        return T("geometry_msgs/msg/Pose")(
            position=T("geometry_msgs/msg/Point")(x=float(position[0]), y=float(position[1]), z=float(position[2])),
            orientation=T("geometry_msgs/msg/Quaternion")(
                x=float(orientation[0]), y=float(orientation[1]), z=float(orientation[2]), w=float(orientation[3])
            ),
        )

    def _roi(self, x_offset: int, y_offset: int, width: int, height: int):
        return self.types("sensor_msgs/msg/RegionOfInterest")(
            x_offset=x_offset, y_offset=y_offset, height=height, width=width, do_rectify=False
        )

    # ------------------------------------------------------------ scene
    def camera_info(self, camera: CameraModel, header: Optional[Any] = None):
        """CameraInfo of a pinhole camera without distortion, stamped like ``header`` in the
        camera optical frame (an empty header when ``header`` is None)."""
        if header is None:
            info_header = self.types("std_msgs/msg/Header")(stamp=self.stamp(0), frame_id="")
        else:
            info_header = self.types("std_msgs/msg/Header")(stamp=header.stamp, frame_id=CAMERA_FRAME)
        return self.types("sensor_msgs/msg/CameraInfo")(
            header=info_header,
            height=int(camera.height),
            width=int(camera.width),
            distortion_model="plumb_bob",
            d=np.zeros(5, np.float64),
            k=np.array([camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0], np.float64),
            r=np.eye(3, dtype=np.float64).reshape(-1),
            p=np.array([camera.fx, 0.0, camera.cx, 0.0, 0.0, camera.fy, camera.cy, 0.0, 0.0, 0.0, 1.0, 0.0], np.float64),
            binning_x=0,
            binning_y=0,
            roi=self._roi(0, 0, 0, 0),
        )

    def object_to_msg(self, o: ObjectState):
        x0, y0, x1, y1 = (int(v) for v in o.bbox)
        return self.types("rls3_msgs/msg/ObjectState")(
            id=o.id,
            category=o.category,
            description=o.description,
            pose=self._pose(o.position, o.orientation),
            size=self.types("geometry_msgs/msg/Vector3")(x=float(o.size[0]), y=float(o.size[1]), z=float(o.size[2])),
            bbox=self._roi(max(x0, 0), max(y0, 0), max(x1 - x0, 0), max(y1 - y0, 0)),
            visible=bool(o.visible),
            visible_fraction=float(o.visible_fraction),
            active=bool(o.active),
            supported_by=o.supported_by,
        )

    def scene_to_msg(self, scene: SceneState, header: Optional[Any] = None):
        header = header if header is not None else self.header(scene.stamp_ns)
        return self.types("rls3_msgs/msg/SceneState")(
            header=header,
            scene_id=scene.scene_id,
            scene_type=scene.scene_type,
            seed=int(scene.seed),
            backend=scene.backend,
            objects=[self.object_to_msg(o) for o in scene.objects],
            container_ids=list(scene.container_ids),
            camera_pose=self._pose(scene.camera.position, scene.camera.orientation),
            camera_info=self.camera_info(scene.camera, header),
        )

    # ------------------------------------------------------------ relations / samples
    def relation_to_msg(self, r: SpatialRelation):
        return self.types("rls3_msgs/msg/SpatialRelation")(**_relation_fields(r))

    def sample_to_msg(self, s: Sample, header: Optional[Any] = None):
        header = header if header is not None else self.header(s.scene.stamp_ns)
        img = np.asarray(s.image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise MessageConversionError(f"sample {s.sample_id!r}: image must be (H, W, 3), got {img.shape}")
        image_header = self.types("std_msgs/msg/Header")(stamp=header.stamp, frame_id=CAMERA_FRAME)
        return self.types("rls3_msgs/msg/Sample")(
            header=header,
            sample_id=s.sample_id,
            episode=int(s.episode),
            step=int(s.step),
            image=numpy_to_image_msg(img.astype(np.uint8, copy=False), "rgb8", image_header, self.types(IMAGE_TYPE)),
            scene=self.scene_to_msg(s.scene, header),
            relations=[self.relation_to_msg(r) for r in s.relations],
            valid=bool(s.valid),
            invalid_reason=s.invalid_reason,
        )

    def msg_to_sample(self, m: Any) -> Sample:
        return msg_to_sample(m)
