"""Every sampler by name: ``make_agent("teacher", envs)`` (pure Python, no ROS).

The learned and baseline agents live in :mod:`rls3_ros.loop.agents` (SAC, PPO, random, miner),
the generation-mode samplers in :mod:`rls3_ros.loop.mode_samplers` (upper bound, teacher); this
module is the one place that knows them all.
"""

from __future__ import annotations

from typing import Sequence

from rls3_ros.loop.agents import Agent, MinerAgent, PPOAgent, RandomAgent, SACAgent
from rls3_ros.loop.env import RLS3Env
from rls3_ros.loop.mode_samplers import TeacherSampler, UpperBoundSampler

SAMPLER_CLASSES = {"sac": SACAgent, "ppo": PPOAgent, "random": RandomAgent, "miner": MinerAgent,
                   "upper": UpperBoundSampler, "teacher": TeacherSampler}
AGENTS = tuple(SAMPLER_CLASSES)


def make_agent(name: str, envs: Sequence[RLS3Env], seed: int = 0, **kwargs) -> Agent:
    """``name`` in sac | ppo | random | miner | upper | teacher; kwargs go to the agent (e.g. ``k``
    for the miner, ``learning_starts`` for SAC, ``epsilon`` for the mode samplers)."""
    cls = SAMPLER_CLASSES.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown agent {name!r} (choose from {', '.join(AGENTS)})")
    return cls(envs, seed, **kwargs)
