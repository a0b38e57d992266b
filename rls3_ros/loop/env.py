"""The RLS3 data-generation MDP as a gymnasium environment (pure Python, no ROS).

One episode = one seeded scene and at most ``T`` agent steps. Each step picks one of the
scene's 3 active objects and moves it (swap with the object container, place on a support
surface at a target, or stack on another active object); the simulator renders the result
and says whether it is a valid sample. Valid samples are captioned by the injected oracle
and kept; the episode ends after ``T`` steps or as soon as it holds ``T0`` valid samples.

Rewards (the paper's two signals):
- intrinsic, every step: ``reward_valid`` (> 0) for a valid, captioned sample,
  ``reward_invalid`` (< 0) for an invalid move (overlap, floating, out of view, occluded, ...),
  ``reward_no_relation`` for a valid render the oracle could not caption;
- extrinsic J2 (``rls3_ros.loop.reward``), once per episode on its last step ("T : 1"): the injected VLM scorer runs
  on the episode's valid samples; ``j2_metric="loss"`` -> mean per-relation loss [nats],
  ``"error"`` -> 1 - accuracy. A worse VLM gives a higher reward. J2 is clipped to
  ``j2_clip`` (loss only) so a few ambiguous near-boundary samples cannot dominate.
  ``j2_per_step=True`` (an option, not the paper's schedule) gives each valid sample its own
  VLM loss as reward at its step instead (denser credit assignment; same scoring cost).

Action space (one ``Box(-1, 1, (6,))`` serves SAC, PPO and the random agent; documented
choice — a discrete space would need a second decoder and gains nothing here):
  a[0] object selector: 3 equal bins -> active object 0, 1, 2
  a[1] move kind: < -0.5 swap with the container, [-0.5, 0.5) place on a surface at
       (a[2], a[3]), >= 0.5 stack on another active object
  a[2], a[3] target x, y in the placement bounds (place) or an offset on the supporting
       object's top (stack, within a third of its half extent)
  a[4] stack target: 2 bins over the other two active objects (stack); target height in the
       placement bounds (place: the backend picks the support surface nearest that height
       under (x, y), so floor, furniture tops and shelf levels are all reachable)
  a[5] yaw in [-pi, pi]

Observation (``Box(-10, 10)``, float32): for each of the 3 active-object slots the category
one-hot (``n_categories`` bins; ids from the source's category list or a stable hash), its
centre in the camera optical frame (x/2, y/2, z/4 m), size (/0.5 m), visible fraction and a
"stacked on an active object" flag; then the scene type one-hot (8 bins), the camera height
and pitch, the episode progress t/T, valid samples so far / T0, and the last step's validity.

The simulator is reached through :class:`SimSource` so the same env runs in-process
(:class:`BackendSource`) and over ROS services (``rls3_ros.ros.nodes.rl_sampler``).
"""

from __future__ import annotations

import abc
import math
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np

from rls3_ros.core.scene import Sample, SceneState, SpatialRelation
from rls3_ros.sim.backend import PLACE, SWAP, MoveAction
from rls3_ros.loop.config import EnvConfig
from rls3_ros.loop.modes import ACTION_DIM, mode_of
from rls3_ros.loop.reward import AdapterBaseline, j2_from_scores, per_sample_loss  # noqa: F401 - part of the env API
from rls3_ros.vlm.interface import RelationScore

N_SLOTS = 3
N_CATEGORIES = 16  # category one-hot bins (EnvConfig.n_categories unset)
N_SCENE_TYPES = 8
SLOT_FEATURES_BASE = 8  # position(3) + size(3) + visible_fraction + stacked flag
OBS_TERMS = ("left", "right", "in front", "behind", "above", "below", "on", "under")
TRAIN_SEED_STRIDE = 100_003  # scene seed = seed * stride + episode (test/val sets use seeds >= 1e9)

Captioner = Callable[[SceneState], List[SpatialRelation]]
Scorer = Callable[[Sequence[Sample]], List[RelationScore]]
Bounds = Tuple[Tuple[float, float, float], Tuple[float, float, float]]


@dataclass
class SimStep:
    """What the simulator returned for a reset or a move."""

    valid: bool
    reason: str
    scene: SceneState
    image: np.ndarray  # (H, W, 3) uint8


