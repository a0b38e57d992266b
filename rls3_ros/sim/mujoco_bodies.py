"""Movable objects as MuJoCo free bodies: their addresses in the model, body-frame sample points of
their geoms (for tight world boxes), and the yaw / quaternion maths of putting them down.

Pure Python (no ROS); ``mujoco`` is imported by the functions that read a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from rls3_ros.sim.objects import ObjectSpec


def yaw_quat_wxyz(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def quat_wxyz_to_mat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


@dataclass
class MovableBody:
    """A movable object as a MuJoCo free body."""

    spec: ObjectSpec
    body: int
    qadr: int  # qpos address of the free joint
    dadr: int  # qvel address
    geoms: np.ndarray  # geom ids
    points: np.ndarray  # (N, 3) body-frame sample points of its geoms (for world boxes)
    parking: Tuple[float, float]


def geom_points(model, g: int) -> np.ndarray:
    """Sample points (geom frame) on geom ``g`` for tight world-box computation."""
    import mujoco

    t = model.geom_type[g]
    s = model.geom_size[g]
    if t == mujoco.mjtGeom.mjGEOM_MESH:
        mid = model.geom_dataid[g]
        adr, num = model.mesh_vertadr[mid], model.mesh_vertnum[mid]
        v = np.asarray(model.mesh_vert[adr:adr + num], dtype=float)
        if len(v) > 400:
            v = v[:: int(np.ceil(len(v) / 400))]
        return v
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    circ = np.stack([np.cos(ang), np.sin(ang)], 1)
    if t == mujoco.mjtGeom.mjGEOM_BOX:
        return np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * s[:3]
    if t == mujoco.mjtGeom.mjGEOM_SPHERE or t == mujoco.mjtGeom.mjGEOM_ELLIPSOID:
        r = s[:3] if t == mujoco.mjtGeom.mjGEOM_ELLIPSOID else np.array([s[0]] * 3)
        pts = [np.c_[circ * np.cos(el), np.full(16, np.sin(el))] for el in np.radians([-90, -60, -30, 0, 30, 60, 90])]
        return np.concatenate(pts) * r
    if t == mujoco.mjtGeom.mjGEOM_CYLINDER:
        return np.concatenate([np.c_[circ * s[0], np.full(16, z)] for z in (-s[1], s[1])])
    if t == mujoco.mjtGeom.mjGEOM_CAPSULE:
        return np.concatenate([np.c_[circ * s[0], np.full(16, z)] for z in (-s[1], s[1])]
                              + [np.array([[0, 0, -s[1] - s[0]], [0, 0, s[1] + s[0]]])])
    c, h = model.geom_aabb[g][:3], model.geom_aabb[g][3:]
    return np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * h + c


def movable_bodies(model, room) -> Dict[str, MovableBody]:
    """The active and container objects of ``room`` as bodies of its compiled ``model``."""
    import mujoco

    out: Dict[str, MovableBody] = {}
    for s in room.active + room.container:
        b = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, s.id)
        j = model.body_jntadr[b]
        geoms = np.nonzero(model.geom_bodyid == b)[0]
        pts = []
        for g in geoms:
            gp = geom_points(model, g)
            R = quat_wxyz_to_mat(model.geom_quat[g])
            pts.append(gp @ R.T + model.geom_pos[g])
        out[s.id] = MovableBody(s, b, int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j]), geoms,
                                np.concatenate(pts), room.parking[s.id])
    return out
