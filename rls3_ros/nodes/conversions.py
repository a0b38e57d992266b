"""rls3_msgs messages <-> core types of ``rls3_ros.scene`` (the only place that maps them)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose
from rls3_msgs.msg import ObjectState as ObjectStateMsg
from rls3_msgs.msg import Sample as SampleMsg
from rls3_msgs.msg import SceneState as SceneStateMsg
from rls3_msgs.msg import SpatialRelation as SpatialRelationMsg
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header

from rls3_ros.nodes.image_conversion import image_msg_to_rgb, numpy_to_image_msg
from rls3_ros.scene import CameraModel, ObjectState, Sample, SceneState, SpatialRelation

WORLD_FRAME = "world"
CAMERA_FRAME = "camera_optical"


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


MAX_STAMP_NS = (2**31 - 1) * 1_000_000_000 + 999_999_999  # builtin_interfaces/Time.sec is int32


def ns_to_stamp(ns: int) -> Time:
    if not 0 <= int(ns) <= MAX_STAMP_NS:
        raise ValueError(f"stamp {ns} ns is outside builtin_interfaces/Time (0 .. {MAX_STAMP_NS} ns)")
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def header_from_ns(ns: int, frame_id: str = WORLD_FRAME) -> Header:
    return Header(stamp=ns_to_stamp(ns), frame_id=frame_id)


def _pose(position, orientation) -> Pose:
    p = Pose()
    p.position.x, p.position.y, p.position.z = (float(v) for v in position)
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in orientation)
    return p


def _pose_values(p: Pose):
    pos = (p.position.x, p.position.y, p.position.z)
    quat = (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w)
    return pos, quat


def camera_info_msg(camera: CameraModel, header: Optional[Header] = None) -> CameraInfo:
    """CameraInfo of a pinhole camera without distortion (frame: camera optical frame)."""
    info = CameraInfo()
    if header is not None:
        info.header = Header(stamp=header.stamp, frame_id=CAMERA_FRAME)
    info.width, info.height = int(camera.width), int(camera.height)
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [camera.fx, 0.0, camera.cx, 0.0, 0.0, camera.fy, camera.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def object_to_msg(o: ObjectState) -> ObjectStateMsg:
    m = ObjectStateMsg()
    m.id, m.category, m.description = o.id, o.category, o.description
    m.pose = _pose(o.position, o.orientation)
    m.size.x, m.size.y, m.size.z = (float(v) for v in o.size)
    x0, y0, x1, y1 = (int(v) for v in o.bbox)
    m.bbox = RegionOfInterest(
        x_offset=max(x0, 0), y_offset=max(y0, 0), width=max(x1 - x0, 0), height=max(y1 - y0, 0), do_rectify=False
    )
    m.visible = bool(o.visible)
    m.visible_fraction = float(o.visible_fraction)
    m.active = bool(o.active)
    m.supported_by = o.supported_by
    return m


def msg_to_object(m: ObjectStateMsg) -> ObjectState:
    pos, quat = _pose_values(m.pose)
    b = m.bbox
    return ObjectState(
        id=m.id,
        category=m.category,
        description=m.description,
        position=pos,
        orientation=quat,
        size=(m.size.x, m.size.y, m.size.z),
        bbox=(b.x_offset, b.y_offset, b.x_offset + b.width, b.y_offset + b.height),
        visible=bool(m.visible),
        visible_fraction=float(m.visible_fraction),
        active=bool(m.active),
        supported_by=m.supported_by,
    )


def scene_to_msg(scene: SceneState, header: Optional[Header] = None) -> SceneStateMsg:
    m = SceneStateMsg()
    m.header = header if header is not None else header_from_ns(scene.stamp_ns)
    m.scene_id, m.scene_type, m.seed, m.backend = scene.scene_id, scene.scene_type, int(scene.seed), scene.backend
    m.objects = [object_to_msg(o) for o in scene.objects]
    m.container_ids = list(scene.container_ids)
    m.camera_pose = _pose(scene.camera.position, scene.camera.orientation)
    m.camera_info = camera_info_msg(scene.camera, m.header)
    return m


def msg_to_scene(m: SceneStateMsg) -> SceneState:
    """Core scene of a message; ValueError if its numbers are unusable (NaN/inf, no intrinsics)."""
    pos, quat = _pose_values(m.camera_pose)
    k = list(m.camera_info.k)
    values = list(pos) + list(quat) + k[:6]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("camera pose or intrinsics contain NaN/inf")
    if m.camera_info.width == 0 or m.camera_info.height == 0 or k[0] <= 0 or k[4] <= 0:
        raise ValueError("camera_info has no image size or focal length")
    if abs(sum(q * q for q in quat)) < 1e-12:
        raise ValueError("camera orientation is a zero quaternion")
    camera = CameraModel(
        position=pos,
        orientation=quat,
        width=int(m.camera_info.width),
        height=int(m.camera_info.height),
        fx=float(k[0]),
        fy=float(k[4]),
        cx=float(k[2]),
        cy=float(k[5]),
    )
    objects = [msg_to_object(o) for o in m.objects]
    for o in objects:
        if not all(math.isfinite(v) for v in (*o.position, *o.orientation, *o.size)):
            raise ValueError(f"object {o.id!r} has a NaN/inf pose or size")
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


def relation_to_msg(r: SpatialRelation) -> SpatialRelationMsg:
    return SpatialRelationMsg(
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


def msg_to_relation(m: SpatialRelationMsg) -> SpatialRelation:
    return SpatialRelation(
        subject_id=m.subject_id,
        reference_id=m.reference_id,
        subject_description=m.subject_description,
        reference_description=m.reference_description,
        terms=list(m.terms),
        horizontal_angle=float(m.horizontal_angle),
        vertical_angle=float(m.vertical_angle),
        distance=float(m.distance),
        caption=m.caption,
        negatives=list(m.negatives),
    )


def sample_to_msg(s: Sample, header: Optional[Header] = None) -> SampleMsg:
    header = header if header is not None else header_from_ns(s.scene.stamp_ns)
    m = SampleMsg()
    m.header = header
    m.sample_id, m.episode, m.step = s.sample_id, int(s.episode), int(s.step)
    m.image = numpy_to_image_msg(np.asarray(s.image, dtype=np.uint8), "rgb8", Header(stamp=header.stamp, frame_id=CAMERA_FRAME))
    m.scene = scene_to_msg(s.scene, header)
    m.relations = [relation_to_msg(r) for r in s.relations]
    m.valid, m.invalid_reason = bool(s.valid), s.invalid_reason
    return m


def msg_to_sample(m: SampleMsg) -> Sample:
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