class SimSource(abc.ABC):
    """The simulator as the env sees it: reset, apply a move, bounds. Counts renders."""

    renders: int = 0

    @property
    def scene_types(self) -> Sequence[str]:
        return ()

    def work_seconds(self) -> Dict[str, float]:
        """Cumulative seconds of the simulator's own work: "busy" (inside resets and moves) and, when
        the backend counts them, "physics" and "render" of it (empty when unknown)."""
        return {}

    @property
    def categories(self) -> Sequence[str]:
        return ()

    @abc.abstractmethod
    def reset(self, seed: int, scene_type: Optional[str] = None) -> SimStep:
        """Build the scene for ``seed`` and render it."""

    @abc.abstractmethod
    def apply(self, action: MoveAction) -> SimStep:
        """Apply a move; an invalid one leaves the scene as it was."""

    # Optional: ``prefetch(seed, scene_type)`` -- the env calls it after every reset with the next
    # episode's scene, so a source can build it ahead (``rls3_ros.loop.sim_worker.PrefetchSource``).

    def placement_bounds(self, scene: SceneState) -> Bounds:
        """World box (lo, hi) where targets may be put. Default: around the scene's objects."""
        return bounds_from_scene(scene)

    def receptacles(self) -> List[Tuple[str, float, Tuple[float, float], Tuple[float, float]]]:
        """The current scene's support surfaces as (id, top_z, xy_low, xy_high), active objects
        included (the backend's ``receptacles``). Default: none known (callers use the bounds)."""
        return []

    def close(self) -> None:
        pass


def bounds_from_scene(scene: SceneState, margin: float = 0.35) -> Bounds:
    """Placement bounds from the scene's objects (used when the simulator gives none)."""
    if not scene.objects:
        return (-1.0, -1.0, 0.0), (1.0, 1.0, 1.5)
    p = np.array([o.position for o in scene.objects], dtype=float)
    lo = p.min(axis=0) - margin
    hi = p.max(axis=0) + margin
    lo[2] = max(0.0, float(p[:, 2].min()) - 0.2)
    hi[2] = float(p[:, 2].max()) + 0.5
    return tuple(float(v) for v in lo), tuple(float(v) for v in hi)  # type: ignore[return-value]


class BackendSource(SimSource):
    """A :class:`~rls3_ros.sim.backend.SimulatorBackend` used in-process."""

    _busy = 0.0  # seconds inside the backend's resets and moves
    def __init__(self, backend):
        self.backend = backend
        self.renders = 0
        self._lock = threading.Lock()

    def work_seconds(self) -> Dict[str, float]:
        fn = getattr(self.backend, "work_seconds", None)
        return {"busy": self._busy, **(fn() if callable(fn) else {})}

    @property
    def scene_types(self) -> Sequence[str]:
        return tuple(self.backend.scene_types)

    @property
    def categories(self) -> Sequence[str]:
        cats = getattr(self.backend, "categories", ())
        return tuple(cats() if callable(cats) else cats)

    def reset(self, seed: int, scene_type: Optional[str] = None) -> SimStep:
        with self._lock:
            t0 = time.perf_counter()
            scene = self.backend.reset(int(seed), scene_type)
            last = getattr(self.backend, "last_render", None)
            render = last() if callable(last) else None  # the reset rendered the scene already
            if render is None:
                render = self.backend.render()
                scene = self.backend.state()
            self.renders += 1
            self._busy += time.perf_counter() - t0
        return SimStep(True, "", scene, render.rgb)

    def apply(self, action: MoveAction) -> SimStep:
        with self._lock:
            t0 = time.perf_counter()
            res = self.backend.apply(action)
            self.renders += 1
            self._busy += time.perf_counter() - t0
        return SimStep(bool(res.valid), str(res.reason), res.scene, res.render.rgb)

    def receptacles(self) -> List[Tuple[str, float, Tuple[float, float], Tuple[float, float]]]:
        try:
            return list(self.backend.receptacles())
        except NotImplementedError:  # a backend without surfaces
            return []

    def placement_bounds(self, scene: SceneState) -> Bounds:
        fn = getattr(self.backend, "placement_bounds", None)
        if fn is not None:
            try:
                lo, hi = fn()
                lo = tuple(float(v) for v in lo)
                hi = tuple(float(v) for v in hi)
                if len(lo) == 2:
                    b = bounds_from_scene(scene)
                    lo, hi = (lo[0], lo[1], b[0][2]), (hi[0], hi[1], b[1][2])
                return lo, hi  # type: ignore[return-value]
            except Exception:
                pass
        return bounds_from_scene(scene)

    def close(self) -> None:
        self.backend.close()


