"""The parameter override that makes the training graph small enough for tests across processes:
64 px images, the test VLM, a 4-term schedule with 2 episodes per round and a few moves each."""

from __future__ import annotations

_OVERRIDE = """
/**/sim_bridge:
  ros__parameters:
    image_size: 64
/**/vlm_trainer:
  ros__parameters:
    model: "py:vlm_test_model:load"
/**/rl_sampler:
  ros__parameters:
    agent: {agent}
    T: 4
    T0: 3
    E: 2
    fine_tune_steps: 2
    budget_valid_samples: {budget}
    test_scenes: 2
    replay_scenes: 2
    moves_per_scene: 3
    test_per_term: 5
    dataset_key: ros-test-64
    wait_for_services: 60.0
"""


def tiny_training_override(agent: str, budget: int, **sampler_params: object) -> str:
    """YAML for ``rls3 launch training --params-file``; ``sampler_params`` adds rl_sampler parameters."""
    extra = "".join(f"    {k}: {v}\n" for k, v in sampler_params.items())
    return _OVERRIDE.format(agent=agent, budget=budget) + extra
