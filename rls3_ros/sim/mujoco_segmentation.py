"""What the MuJoCo backend's camera sees of its active objects: instance segmentation, each
object's pixels rendered alone (for its visible fraction), and the full render (RGB, depth, boxes).

A mixin of ``MuJoCoBackend`` (``rls3_ros.sim.mujoco_backend``), run on its MuJoCo thread; it uses
the backend's ``_renderer``, ``_model``, ``_data``, ``_cam_id``, ``_objs``, ``_active``,
``_default_group``, ``_solo_cache``, ``_work``, ``image_size`` and ``render_depth``.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from rls3_ros.sim.backend import Render

_SOLO_GROUP = 5  # the geom group an object is moved to while it is rendered alone


class SegmentationRendering:
    """Segmentation, solo-pixel counts and full renders of the active objects (see module docstring)."""

    def _gl_pass(self, renderer) -> np.ndarray:
        t0 = time.perf_counter()
        out = renderer.render()
        self._work["render"] += time.perf_counter() - t0
        return out

    def _render_seg(self) -> np.ndarray:
        """Instance segmentation: (H, W) int32 slot of the active object, -1 elsewhere."""
        import mujoco

        r = self._renderer
        r.update_scene(self._data, self._cam_id)
        r.enable_segmentation_rendering()
        raw = self._gl_pass(r)
        r.disable_segmentation_rendering()
        lut = np.full(self._model.ngeom + 1, -1, dtype=np.int32)
        for slot, a in enumerate(self._active):
            lut[self._objs[a].geoms] = slot
        ids = raw[..., 0]
        is_geom = raw[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM)
        return np.where(is_geom, lut[np.where(is_geom, ids, self._model.ngeom)], -1).astype(np.int32)

    def _slot_counts(self, seg: np.ndarray) -> np.ndarray:
        return np.bincount(seg.ravel() + 1, minlength=len(self._active) + 1)[1:]

    def _solo_pixels(self, oid: str) -> int:
        """Pixels of ``oid`` rendered alone (no occluders), cached per pose."""
        import mujoco

        d = self._data
        o = self._objs[oid]
        key = np.round(np.r_[d.xpos[o.body], d.xquat[o.body]], 4).tobytes()
        hit = self._solo_cache.get(oid)
        if hit is not None and hit[0] == key:
            return hit[1]
        m = self._model
        opt = mujoco.MjvOption()
        opt.geomgroup[:] = 0
        opt.geomgroup[_SOLO_GROUP] = 1
        m.geom_group[o.geoms] = _SOLO_GROUP
        try:
            r = self._renderer
            r.update_scene(d, self._cam_id, scene_option=opt)
            r.enable_segmentation_rendering()
            raw = self._gl_pass(r)
            r.disable_segmentation_rendering()
        finally:
            m.geom_group[:] = self._default_group
        n = int(np.count_nonzero(raw[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM)))
        self._solo_cache[oid] = (key, n)
        return n

    def _render_full(self, seg: Optional[np.ndarray] = None) -> Render:
        r = self._renderer
        if seg is None:
            seg = self._render_seg()
        r.update_scene(self._data, self._cam_id)
        rgb = self._gl_pass(r).copy()
        if self.render_depth:
            r.enable_depth_rendering()
            depth = self._gl_pass(r).astype(np.float32)
            r.disable_depth_rendering()
        else:
            depth = np.zeros(seg.shape, np.float32)
        boxes = {}
        vis = {}
        counts = self._slot_counts(seg)
        for slot, a in enumerate(self._active):
            if counts[slot] == 0:
                boxes[a] = (0, 0, 0, 0)
            else:
                ys, xs = np.nonzero(seg == slot)
                boxes[a] = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            solo = self._solo_pixels(a)
            vis[a] = (int(counts[slot]), float(min(1.0, counts[slot] / solo)) if solo else 0.0)
        self._vis = vis
        out = Render(rgb=rgb, segmentation=seg, depth=depth, boxes=boxes)
        self._last_render = out
        return out
