"""Scene data types shared by every layer (pure Python, no ROS).

Frames and units:
- world frame: right-handed, z up, metres. Every ``ObjectState.position`` is the centre
  of the object's world-axis-aligned 3D box in this frame.
- camera optical frame (ROS convention): x right, y down, z forward. ``CameraModel``
  stores the pose of that frame in the world (``orientation`` rotates optical-frame
  vectors into the world frame) and pinhole intrinsics in pixels.
- quaternions are (x, y, z, w), as in geometry_msgs/Quaternion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

Vec3 = Tuple[float, float, float]
Quat = Tuple[float, float, float, float]
# 2D box in pixels: (x_min, y_min, x_max, y_max), max exclusive; (0, 0, 0, 0) = none.
Box2D = Tuple[int, int, int, int]


def quat_to_matrix(q: Quat) -> np.ndarray:
    """Rotation matrix of a unit quaternion given as (x, y, z, w)."""
    x, y, z, w = (float(v) for v in q)
    n = x * x + y * y + z * z + w * w
    if n < 1e-12:
        raise ValueError("zero quaternion")
    s = 2.0 / n
    return np.array(
        [
            [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
            [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
            [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
        ]
    )


def matrix_to_quat(m: np.ndarray) -> Quat:
    """Unit quaternion (x, y, z, w) of a rotation matrix."""
    m = np.asarray(m, dtype=float)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    return tuple(float(v) for v in q)  # type: ignore[return-value]


@dataclass
class CameraModel:
    """Pinhole camera: optical-frame pose in the world and intrinsics in pixels."""

    position: Vec3
    orientation: Quat  # optical frame -> world, (x, y, z, w)
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def rotation(self) -> np.ndarray:
        """3x3 matrix rotating optical-frame vectors into the world frame."""
        return quat_to_matrix(self.orientation)

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> optical-frame points (N, 3)."""
        p = np.atleast_2d(np.asarray(points, dtype=float)) - np.asarray(self.position, dtype=float)
        return p @ self.rotation()

    def camera_to_world(self, points: np.ndarray) -> np.ndarray:
        """Optical-frame points (N, 3) -> world points (N, 3) (the inverse of :meth:`world_to_camera`)."""
        return np.atleast_2d(np.asarray(points, dtype=float)) @ self.rotation().T + np.asarray(self.position, dtype=float)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> pixel coordinates (N, 2) (u right, v down); NaN behind the camera."""
        c = self.world_to_camera(points)
        uv = np.full((c.shape[0], 2), np.nan)
        front = c[:, 2] > 1e-6
        uv[front, 0] = self.fx * c[front, 0] / c[front, 2] + self.cx
        uv[front, 1] = self.fy * c[front, 1] / c[front, 2] + self.cy
        return uv

    @staticmethod
    def look_at(position: Vec3, target: Vec3, width: int, height: int, fovy_deg: float) -> "CameraModel":
        """Camera at ``position`` looking at ``target`` with the world z axis up in the image."""
        eye = np.asarray(position, dtype=float)
        forward = np.asarray(target, dtype=float) - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
        if np.linalg.norm(right) < 1e-9:
            raise ValueError("camera looks straight up or down")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        rot = np.stack([right, down, forward], axis=1)  # columns: optical x, y, z in world
        f = 0.5 * height / np.tan(np.radians(fovy_deg) / 2.0)
        return CameraModel(
            position=tuple(float(v) for v in eye),  # type: ignore[arg-type]
            orientation=matrix_to_quat(rot),
            width=int(width),
            height=int(height),
            fx=float(f),
            fy=float(f),
            cx=width / 2.0,
            cy=height / 2.0,
        )


@dataclass
class ObjectState:
    """One object of a scene (see module docstring for frames)."""

    id: str
    category: str
    description: str
    position: Vec3
    orientation: Quat = (0.0, 0.0, 0.0, 1.0)
    size: Vec3 = (0.0, 0.0, 0.0)  # full extents of the world-axis-aligned box [m]
    bbox: Box2D = (0, 0, 0, 0)
    visible: bool = True
    visible_fraction: float = 1.0
    active: bool = False
    supported_by: str = ""


@dataclass
class SceneState:
    """A scene at one instant: its objects and the camera that sees them."""

    scene_id: str
    scene_type: str
    seed: int
    camera: CameraModel
    objects: List[ObjectState] = field(default_factory=list)
    container_ids: List[str] = field(default_factory=list)
    backend: str = "mujoco"
    stamp_ns: int = 0

    def object(self, object_id: str) -> ObjectState:
        for o in self.objects:
            if o.id == object_id:
                return o
        raise KeyError(f"no object {object_id!r} in scene {self.scene_id}")

    def active_objects(self) -> List[ObjectState]:
        return [o for o in self.objects if o.active]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: Dict[str, Any]) -> "SceneState":
        d = dict(d)
        cam = CameraModel(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.pop("camera").items()})
        objs = [
            ObjectState(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in o.items()})
            for o in d.pop("objects")
        ]
        return SceneState(camera=cam, objects=objs, **d)


@dataclass
class SpatialRelation:
    """Ground truth: subject A relative to reference B (terms describe A, see caption oracle)."""

    subject_id: str
    reference_id: str
    subject_description: str
    reference_description: str
    terms: List[str]
    horizontal_angle: float = 0.0  # rad, bearing of B from A; 0 = toward the camera, +pi/2 = image right
    vertical_angle: float = 0.0  # rad, elevation of B from A; + = B above A
    distance: float = 0.0  # m
    caption: str = ""
    negatives: List[str] = field(default_factory=list)


@dataclass
class Sample:
    """One generated sample: RGB image, the scene it shows, its relations and validity."""

    sample_id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    scene: SceneState
    relations: List[SpatialRelation] = field(default_factory=list)
    valid: bool = True
    invalid_reason: str = ""
    episode: int = 0
    step: int = 0
    segmentation: Optional[np.ndarray] = None  # (H, W) int32 object index, -1 = background
