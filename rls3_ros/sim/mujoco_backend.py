"""MuJoCo simulator backend (built in, the default) (pure Python, no ROS).

Scenes are procedural indoor rooms (``rls3_ros.sim.rooms``) with three active movable
objects and an object container (objects parked outside the room, swapped in as in the
paper). Moves are checked with real physics and rendering:

- ``overlap``: after the move, a contact of the moved object penetrates deeper than
  ``penetration_tol``;
- ``floating``: during a short settle (``settle_steps`` physics steps) the object drops
  more than ``drop_tol`` or ends with no contact (it was not resting on anything);
- ``unstable``: it tips (> ``tilt_tol_deg``), slides (> ``slide_tol``), or is still moving
  (rocking, rolling) after ``extra_settle_steps`` more steps, or another active object is
  disturbed;
- ``out_of_view``: less than ``min_in_view_fraction`` of its projected 3D box is inside the
  image (checked from geometry, before anything is rendered), or no pixel of it is;
- ``occluded``: its visible pixels / its pixels rendered alone < ``min_visible_fraction``.

An invalid move restores the previous state exactly (qpos/qvel snapshot). MuJoCo's
renderer is bound to the thread that created its GL context, so the backend owns one
worker thread and runs every MuJoCo call on it; public methods are thread-safe.

This module builds scenes and applies moves; beside it: ``mujoco_bodies`` (movable objects as
free bodies), ``mujoco_renderer`` (the GL renderer kept across resets), ``mujoco_segmentation``
(segmentation, visible fractions, full renders) and ``mujoco_validity`` (the checks above).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from rls3_ros.sim.gl_env import set_offscreen_gl_default  # noqa: E402

set_offscreen_gl_default()  # already done by ``import rls3_ros``; kept here for a reader of this module

import numpy as np  # noqa: E402

from rls3_ros.core.scene import CameraModel, ObjectState, SceneState  # noqa: E402
from rls3_ros.sim.backend import BAD_REQUEST, SWAP, TELEPORT, MoveAction, MoveResult, Render  # noqa: E402
from rls3_ros.sim.backend import SimulatorBackend, move_request_problem  # noqa: E402
from rls3_ros.sim.mujoco_bodies import MovableBody, movable_bodies, quat_wxyz_to_mat, yaw_quat_wxyz  # noqa: E402
from rls3_ros.sim.mujoco_renderer import make_renderer  # noqa: E402
from rls3_ros.sim.mujoco_segmentation import SegmentationRendering  # noqa: E402
from rls3_ros.sim.mujoco_validity import MoveChecks  # noqa: E402
from rls3_ros.sim.objects import CATEGORIES  # noqa: E402
from rls3_ros.sim.rooms import SCENE_TYPES, Receptacle, RoomSpec, build_room  # noqa: E402

# Bump when a change of contact physics or of the validity checks makes the same seeds and actions
# give other scenes: cached renders (fixed evaluation sets) are keyed on it. 2: rolling friction for
# round objects, a longer settle for objects still moving, swap honours the action's yaw. 3: parked
# (container) objects are out of the physics (no contacts, no gravity): the same scenes to ~1e-6 m,
# the physics step 2.5x cheaper (their 20 floor contacts were two thirds of a scene's).
PHYSICS_REVISION = 3
# ``freeze_parked=False`` keeps revision 2's physics (parked objects simulated): the learning
# benchmark's fixed sets and results were made with it.
UNFROZEN_PHYSICS_REVISION = 2


def physics_revision(freeze_parked: bool = True) -> int:
    """The revision of the physics a backend with this ``freeze_parked`` simulates."""
    return PHYSICS_REVISION if freeze_parked else UNFROZEN_PHYSICS_REVISION


class MuJoCoBackend(MoveChecks, SegmentationRendering, SimulatorBackend):
    """Procedural indoor scenes in MuJoCo with physics-checked moves (see module docstring).

    Parameters (all keyword, with defaults):
      image_size=224: square image width/height in pixels (16..2048).
      seed=0: seed of the first scene (built lazily by ``reset``) and of container choices.
      scene_types=all four (kitchen, living_room, bedroom, dining_room): types ``reset`` draws from.
      min_visible_fraction=0.3: occlusion threshold (visible / unoccluded pixels).
      min_in_view_fraction=0.9: fraction of the projected 3D box that must be inside the image.
      n_container=5: objects in the object container.
      settle_steps=150, timestep=0.002: physics settle after a move.
      extra_settle_steps=450, rest_speed=0.01 m/s, rest_spin=0.1 rad/s: an object still moving faster
        than rest_speed/rest_spin after the settle gets extra_settle_steps more; still moving then is
        ``unstable``, and the other checks judge where it came to rest.
      penetration_tol=0.005 m, drop_tol=0.025 m, slide_tol=0.04 m, tilt_tol_deg=25.
      render_depth=True: also render depth in ``render``/``apply`` (one more GL pass).
      freeze_parked=True: parked (container) objects are out of the physics (revision 3); False
        simulates them as revision 2 did (``physics_revision``).
      camera_distance=(1.6, 1.9), camera_height=(1.45, 1.75), fovy=(56, 62): camera ranges.
    """

    name = "mujoco"

    def __init__(self, image_size: int = 224, seed: int = 0, scene_types: Optional[Sequence[str]] = None,
                 min_visible_fraction: float = 0.3, min_in_view_fraction: float = 0.9, n_container: int = 5,
                 settle_steps: int = 150, timestep: float = 0.002, penetration_tol: float = 0.005,
                 drop_tol: float = 0.025, slide_tol: float = 0.04, tilt_tol_deg: float = 25.0,
                 extra_settle_steps: int = 450, rest_speed: float = 0.01, rest_spin: float = 0.1,
                 render_depth: bool = True, freeze_parked: bool = True, camera_distance: Sequence[float] = (1.6, 1.9),
                 camera_height: Sequence[float] = (1.45, 1.75), fovy: Sequence[float] = (56.0, 62.0)):
        if not isinstance(image_size, (int, np.integer)) or not 16 <= int(image_size) <= 2048:
            raise ValueError(f"image_size must be an int in [16, 2048], got {image_size!r}")
        types = tuple(scene_types) if scene_types else SCENE_TYPES
        bad = [t for t in types if t not in SCENE_TYPES]
        if bad or not types:
            raise ValueError(f"unknown scene types {bad}; known: {', '.join(SCENE_TYPES)}")
        for nm, v in (("min_visible_fraction", min_visible_fraction), ("min_in_view_fraction", min_in_view_fraction)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{nm} must be in [0, 1], got {v!r}")
        if int(n_container) < 1:
            raise ValueError(f"n_container must be >= 1, got {n_container!r}")
        if int(settle_steps) < 1 or float(timestep) <= 0:
            raise ValueError("settle_steps must be >= 1 and timestep > 0")
        if int(extra_settle_steps) < 0 or float(rest_speed) <= 0 or float(rest_spin) <= 0:
            raise ValueError("extra_settle_steps must be >= 0, rest_speed and rest_spin > 0")
        for nm, rng_ in (("camera_distance", camera_distance), ("camera_height", camera_height), ("fovy", fovy)):
            if len(rng_) != 2 or float(rng_[0]) > float(rng_[1]) or float(rng_[0]) <= 0:
                raise ValueError(f"{nm} must be a (low, high) pair with 0 < low <= high, got {rng_!r}")
        if not (10.0 <= float(fovy[0]) and float(fovy[1]) <= 120.0):
            raise ValueError(f"fovy must lie in [10, 120] degrees, got {fovy!r}")
        self.image_size = int(image_size)
        self.seed = int(seed)
        self._types = types
        self.min_visible_fraction = float(min_visible_fraction)
        self.min_in_view_fraction = float(min_in_view_fraction)
        self.n_container = int(n_container)
        self.settle_steps = int(settle_steps)
        self.extra_settle_steps = int(extra_settle_steps)
        self.rest_speed = float(rest_speed)
        self.rest_spin = float(rest_spin)
        self.timestep = float(timestep)
        self.penetration_tol = float(penetration_tol)
        self.drop_tol = float(drop_tol)
        self.slide_tol = float(slide_tol)
        self.tilt_tol = np.radians(float(tilt_tol_deg))
        self.render_depth = bool(render_depth)
        self.freeze_parked = bool(freeze_parked)
        self._cam_ranges = dict(camera_distance=tuple(map(float, camera_distance)),
                                camera_height=tuple(map(float, camera_height)), fovy=tuple(map(float, fovy)))
        self._work: Dict[str, float] = {"physics": 0.0, "render": 0.0, "build": 0.0, "gl_setup": 0.0}
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mujoco-sim")
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._renderer = None
        self._model = None
        self._data = None
        self._room: Optional[RoomSpec] = None
        self._last_render: Optional[Render] = None
        self._solo_cache: Dict[str, Tuple[bytes, int]] = {}

    # ------------------------------------------------------------------ work accounting
    def _physics(self, nstep: int) -> None:
        import mujoco

        t0 = time.perf_counter()
        mujoco.mj_step(self._model, self._data, nstep=int(nstep))
        self._work["physics"] += time.perf_counter() - t0

    def work_seconds(self) -> Dict[str, float]:
        """Seconds spent so far in physics steps ("physics": move settles, placement checks at
        resets, ``settle``), GL passes ("render": RGB, segmentation, occlusion, depth), building a
        reset's room and compiling its model ("build"), and binding the renderer to it ("gl_setup":
        scene buffers, textures and meshes uploaded)."""
        return dict(self._work)

    # ------------------------------------------------------------------ threading
    def _call(self, fn, *args, **kwargs):
        if self._closed:
            raise RuntimeError("backend is closed")
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        return self._executor.submit(self._on_worker, fn, *args, **kwargs).result()

    def _on_worker(self, fn, *args, **kwargs):
        self._thread = threading.current_thread()
        return fn(*args, **kwargs)

    # ------------------------------------------------------------------ interface
    @property
    def scene_types(self) -> Sequence[str]:
        return self._types

    @property
    def categories(self) -> Tuple[str, ...]:
        """Movable object categories this backend can put in a scene."""
        return tuple(CATEGORIES)

    def reset(self, seed: Optional[int] = None, scene_type: Optional[str] = None) -> SceneState:
        seed = self.seed if seed is None else int(seed)
        if scene_type is not None and scene_type not in self._types:
            raise ValueError(f"scene type {scene_type!r} not in {self._types}")
        return self._call(self._reset, seed, scene_type)

    def state(self) -> SceneState:
        return self._call(self._state)

    def render(self) -> Render:
        return self._call(self._render_full)

    def apply(self, action: MoveAction) -> MoveResult:
        return self._call(self._apply, action)

    def last_render(self) -> Optional[Render]:
        """The render of the current scene made by the latest ``reset``/``apply``/``render`` (None
        before the first scene): what ``render()`` would return, without rendering again."""
        return self._call(lambda: self._last_render)

    def settle(self, seconds: float = 1.0) -> SceneState:
        """Run the physics ``seconds`` of simulated time further with no move, re-render and
        return the new state (boxes, visibility and supports from after the extra time).

        Nothing is checked or undone: this lets a caller see whether the current scene is at
        rest (a valid scene should not change) or what happens to it under gravity.
        """
        if not 0.0 <= float(seconds) <= 60.0:
            raise ValueError(f"seconds must be in [0, 60], got {seconds!r}")
        return self._call(self._settle, float(seconds))

    def placement_bounds(self) -> Tuple[Tuple[float, float, float], Tuple[float, float, float]]:
        """(low xyz, high xyz) of the region where active objects may be placed in view.

        Maps a continuous action into the world: every receptacle (floor, furniture tops,
        shelf levels) lies inside it; use ``place`` with ``receptacle_id=""`` and a z to
        pick the support surface nearest that height under (x, y) (a point over no surface
        goes to the nearest surface, clipped into it).
        """
        return self._call(self._placement_bounds)

    def receptacles(self) -> List[Tuple[str, float, Tuple[float, float], Tuple[float, float]]]:
        """Support surfaces as (id, top_z, xy_low, xy_high); active objects are included for stacking."""
        return self._call(lambda: [(r.id, r.top_z, r.xy_low, r.xy_high) for r in self._all_receptacles()])

    def container_objects(self) -> List[ObjectState]:
        """The objects in the object container (not in the scene), for swaps."""
        return self._call(self._container_states)

    def close(self) -> None:
        """Free the renderer on its own thread and stop the worker thread (idempotent)."""
        if getattr(self, "_closed", True):
            return
        try:
            self._call(self._close_renderer)
        finally:
            self._closed = True
            self._executor.shutdown(wait=threading.current_thread() is not self._thread)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ build
    def _close_renderer(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def _reset(self, seed: int, scene_type: Optional[str]) -> SceneState:
        import mujoco

        if scene_type is None:
            scene_type = self._types[seed % len(self._types)]
        t_build = time.perf_counter()
        room = build_room(seed, scene_type, image_size=self.image_size, n_container=self.n_container,
                          timestep=self.timestep, **self._cam_ranges)
        self.camera_model = CameraModel.look_at(room.camera.position, room.camera.target, self.image_size,
                                                self.image_size, room.camera.fovy)
        rot = self.camera_model.rotation()
        xaxis, yaxis = rot[:, 0], -rot[:, 1]
        p = room.camera.position
        cam_xml = (f'<camera name="view" pos="{p[0]:.5f} {p[1]:.5f} {p[2]:.5f}" '
                   f'xyaxes="{" ".join(f"{v:.6f}" for v in (*xaxis, *yaxis))}" fovy="{room.camera.fovy:.4f}"/>')
        xml = room.xml.replace("</worldbody>", cam_xml + "</worldbody>")
        model = mujoco.MjModel.from_xml_string(xml)
        data = mujoco.MjData(model)
        t_gl = time.perf_counter()
        self._work["build"] += t_gl - t_build
        if self._renderer is not None and hasattr(self._renderer, "rebind"):
            self._renderer.rebind(model)  # same GL context: a new one costs ~50 ms per reset
        else:
            self._close_renderer()
            self._renderer = make_renderer(model, self.image_size)
        self._work["gl_setup"] += time.perf_counter() - t_gl
        self._model, self._data, self._room = model, data, room
        self._cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "view")
        self._rng = np.random.default_rng([seed, 7919])
        self._seed_now = seed
        # geom ownership
        self._geom_owner: List[str] = []
        for g in range(model.ngeom):
            nm = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) or ""
            if nm.startswith("fur:"):
                self._geom_owner.append(nm.split(":")[1])
            else:
                self._geom_owner.append(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, model.geom_bodyid[g]) or "")
        self._objs: Dict[str, MovableBody] = movable_bodies(model, room)
        self._geom_obj = np.full(model.ngeom, "", dtype=object)
        for o in self._objs.values():
            self._geom_obj[o.geoms] = o.spec.id
        self._default_group = model.geom_group.copy()
        self._contype, self._conaffinity = model.geom_contype.copy(), model.geom_conaffinity.copy()
        self._active: List[str] = []
        self._container: List[str] = [s.id for s in room.container]
        for s in room.active + room.container:
            self._park(s.id)
        self._sync_parked()
        mujoco.mj_forward(model, data)
        self._solo_cache = {}
        self._scene_id = f"{scene_type}_{seed}"
        self._scene_type = scene_type
        self._floor_in_view()
        # initial placement of the active objects, each checked like a move
        self._pending_seg = None
        for s in room.active:
            self._active.append(s.id)
            self._sync_parked()
            if not self._initial_place(s.id):
                raise RuntimeError(f"could not place {s.id} validly in {self._scene_id}")
        # the last placement's check rendered this very state's segmentation
        self._last_render = self._render_full(self._pending_seg)
        return self._state()

    def _floor_in_view(self) -> None:
        """Shrink the floor receptacle to the part of it the camera sees."""
        room = self._room
        fl = next(r for r in room.receptacles if r.id == "floor")
        xs = np.linspace(-room.half_width + 0.15, room.half_width - 0.15, 40)
        ys = np.linspace(-2.0, room.back_y - 0.1, 40)
        gx, gy = np.meshgrid(xs, ys)
        pts = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
        uv = self.camera_model.project(pts)
        m = 0.06 * self.image_size
        ok = np.isfinite(uv[:, 0]) & (uv[:, 0] > m) & (uv[:, 0] < self.image_size - m) & (uv[:, 1] > m) & (
            uv[:, 1] < self.image_size - m)
        if ok.any():
            p = pts[ok]
            fl.xy_low = (float(max(p[:, 0].min(), -1.3)), float(p[:, 1].min()))
            fl.xy_high = (float(min(p[:, 0].max(), 1.3)), float(p[:, 1].max()))

    def _initial_place(self, oid: str) -> bool:
        recs = [r for r in self._room.receptacles]
        weights = np.array([0.4 if r.id == "floor" else 1.0 for r in recs])
        weights /= weights.sum()
        for attempt in range(60):
            r = recs[int(self._rng.choice(len(recs), p=weights))]
            x = float(self._rng.uniform(r.xy_low[0], r.xy_high[0]))
            y = float(self._rng.uniform(r.xy_low[1], r.xy_high[1]))
            yaw = float(self._rng.uniform(-np.pi, np.pi))
            snap = self._snapshot()
            self._put_on(oid, x, y, r.top_z, yaw)
            reason = self._check_move(oid, snap, check_others=True)
            if not reason:
                return True
            self._restore(snap)
        return False

    # ------------------------------------------------------------------ geometry helpers
    def _set_pose(self, oid: str, pos, quat_wxyz) -> None:
        o = self._objs[oid]
        self._data.qpos[o.qadr:o.qadr + 3] = pos
        self._data.qpos[o.qadr + 3:o.qadr + 7] = quat_wxyz
        self._data.qvel[o.dadr:o.dadr + 6] = 0.0

    def _sync_parked(self) -> None:
        """Objects off the scene (parked in the container, or not yet placed) leave the physics: no
        contacts and gravity compensated, so they stay still at their parking spot without costing
        the solver anything; objects in the scene collide and fall as the model says."""
        m = self._model
        for oid, o in self._objs.items():
            parked = self.freeze_parked and oid not in self._active
            m.geom_contype[o.geoms] = 0 if parked else self._contype[o.geoms]
            m.geom_conaffinity[o.geoms] = 0 if parked else self._conaffinity[o.geoms]
            m.body_gravcomp[o.body] = 1.0 if parked else 0.0

    def _park(self, oid: str) -> None:
        o = self._objs[oid]
        lo = o.points.min(0)
        self._set_pose(oid, (o.parking[0], o.parking[1], -lo[2] + 0.001), (1, 0, 0, 0))

    def _world_points(self, oid: str) -> np.ndarray:
        o = self._objs[oid]
        R = self._data.xmat[o.body].reshape(3, 3)
        return o.points @ R.T + self._data.xpos[o.body]

    def _world_aabb(self, oid: str) -> Tuple[np.ndarray, np.ndarray]:
        p = self._world_points(oid)
        return p.min(0), p.max(0)

    def _put_on(self, oid: str, x: float, y: float, top_z: float, yaw: float) -> None:
        """Rest ``oid`` upright with yaw, its footprint centred at (x, y), bottom at ``top_z``."""
        o = self._objs[oid]
        q = yaw_quat_wxyz(yaw)
        pts = o.points @ quat_wxyz_to_mat(q).T
        lo, hi = pts.min(0), pts.max(0)
        c = (lo + hi) / 2
        self._set_pose(oid, (x - c[0], y - c[1], top_z - lo[2] + 0.002), q)

    def _teleport(self, oid: str, centre, yaw: float) -> None:
        o = self._objs[oid]
        q = yaw_quat_wxyz(yaw)
        pts = o.points @ quat_wxyz_to_mat(q).T
        c = (pts.min(0) + pts.max(0)) / 2
        self._set_pose(oid, np.asarray(centre, float) - c, q)

    def _snapshot(self):
        d = self._data
        return (d.qpos.copy(), d.qvel.copy(), list(self._active), list(self._container), d.time, self._last_render)

    def _restore(self, snap) -> None:
        import mujoco

        d = self._data
        d.qpos[:] = snap[0]
        d.qvel[:] = snap[1]
        self._active, self._container = list(snap[2]), list(snap[3])
        self._sync_parked()
        d.time = snap[4]
        self._last_render = snap[5]
        mujoco.mj_forward(self._model, d)

    # ------------------------------------------------------------------ state
    def _object_state(self, oid: str, active: bool) -> ObjectState:
        d = self._data
        o = self._objs[oid]
        lo, hi = self._world_aabb(oid)
        q = d.xquat[o.body]
        box, visible, frac = (0, 0, 0, 0), False, 0.0
        if active and self._last_render is not None and oid in self._last_render.boxes:
            box = self._last_render.boxes[oid]
            n, frac = self._vis.get(oid, (0, 0.0))
            visible = n > 0
        return ObjectState(
            id=oid, category=o.spec.category, description=o.spec.description,
            position=tuple(float(v) for v in (lo + hi) / 2),
            orientation=(float(q[1]), float(q[2]), float(q[3]), float(q[0])),
            size=tuple(float(v) for v in hi - lo), bbox=box, visible=visible, visible_fraction=frac,
            active=active, supported_by=self._support_of(oid) if active else "",
        )

    def _support_of(self, oid: str) -> str:
        lo, _ = self._world_aabb(oid)
        best, best_z = "", np.inf
        for g, _dist, pos in self._contacts_of(oid):
            if pos[2] < lo[2] + 0.03 and pos[2] < best_z + 1e-4:
                owner = self._geom_obj[g] or self._geom_owner[g]
                best, best_z = owner, pos[2]
        return best

    def _state(self) -> SceneState:
        if self._room is None:
            raise RuntimeError("call reset() first")
        objs = [self._object_state(a, True) for a in self._active]
        return SceneState(scene_id=self._scene_id, scene_type=self._scene_type, seed=self._seed_now,
                          camera=self.camera_model, objects=objs, container_ids=list(self._container),
                          backend=self.name, stamp_ns=time.time_ns())

    def _container_states(self) -> List[ObjectState]:
        return [self._object_state(c, False) for c in self._container]

    def _all_receptacles(self) -> List[Receptacle]:
        if self._room is None:
            raise RuntimeError("call reset() first")
        out = list(self._room.receptacles)
        for a in self._active:
            lo, hi = self._world_aabb(a)
            cx, cy = (lo[:2] + hi[:2]) / 2
            hx, hy = (hi[:2] - lo[:2]) * 0.25
            out.append(Receptacle(a, float(hi[2]), (float(cx - hx), float(cy - hy)), (float(cx + hx), float(cy + hy))))
        return out

    def _placement_bounds(self):
        recs = self._room.receptacles
        lo = np.min([r.xy_low for r in recs], 0)
        hi = np.max([r.xy_high for r in recs], 0)
        top = max(r.top_z for r in recs) + 0.35
        return (float(lo[0]), float(lo[1]), 0.0), (float(hi[0]), float(hi[1]), float(top))

    # ------------------------------------------------------------------ actions
    def _apply(self, action: MoveAction) -> MoveResult:
        if self._room is None:
            raise RuntimeError("call reset() first")
        prev = self._last_render if self._last_render is not None else self._render_full()
        bad = self._validate(action)
        if bad:
            return MoveResult(False, BAD_REQUEST, self._state(), prev, message=bad)
        snap = self._snapshot()
        oid = action.object_id
        if action.action_type == SWAP:
            cid = action.container_object_id or self._container[int(self._rng.integers(len(self._container)))]
            lo, hi = self._world_aabb(oid)
            slot = self._active.index(oid)
            self._active[slot] = cid
            self._container[self._container.index(cid)] = oid
            self._objs[oid].parking, self._objs[cid].parking = self._objs[cid].parking, self._objs[oid].parking
            self._park(oid)
            self._sync_parked()
            self._put_on(cid, float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2), float(lo[2]) - 0.002, float(action.yaw))
            moved = cid
        elif action.action_type == TELEPORT:
            self._teleport(oid, action.position, float(action.yaw))
            moved = oid
        else:
            rec = self._choose_receptacle(action)
            if rec is None:
                return MoveResult(False, BAD_REQUEST, self._state(), prev,
                                  message=f"no receptacle under x={action.position[0]:.3f} y={action.position[1]:.3f}")
            x = float(np.clip(action.position[0], rec.xy_low[0], rec.xy_high[0])) if action.position is not None else float(
                self._rng.uniform(rec.xy_low[0], rec.xy_high[0]))
            y = float(np.clip(action.position[1], rec.xy_low[1], rec.xy_high[1])) if action.position is not None else float(
                self._rng.uniform(rec.xy_low[1], rec.xy_high[1]))
            self._put_on(oid, x, y, rec.top_z, float(action.yaw))
            moved = oid
        reason = self._check_move(moved, snap)
        if reason:
            if action.action_type == SWAP:
                self._objs[oid].parking, self._objs[moved].parking = self._objs[moved].parking, self._objs[oid].parking
            self._restore(snap)
            return MoveResult(False, reason, self._state(), prev, message=f"{moved}: {reason}")
        render = self._render_full(self._pending_seg)
        return MoveResult(True, "", self._state(), render, message=f"{moved} moved")

    def _settle(self, seconds: float) -> SceneState:
        import mujoco

        if self._room is None:
            raise RuntimeError("call reset() first")
        n = int(round(seconds / self.timestep))
        if n > 0:
            self._physics(n)
        mujoco.mj_forward(self._model, self._data)
        self._render_full()
        return self._state()

    def _validate(self, a: MoveAction) -> str:
        return move_request_problem(a, self._active, self._container, lambda: {r.id for r in self._all_receptacles()})

    def _choose_receptacle(self, a: MoveAction) -> Optional[Receptacle]:
        recs = [r for r in self._all_receptacles() if r.id != a.object_id]
        if a.receptacle_id:
            return next(r for r in recs if r.id == a.receptacle_id)
        if a.position is None:
            return recs[int(self._rng.integers(len(recs)))]
        x, y, z = (float(v) for v in a.position)
        under = [r for r in recs if r.xy_low[0] - 1e-6 <= x <= r.xy_high[0] + 1e-6 and r.xy_low[1] - 1e-6 <= y <= r.xy_high[1] + 1e-6]
        if not under:  # outside every surface: the nearest one (the point is clipped into it)
            def dist(r):
                dx = max(r.xy_low[0] - x, 0.0, x - r.xy_high[0])
                dy = max(r.xy_low[1] - y, 0.0, y - r.xy_high[1])
                return float(np.hypot(dx, dy)) + 0.5 * abs(r.top_z - z)
            return min(recs, key=dist)
        return min(under, key=lambda r: abs(r.top_z - z))
