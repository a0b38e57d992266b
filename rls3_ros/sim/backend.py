"""The backend-neutral simulator interface (pure Python, no ROS).

A backend owns one scene at a time. Moves that produce an invalid sample are undone:
the scene after ``apply`` is either the new valid one or exactly the previous one.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, Collection, List, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.core.scene import SceneState, Vec3

SWAP = "swap"
TELEPORT = "teleport"
PLACE = "place"
ACTION_TYPES = (SWAP, TELEPORT, PLACE)

# Reasons a sample is invalid (MoveResult.reason, Sample.invalid_reason).
OVERLAP = "overlap"
FLOATING = "floating"
OUT_OF_VIEW = "out_of_view"
OCCLUDED = "occluded"
UNSTABLE = "unstable"
BAD_REQUEST = "bad_request"


@dataclass
class Render:
    """One camera frame: RGB, instance segmentation, depth and 2D boxes."""

    rgb: np.ndarray  # (H, W, 3) uint8
    segmentation: np.ndarray  # (H, W) int32, index into scene.objects, -1 = background/furniture
    depth: np.ndarray  # (H, W) float32, metres along the optical axis
    boxes: dict = field(default_factory=dict)  # object id -> (x_min, y_min, x_max, y_max)


@dataclass
class MoveAction:
    """One agent action: move ``object_id`` by swapping, teleporting or placing it."""

    action_type: str
    object_id: str
    container_object_id: str = ""  # swap: "" = the backend picks one (seeded)
    position: Optional[Vec3] = None  # teleport/place target in the world frame [m]
    yaw: float = 0.0  # rad about world z
    receptacle_id: str = ""  # place: "" = any support surface


@dataclass
class MoveResult:
    valid: bool
    reason: str
    scene: SceneState
    render: Render
    message: str = ""  # human-readable detail (e.g. what was wrong with a bad_request)


def move_request_problem(
    a: MoveAction, active: Sequence[str], container: Sequence[str], receptacle_ids: Callable[[], Collection[str]]
) -> str:
    """What is wrong with ``a`` for a scene with these active and container object ids ("" when
    nothing is); ``receptacle_ids`` is asked only for a place onto a named receptacle. Every
    backend answers such a request with BAD_REQUEST and this text, before touching the scene."""
    if not isinstance(a, MoveAction):
        return f"expected MoveAction, got {type(a).__name__}"
    if a.action_type not in ACTION_TYPES:
        return f"unknown action type {a.action_type!r} (known: {', '.join(ACTION_TYPES)})"
    if a.object_id not in active:
        return f"{a.object_id!r} is not an active object (active: {', '.join(active)})"
    if a.action_type == SWAP and not container:
        return "the object container is empty"
    if a.action_type == SWAP and a.container_object_id and a.container_object_id not in container:
        return f"{a.container_object_id!r} is not in the object container ({', '.join(container)})"
    if a.action_type == TELEPORT and a.position is None:
        return "teleport needs a position"
    if a.position is not None:
        p = np.asarray(a.position, dtype=float)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            return f"position must be 3 finite numbers, got {a.position!r}"
        if np.any(np.abs(p) > 50):
            return f"position {tuple(p)} is far outside the room"
    if not np.isfinite(float(a.yaw)):
        return "yaw must be finite"
    if a.action_type == PLACE and a.receptacle_id:
        if a.receptacle_id == a.object_id:
            return "an object cannot be placed on itself"
        if a.receptacle_id not in receptacle_ids():
            return f"unknown receptacle {a.receptacle_id!r}"
    return ""


class SimulatorBackend(abc.ABC):
    """A simulator that builds seeded indoor scenes, moves objects and renders them."""

    name: str = "abstract"

    @property
    @abc.abstractmethod
    def scene_types(self) -> Sequence[str]:
        """Scene types this backend can build."""

    @abc.abstractmethod
    def reset(self, seed: int, scene_type: Optional[str] = None) -> SceneState:
        """Build the scene for ``seed`` (deterministic) and return its state."""

    @abc.abstractmethod
    def state(self) -> SceneState:
        """The current scene state (boxes and visibility from the last render)."""

    @abc.abstractmethod
    def render(self) -> Render:
        """Render the current scene from its camera."""

    @abc.abstractmethod
    def apply(self, action: MoveAction) -> MoveResult:
        """Apply ``action``; if the result is invalid, restore the previous scene."""

    def placement_bounds(self) -> Tuple[Vec3, Vec3]:
        """(low xyz, high xyz) world box of the region where active objects may be placed in view.

        A continuous action maps into it; ``place`` with ``receptacle_id=""`` picks the support
        surface under (x, y) whose top is nearest the given z (floor, furniture, shelf levels,
        other objects for stacking).
        """
        raise NotImplementedError(f"{self.name} backend has no placement bounds")

    def receptacles(self) -> List[Tuple[str, float, Tuple[float, float], Tuple[float, float]]]:
        """Support surfaces as (id, top_z, xy_low, xy_high) in the world frame."""
        raise NotImplementedError(f"{self.name} backend lists no receptacles")

    def close(self) -> None:
        """Free the renderer and simulator."""
