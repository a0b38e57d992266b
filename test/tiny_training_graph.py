"""The parameter override that makes the training graph small enough for tests across processes:
64 px images, the test VLM, a 4-term schedule with 2 episodes per round and a few moves each."""

from __future__ import annotations

from ros_harness import deadline

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
    fine_tune_steps_per_sample: 0.0
    budget_valid_samples: {budget}
    test_scenes: 2
    replay_scenes: 2
    moves_per_scene: 3
    test_per_term: 5
    val_scenes: 2
    val_per_term: 5
    dataset_key: ros-test-64
    wait_for_services: {wait_for_services}
"""


def tiny_training_override(agent: str, budget: int, **sampler_params: object) -> str:
    """YAML for ``rls3 launch training --params-file``; ``sampler_params`` adds rl_sampler parameters."""
    extra = "".join(f"    {k}: {v}\n" for k, v in sampler_params.items())
    # how long the sampler waits for the other nodes to start: a hang guard, scaled like the tests' own
    return _OVERRIDE.format(agent=agent, budget=budget, wait_for_services=deadline(60.0)) + extra
