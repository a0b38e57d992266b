"""The one run-configuration schema (rls3_ros/loop/config.py): the shipped YAML files validate, the
rl_sampler node's parameters are the schema's fields with the loop's defaults (declared in a real
rclpy node), bad values and unknown keys are refused with the key named, and a field added to the
schema becomes a node parameter with no other edit."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rls3_ros.loop import config as C

ROOT = Path(__file__).resolve().parents[1]


def _declared(node_name: str = "rl_sampler", overrides=()):
    """Declare the schema's parameters on a real rclpy node; return (validated values, names declared)."""
    import rclpy
    from rclpy.node import Node

    from rls3_ros.ros.node_params import declare_config_parameters

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = Node(node_name, context=ctx, parameter_overrides=list(overrides))
        try:
            values = declare_config_parameters(node)
            return values, set(node._parameters), node.describe_parameter("T"), node.describe_parameter("eta")
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_every_shipped_train_yaml_validates():
    data = yaml.safe_load((ROOT / "config" / "train.yaml").read_text())
    quick = data.pop("quick")
    full = C.merge_config(C.DEFAULT_CONFIG, data)
    C.validate_config(full)
    C.validate_config(C.merge_config(full, quick))


def test_the_rl_sampler_sections_of_the_graph_yamls_are_node_parameters(ros_env):
    for f in sorted((ROOT / "config").glob("*.yaml")):
        data = yaml.safe_load(f.read_text()) or {}
        for key, sec in data.items():
            if key.endswith("rl_sampler"):
                values = sec["ros__parameters"]
                assert set(values) <= set(C.NODE_PARAMS), (f.name, set(values) - set(C.NODE_PARAMS))
                C.config_from_params(values)  # raises on a bad value


def test_node_defaults_are_the_loop_defaults(ros_env):
    values, declared, _, _ = _declared()
    cfg = C.config_from_params(values).model_dump()
    for section in ("loop", "env", "agent", "eval"):
        for key, default in C.DEFAULT_CONFIG[section].items():
            assert cfg[section][key] == default, (section, key)
    assert values["agent"] == C.DEFAULT_CONFIG["run"]["agent"] and values["seed"] == C.DEFAULT_CONFIG["run"]["seed"]
    assert values["val_scenes"] == 48 and values["val_per_term"] == 30  # the loop's (what the benchmarks measured)


def test_node_parameters_are_the_schema_fields_with_ranges(ros_env):
    _, declared, t, eta = _declared()
    expected = set()
    for sec_name, sec in C.GraphRunConfig.model_fields.items():
        for key, f in sec.annotation.model_fields.items():
            extra = f.json_schema_extra or {}
            if extra.get("node", True):
                expected.add(extra.get("param") or key)
    assert declared - {"use_sim_time", "start_type_description_service"} == expected
    assert t.integer_range[0].from_value == 1 and "agent steps per episode" in t.description
    assert eta.floating_point_range[0].to_value == 1.0


class _Extended(C.GraphRunConfig):
    """The schema with one more loop key, as a developer would add it."""

    class _Loop(C.LoopConfig):
        warmup_episodes: int = C._f(3, "a new loop key", ge=0)

    loop: _Loop = _Loop()


def test_a_new_schema_field_becomes_a_node_parameter_without_other_edits(ros_env, monkeypatch):
    import rls3_ros.ros.node_params as S

    params = C.node_params(_Extended)
    assert params["warmup_episodes"].default == 3 and params["warmup_episodes"].low == 0
    monkeypatch.setattr(S, "NODE_PARAMS", params)
    monkeypatch.setattr(C, "NODE_PARAMS", params)
    monkeypatch.setattr(C, "GraphRunConfig", _Extended)
    values, declared, _, _ = _declared()
    assert "warmup_episodes" in declared and values["warmup_episodes"] == 3


def test_bad_node_values_are_refused_with_the_parameter_and_range(ros_env):
    from rclpy.parameter import Parameter

    from rls3_ros.ros.node_main import NodeStartupError

    for p, value, expected in (("E", 0, "E must be an integer >= 1 (got 0)"),
                               ("eta", 1.5, "eta must be a number in (0.0, 1.0] (got 1.5)"),
                               ("agent", "dqn", "agent must be sac | ppo"),
                               ("T0", 9, "T0 must be in [1, T]")):
        with pytest.raises(NodeStartupError, match=__import__("re").escape(expected)):
            _declared(overrides=[Parameter(p, value=value)])


def test_bad_set_is_refused_with_the_key_named():
    cmd = [sys.executable, "-m", "rls3_ros.cli", "train", "--no-progress", "--no-pretrain", "--set"]
    for item, expected in (("loop.E=0", "loop.E must be an integer >= 1 (got 0)"),
                           ("loop.EE=2", "unknown key loop.EE (known: loop.T, loop.T0, loop.E"),
                           ("eval.replay_rare_keep=2", "eval.replay_rare_keep must be a number in [0.0, 1.0] (got 2)"),
                           ("run.agent=dqn", "run.agent must be sac | ppo | random | miner | upper | teacher")):
        r = subprocess.run(cmd + [item], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 2, r.stderr
        assert expected in r.stderr, r.stderr


def test_the_schema_covers_its_consumers():
    """The loop section is the scheduler's config and the env section the env's keyword arguments."""
    from rls3_ros.loop.env import RLS3Env
    from rls3_ros.loop.scheduler import SchedulerConfig

    assert issubclass(SchedulerConfig, C.LoopConfig) and set(SchedulerConfig.model_fields) == set(C.LoopConfig.model_fields)
    env_kwargs = set(inspect.signature(RLS3Env.__init__).parameters)
    assert set(C.EnvConfig.model_fields) <= env_kwargs
    from rls3_ros.loop.samplers import make_agent  # noqa: F401 - every sampler name is buildable

    assert set(C.AGENT_KEYS) == set(C.AGENTS)
    assert C.agent_kwargs({"run": {"agent": "sac"}, "agent": {"ent_coef": 0.1, "sac_ent_coef": "auto", "k": 3}}) \
        == {"ent_coef": "auto"}
