"""Whether a move left a valid scene: the physics, view and occlusion checks of the MuJoCo backend
(the rules are listed in ``rls3_ros.sim.mujoco_backend``'s docstring).

A mixin of ``MuJoCoBackend``, run on its MuJoCo thread after an object was put down; it uses the
backend's physics (``_physics``, ``_model``, ``_data``, ``_objs``, ``_active``), its tolerances,
its camera model and its segmentation (``SegmentationRendering``).
"""

from __future__ import annotations

import numpy as np

from rls3_ros.sim.backend import FLOATING, OCCLUDED, OUT_OF_VIEW, OVERLAP, UNSTABLE


class MoveChecks:
    """Contacts, rest and validity of a moved object (see module docstring)."""

    def _contacts_of(self, oid: str):
        d = self._data
        geoms = set(self._objs[oid].geoms.tolist())
        out = []
        for i in range(d.ncon):
            c = d.contact[i]
            g1, g2 = int(c.geom1), int(c.geom2)
            if g1 in geoms and g2 not in geoms:
                out.append((g2, float(c.dist), c.pos.copy()))
            elif g2 in geoms and g1 not in geoms:
                out.append((g1, float(c.dist), c.pos.copy()))
        return out

    def _still_moving(self, oid: str) -> bool:
        """Linear speed above ``rest_speed`` m/s or angular speed above ``rest_spin`` rad/s."""
        v = self._data.qvel[self._objs[oid].dadr:self._objs[oid].dadr + 6]
        return bool(np.linalg.norm(v[:3]) > self.rest_speed or np.linalg.norm(v[3:]) > self.rest_spin)

    def _check_move(self, oid: str, snap, check_others: bool = True) -> str:
        """Settle the scene after moving ``oid`` and return "" if valid, else the reason."""
        import mujoco

        m, d = self._model, self._data
        mujoco.mj_forward(m, d)
        for _, dist, _ in self._contacts_of(oid):
            if dist < -self.penetration_tol:
                return OVERLAP
        before = {a: (d.xpos[self._objs[a].body].copy(), d.xmat[self._objs[a].body].reshape(3, 3)[:, 2].copy())
                  for a in self._active}
        d.qvel[:] = 0.0
        self._physics(self.settle_steps)
        if self._still_moving(oid):
            # rocking or rolling after the short settle: give it longer before judging, so an object
            # that is on its way off its support is seen leaving it (a zeroed velocity would freeze it
            # mid-roll and the scene would change under the caption later)
            self._physics(self.extra_settle_steps)
            if self._still_moving(oid):
                return UNSTABLE
        # moved object
        p0, z0 = before[oid]
        p1 = d.xpos[self._objs[oid].body]
        z1 = d.xmat[self._objs[oid].body].reshape(3, 3)[:, 2]
        tilt = float(np.arccos(np.clip(np.dot(z0, z1), -1.0, 1.0)))
        if not self._contacts_of(oid) or (p0[2] - p1[2] > self.drop_tol and tilt < self.tilt_tol):
            return FLOATING
        if tilt > self.tilt_tol or np.linalg.norm(p1[:2] - p0[:2]) > self.slide_tol:
            return UNSTABLE
        for a in self._active:
            if a == oid:
                continue
            q0, _ = before[a]
            if np.linalg.norm(d.xpos[self._objs[a].body] - q0) > self.slide_tol:
                return UNSTABLE
        d.qvel[:] = 0.0
        mujoco.mj_forward(m, d)
        checked = [(slot, a) for slot, a in enumerate(self._active) if check_others or a == oid]
        # out of the camera's view from geometry alone: no render needed to refuse it
        if any(self._in_view_fraction(a) < self.min_in_view_fraction for _, a in checked):
            return OUT_OF_VIEW
        # visibility and occlusion from segmentation
        seg = self._render_seg()
        counts = self._slot_counts(seg)
        for slot, a in checked:
            solo = self._solo_pixels(a)
            if solo == 0:
                return OUT_OF_VIEW
            if counts[slot] / solo < self.min_visible_fraction:
                return OCCLUDED
        self._pending_seg = seg
        return ""

    def _in_view_fraction(self, oid: str) -> float:
        lo, hi = self._world_aabb(oid)
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        uv = self.camera_model.project(corners)
        if not np.all(np.isfinite(uv)):
            return 0.0
        u0, v0 = uv.min(0)
        u1, v1 = uv.max(0)
        area = max((u1 - u0) * (v1 - v0), 1e-9)
        s = self.image_size
        iu = max(0.0, min(u1, s) - max(u0, 0.0))
        iv = max(0.0, min(v1, s) - max(v0, 0.0))
        return float(iu * iv / area)