@dataclass
class EpisodeRecord:
    """One finished episode, handed to the scheduler."""

    episode: int
    scene_seed: int
    scene_type: str
    steps: int
    renders: int  # simulator renders used (reset + moves + miner candidates)
    samples: List[Sample]  # valid, captioned samples
    invalid: Dict[str, int]  # reason -> count
    j2: float  # extrinsic reward (before weighting); nan without a scorer
    scores: List[RelationScore] = field(default_factory=list)
    intrinsic_return: float = 0.0
    move_kinds: Dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    env_id: str = ""  # the env's run_id (which simulator / bridge produced the episode)
    mode_counts: Dict[str, int] = field(default_factory=dict)  # generation mode -> steps (rls3_ros.loop.modes)
    sample_modes: Dict[str, str] = field(default_factory=dict)  # sample id -> mode of the move that made it
    j2_raw: float = float("nan")  # J2 before the per-iteration baseline (j2_baseline="iteration")
    timing: Dict[str, float] = field(default_factory=dict)  # stage -> seconds: sim (reset/moves/render), caption, features, score


def category_index(category: str, categories: Sequence[str], n: int) -> int:
    if category in categories:
        return list(categories).index(category) % n
    return zlib.crc32(category.encode()) % n


class RLS3Env(gym.Env):
    """RLS3 data generation as an MDP (see module docstring)."""

    metadata = {"render_modes": []}

    @classmethod
    def from_config(cls, config: EnvConfig, source: SimSource, captioner: Captioner,
                    scorer: Optional[Scorer] = None, **kwargs) -> "RLS3Env":
        """The env with the run configuration's ``env`` section (validated: :class:`EnvConfig`);
        ``kwargs``: ``T``, ``T0`` (the loop section's), ``seed``, ``scene_types``, ``run_id``, hooks."""
        return cls(source, captioner, scorer, **config.model_dump(), **kwargs)

    def __init__(self, source: SimSource, captioner: Captioner, scorer: Optional[Scorer] = None, *,
                 T: int, T0: Optional[int] = None, seed: int = 0, scene_types: Optional[Sequence[str]] = None,
                 reward_valid: float, reward_invalid: float, reward_no_relation: float, j2_metric: str,
                 j2_weight: float, j2_clip: float, max_relations: int, j2_per_step: bool, j2_baseline: str,
                 observe_vlm: bool, n_categories: Optional[int] = None,
                 episode_hook: Optional[Callable[[EpisodeRecord], None]] = None, run_id: str = "rls3",
                 vlm_state: Optional[Callable[[], Tuple[int, Dict[str, float]]]] = None):
        """The reward and observation settings are :class:`EnvConfig`'s fields (its ranges and docs;
        build from a validated section with :meth:`from_config`); ``n_categories`` None: the env's
        ``N_CATEGORIES``. ``T0`` None: ``T``."""
        super().__init__()
        if T < 1:
            raise ValueError(f"T must be >= 1 (got {T})")
        T0 = T if T0 is None else int(T0)
        if not 1 <= T0 <= T:
            raise ValueError(f"T0 must be in [1, T={T}] (got {T0})")
        self.source = source
        self.captioner = captioner
        self.scorer = scorer
        self.T, self.T0 = int(T), T0
        self.base_seed = int(seed)
        st = list(scene_types) if scene_types else list(source.scene_types)
        self.scene_types: List[str] = st
        self.reward_valid, self.reward_invalid = float(reward_valid), float(reward_invalid)
        self.reward_no_relation = float(reward_no_relation)
        self.j2_metric, self.j2_weight, self.j2_clip = j2_metric, float(j2_weight), float(j2_clip)
        self.n_categories = N_CATEGORIES if n_categories is None else int(n_categories)
        self.categories = list(source.categories)
        self.episode_hook = episode_hook
        self.run_id = run_id
        self.max_relations = int(max_relations)
        self.j2_per_step = bool(j2_per_step)
        self.j2_baseline = j2_baseline
        self.observe_vlm = bool(observe_vlm)
        # () -> (fine-tunes so far, per-term validation error of the current adapter); set by the runner
        self.vlm_state = vlm_state
        self._j2_baseline = AdapterBaseline()
        self.reset_attempts = 5  # seeds tried when the simulator cannot build a scene

        self.slot_dim = self.n_categories + SLOT_FEATURES_BASE
        obs_dim = N_SLOTS * self.slot_dim + N_SCENE_TYPES + 3 + 3 + (len(OBS_TERMS) if self.observe_vlm else 0)
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

        self.episode = 0  # index of the next episode to start
        self.episodes_done = 0  # finished episodes (what a checkpoint stores: resume restarts after them)
        self._rng = np.random.default_rng(self.base_seed)
        self._scene: Optional[SceneState] = None
        self._t = 0
        self._samples: List[Sample] = []
        self._step_scores: List[RelationScore] = []
        self._invalid: Dict[str, int] = {}
        self._kinds: Dict[str, int] = {}
        self._modes: Dict[str, int] = {}
        self._sample_modes: Dict[str, str] = {}
        self._timing: Dict[str, float] = {}
        self._renders_at_reset = 0
        self._last_valid = 1.0
        self._return = 0.0
        self._t_start = 0.0
        self._cur_episode = -1
        self._cur_seed = 0
        self._cur_type = ""

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._cur_episode = self.episode
        self.episode += 1
        self._cur_seed = self.scene_seed(self._cur_episode)
        self._cur_type = self.scene_types[self._cur_episode % len(self.scene_types)] if self.scene_types else None
        self._renders_at_reset = self.source.renders
        res = None
        t_reset = time.perf_counter()
        for attempt in range(self.reset_attempts):
            try:
                res = self.source.reset(self._cur_seed, self._cur_type)
                break
            except (RuntimeError, ValueError) as e:  # a seed the simulator cannot build: the next one
                if attempt + 1 == self.reset_attempts:
                    raise RuntimeError(f"simulator could not build a scene for {self.reset_attempts} seeds "
                                       f"from {self.scene_seed(self._cur_episode)}: {e}") from e
                self._cur_seed = (self._cur_seed + 104_729) % 1_000_000_000
        self._scene = res.scene
        self._cur_type = res.scene.scene_type
        prefetch = getattr(self.source, "prefetch", None)
        if prefetch is not None:  # a source that can build the next episode's scene ahead (rl.sim_worker)
            nxt = self.scene_types[self.episode % len(self.scene_types)] if self.scene_types else None
            prefetch(self.scene_seed(self.episode), nxt)
        self._reset_timing = {"sim": time.perf_counter() - t_reset}
        self._t = 0
        self._samples = []
        self._step_scores = []
        self._invalid = {}
        self._kinds = {}
        self._modes = {}
        self._sample_modes = {}
        self._timing = dict(self._reset_timing)
        self._last_valid = 1.0
        self._return = 0.0
        self._t_start = time.monotonic()
        return self._obs(), {"scene_seed": self._cur_seed, "scene_type": self._cur_type}

    def step(self, action):
        move = self.decode_action(action)
        res = self._apply(move)
        sample, reason = self._make_sample(res)
        self._note_mode(mode_of(action), sample)
        return self._advance(sample, res, reason, move)

    def _apply(self, move: MoveAction) -> SimStep:
        """The move on the simulator, timed as "sim" minus what the source did meanwhile: a source
        that works while its worker simulates (``take_overlap``) reports that time per stage."""
        res = self._timed("sim", self.source.apply, move)
        take = getattr(self.source, "take_overlap", None)
        if take is not None:
            for stage, sec in take().items():
                self._timing["sim"] -= sec
                self._timing[stage] = self._timing.get(stage, 0.0) + sec
        return res

    def _timed(self, stage: str, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._timing[stage] = self._timing.get(stage, 0.0) + time.perf_counter() - t0

    def _note_mode(self, mode: str, sample: Optional[Sample]) -> None:
        self._modes[mode] = self._modes.get(mode, 0) + 1
        if sample is not None:
            self._sample_modes[sample.sample_id] = mode

    # ------------------------------------------------------------------ miner step
    def mine_step(self, k: int, rng: Optional[np.random.Generator] = None):
        """Hard-example mining instead of an agent action: try ``k`` random moves (the scene
        walks on with each valid one), score the valid candidates with the VLM and keep the one
        with the highest loss as this step's sample. Costs ``k`` renders and one scoring call."""
        if self.scorer is None:
            raise RuntimeError("the miner needs a scorer")
        rng = rng or self._rng
        cands: List[Sample] = []
        last = None
        last_move = None
        reason = ""
        for _ in range(max(1, int(k))):
            a = rng.uniform(-1, 1, ACTION_DIM).astype(np.float32)
            move = self.decode_action(a)
            res = self._apply(move)
            self._kinds[self._kind_name(move)] = self._kinds.get(self._kind_name(move), 0) + 1
            s, why = self._make_sample(res, sub=len(cands))
            self._note_mode(mode_of(a), s)
            if res.valid:
                self._scene = res.scene
            if s is not None:
                cands.append(s)
            else:
                reason = why
            last, last_move = res, move
        if not cands:
            return self._advance(None, last, reason or "invalid", last_move, count_kind=False)
        losses = per_sample_loss(self._timed("score", self.scorer, cands), self.j2_clip)
        best = max(cands, key=lambda s: losses.get(s.sample_id, -1.0))
        self._sample_modes[self._sample_id(self._t)] = self._sample_modes.get(best.sample_id, "")
        best.sample_id = self._sample_id(self._t)
        return self._advance(best, SimStep(True, "", best.scene, best.image), "", last_move, count_kind=False)

    # ------------------------------------------------------------------ internals
    def scene_seed(self, episode: int) -> int:
        return (self.base_seed * TRAIN_SEED_STRIDE + int(episode)) % 1_000_000_000

    def _sample_id(self, step: int, sub: Optional[int] = None) -> str:
        sid = f"{self.run_id}-e{self._cur_episode}-s{step}"
        return sid if sub is None else f"{sid}-c{sub}"

    def _make_sample(self, res: SimStep, sub: Optional[int] = None) -> Tuple[Optional[Sample], str]:
        if not res.valid:
            return None, (res.reason or "invalid").split(":")[0].strip() or "invalid"
        rels = self._timed("caption", self.captioner, res.scene)
        if self.max_relations and len(rels) > self.max_relations:
            idx = self._rng.choice(len(rels), self.max_relations, replace=False)
            rels = [rels[i] for i in sorted(idx)]
        if not rels:
            return None, "no_relation"
        s = Sample(
            sample_id=self._sample_id(self._t, sub),
            image=res.image,
            scene=res.scene,
            relations=list(rels),
            valid=True,
            episode=self._cur_episode,
            step=self._t,
        )
        return s, ""

    @staticmethod
    def _kind_name(move: MoveAction) -> str:
        if move.action_type == SWAP:
            return "swap"
        return "stack" if move.receptacle_id else "place"

    def _advance(self, sample, res, reason, move, count_kind=True):
        if res is not None and res.valid:
            self._scene = res.scene
        if count_kind and move is not None:
            self._kinds[self._kind_name(move)] = self._kinds.get(self._kind_name(move), 0) + 1
        if sample is not None:
            self._samples.append(sample)
            r = self.reward_valid
            self._last_valid = 1.0
            if self.j2_per_step and self.scorer is not None:
                sc = list(self._timed("score", self.scorer, [sample]))
                self._step_scores.extend(sc)
                r += self.j2_weight * j2_from_scores(sc, self.j2_metric, self.j2_clip)
        elif reason == "no_relation":
            r = self.reward_no_relation
            self._invalid[reason] = self._invalid.get(reason, 0) + 1
            self._last_valid = 0.0
        else:
            r = self.reward_invalid
            self._invalid[reason] = self._invalid.get(reason, 0) + 1
            self._last_valid = 0.0
        self._t += 1
        self._return += r
        info = {"valid": sample is not None, "reason": reason, "n_valid": len(self._samples)}
        done = self._t >= self.T or len(self._samples) >= self.T0
        if done:
            self.episodes_done = self._cur_episode + 1
            scores: List[RelationScore] = []
            j2 = float("nan")
            if self.scorer is not None and self._samples:
                scores = self._step_scores if self.j2_per_step else list(self._timed("score", self.scorer, self._samples))
                j2 = j2_from_scores(scores, self.j2_metric, self.j2_clip)
            elif self.scorer is not None:
                j2 = 0.0
            j2_raw = j2
            if not math.isnan(j2) and self.j2_baseline == "iteration" and self._samples:
                j2 = self._against_baseline(j2)
            if not math.isnan(j2) and not self.j2_per_step:
                r += self.j2_weight * j2
            rec = EpisodeRecord(
                episode=self._cur_episode,
                scene_seed=self._cur_seed,
                scene_type=self._cur_type or "",
                steps=self._t,
                renders=self.source.renders - self._renders_at_reset,
                samples=list(self._samples),
                invalid=dict(self._invalid),
                j2=j2,
                scores=scores,
                intrinsic_return=self._return,
                move_kinds=dict(self._kinds),
                wall_s=time.monotonic() - self._t_start,
                env_id=self.run_id,
                mode_counts=dict(self._modes),
                sample_modes=dict(self._sample_modes),
                j2_raw=j2_raw,
                timing=dict(self._timing),
            )
            info["j2"] = j2
            info["episode_record"] = rec
            if self.episode_hook is not None:
                self.episode_hook(rec)
        return self._obs(), float(r), bool(done), False, info

    def _against_baseline(self, j2: float) -> float:
        return self._j2_baseline.relative(j2, self.vlm_state()[0] if self.vlm_state is not None else 0)

    def decode_action(self, action) -> MoveAction:
        """Map a Box action in [-1, 1]^6 to a simulator move (see module docstring)."""
        a = np.clip(np.asarray(action, dtype=float).reshape(-1), -1.0, 1.0)
        if a.shape[0] != ACTION_DIM:
            raise ValueError(f"action must have {ACTION_DIM} values (got {a.shape[0]})")
        scene = self._scene
        if scene is None:
            raise RuntimeError("reset() first")
        active = scene.active_objects()[:N_SLOTS] or scene.objects[:N_SLOTS]
        if not active:
            raise RuntimeError(f"scene {scene.scene_id} has no active object")
        obj = active[min(int((a[0] + 1) / 2 * N_SLOTS), N_SLOTS - 1) % len(active)]
        yaw = float(a[5]) * math.pi
        if a[1] < -0.5:
            return MoveAction(SWAP, obj.id, yaw=yaw)
        if a[1] >= 0.5 and len(active) > 1:
            others = [o for o in active if o.id != obj.id]
            ref = others[min(int((a[4] + 1) / 2 * len(others)), len(others) - 1)]
            dx = float(a[2]) * ref.size[0] / 6.0
            dy = float(a[3]) * ref.size[1] / 6.0
            z = ref.position[2] + ref.size[2] / 2.0 + obj.size[2] / 2.0
            return MoveAction(PLACE, obj.id, position=(ref.position[0] + dx, ref.position[1] + dy, z),
                              yaw=yaw, receptacle_id=ref.id)
        lo, hi = self.source.placement_bounds(scene)
        x = lo[0] + (a[2] + 1) / 2 * (hi[0] - lo[0])
        y = lo[1] + (a[3] + 1) / 2 * (hi[1] - lo[1])
        z = lo[2] + (a[4] + 1) / 2 * (hi[2] - lo[2])
        return MoveAction(PLACE, obj.id, position=(float(x), float(y), float(z)), yaw=yaw, receptacle_id="")

    def _obs(self) -> np.ndarray:
        scene = self._scene
        out = np.zeros(self.observation_space.shape, np.float32)
        if scene is None:
            return out
        cam = scene.camera
        active = scene.active_objects()[:N_SLOTS]
        active_ids = {o.id for o in active}
        for i, o in enumerate(active):
            base = i * self.slot_dim
            out[base + category_index(o.category, self.categories, self.n_categories)] = 1.0
            c = cam.world_to_camera(np.asarray(o.position))[0]
            f = base + self.n_categories
            out[f:f + 3] = (c[0] / 2.0, c[1] / 2.0, c[2] / 4.0)
            out[f + 3:f + 6] = np.asarray(o.size, dtype=float) / 0.5
            out[f + 6] = float(o.visible_fraction)
            out[f + 7] = 1.0 if o.supported_by in active_ids else 0.0
        g = N_SLOTS * self.slot_dim
        if scene.scene_type in self.scene_types:
            out[g + self.scene_types.index(scene.scene_type) % N_SCENE_TYPES] = 1.0
        else:
            out[g + zlib.crc32(scene.scene_type.encode()) % N_SCENE_TYPES] = 1.0
        g += N_SCENE_TYPES
        fwd = cam.rotation()[:, 2]
        out[g] = float(cam.position[2]) / 2.0
        out[g + 1] = float(np.arcsin(np.clip(-fwd[2], -1, 1)))
        out[g + 2] = float(np.arctan2(fwd[1], fwd[0])) / math.pi
        out[g + 3] = self._t / self.T
        out[g + 4] = len(self._samples) / self.T0
        out[g + 5] = self._last_valid
        if self.observe_vlm:  # what the VLM currently gets wrong: per-term validation error
            err = self.vlm_state()[1] if self.vlm_state is not None else {}
            for i, t in enumerate(OBS_TERMS):
                out[g + 6 + i] = float(err.get(t, 0.5))
        return np.clip(out, -10.0, 10.0)

    def close(self):
        pass
