"""Build a simulator backend by name (pure Python, no ROS)."""

from __future__ import annotations

import inspect

from rls3_ros.sim.backend import SimulatorBackend

BACKENDS = ("mujoco", "ai2thor")


def _check_params(cls, params: dict) -> None:
    sig = inspect.signature(cls.__init__)
    known = [p for p in sig.parameters if p != "self"]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter(s) for the {cls.name} backend: {', '.join(unknown)}; "
                         f"known: {', '.join(known)}")


def make_backend(name: str = "mujoco", **params) -> SimulatorBackend:
    """A simulator backend: ``"mujoco"`` (built in, the default) or ``"ai2thor"``.

    ``params`` go to the backend's constructor (e.g. ``image_size=128, seed=3``); unknown
    names or bad values raise ``ValueError`` with the list of known parameters.
    """
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    if key == "mujoco":
        from rls3_ros.sim.mujoco_backend import MuJoCoBackend

        _check_params(MuJoCoBackend, params)
        return MuJoCoBackend(**params)
    if key == "ai2thor":
        from rls3_ros.sim.ai2thor_backend import AI2ThorBackend

        _check_params(AI2ThorBackend, params)
        return AI2ThorBackend(**params)
    raise ValueError(f"unknown simulator backend {name!r}; known: {', '.join(BACKENDS)}")
