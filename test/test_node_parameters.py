"""Every node declares its parameters from one table (``rls3_ros.ros.node_params``, issue 28).

Adding a parameter is one edit: one ``Param`` appended to a node's table (monkeypatched here) makes
a real node (real rclpy, in-process, isolated ROS env) declare it with its doc and range, refuse an
out-of-range start value with a one-line reason naming parameter, value and range, and list it in
the rendered docs and ``--help``. For ``spatial_query`` (a lifecycle node: a bad value fails its
configure transition, logged as "bad parameter: ...") and ``sim_bridge`` (a bad value stops it:
``NodeStartupError``, exit code 2 through ``run_node``). Also: every parameter any node declares has
a description, no node declares a parameter outside its table, and the docs' parameter tables are
the tables rendered.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def ros_context(ros_env):
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        rclpy.shutdown(context=ctx)


def _descriptions(node) -> dict:
    """name -> description of every parameter the node declared itself (those every rclpy node
    declares, e.g. use_sim_time, aside)."""
    from rclpy.node import Node

    bare = Node("bare_node", context=node.context)
    try:
        own = set(bare._parameters)
    finally:
        bare.destroy_node()
    names = [n for n in node._parameters if n not in own]
    return {n: d.description for n, d in zip(names, node.describe_parameters(names))}


def test_a_parameter_added_to_spatial_query_is_declared_checked_and_documented(ros_context, monkeypatch, capfd):
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    import rls3_ros.ros.nodes.spatial_query as S
    from rls3_ros.ros.node_params import Param, help_text, markdown_table

    added = Param("max_test_widgets", 7, "widgets a test may ask for", low=1, high=9, read_only=True)
    monkeypatch.setattr(S, "PARAMETERS", S.PARAMETERS + [added])  # the one edit
    base = [Parameter("autostart", value=False), Parameter("model", value="py:vlm_test_model:load")]

    node = S.SpatialQueryNode("param_query", context=ros_context, parameter_overrides=base)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        d = node.describe_parameter("max_test_widgets")
        assert d.description == "widgets a test may ask for (in [1, 9])" and d.read_only
        assert [(r.from_value, r.to_value) for r in d.integer_range] == [(1, 9)]
        assert node.get_parameter("max_test_widgets").value == 7
        assert not node.set_parameters([Parameter("max_test_widgets", value=8)])[0].successful  # read-only
        assert all(_descriptions(node).values()), _descriptions(node)
    finally:
        node.destroy_node()

    capfd.readouterr()
    node = S.SpatialQueryNode("param_query_bad", context=ros_context,
                              parameter_overrides=base + [Parameter("max_test_widgets", value=12)])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        err = capfd.readouterr()
        lines = [ln for ln in (err.out + err.err).splitlines() if "bad parameter:" in ln]
        assert len(lines) == 1 and lines[0].endswith("bad parameter: max_test_widgets must be in [1, 9] (got 12)"), lines
    finally:
        node.destroy_node()

    row = "| `max_test_widgets` | integer | `7` | in [1, 9]; read-only | widgets a test may ask for |"
    assert row in markdown_table(S.PARAMETERS).splitlines()
    assert "  max_test_widgets (integer, default 7, in [1, 9], read-only): widgets a test may ask for" in \
        help_text("spatial_query", S.PARAMETERS).splitlines()


def test_a_parameter_added_to_sim_bridge_is_declared_checked_and_documented(ros_context, monkeypatch):
    from rclpy.parameter import Parameter

    import rls3_ros.ros.nodes.sim_bridge as B
    from rls3_ros.ros.node_main import NodeStartupError
    from rls3_ros.ros.node_params import Param, help_text, markdown_table

    added = Param("test_gain", 0.5, "a gain only this test knows", low=0.0, high=1.0, high_open=True)
    monkeypatch.setattr(B, "PARAMETERS", B.PARAMETERS + [added])  # the one edit
    small = [Parameter("image_size", value=64)]

    node = B.SimBridge("param_bridge", context=ros_context, parameter_overrides=small)
    try:
        d = node.describe_parameter("test_gain")
        assert d.description == "a gain only this test knows (in [0, 1))" and not d.read_only
        assert [(r.from_value, r.to_value) for r in d.floating_point_range] == [(0.0, 1.0)]
        assert node.set_parameters([Parameter("test_gain", value=0.25)])[0].successful
        refused = node.set_parameters([Parameter("test_gain", value=2.0)])[0]
        assert not refused.successful and "test_gain" in refused.reason
        assert all(_descriptions(node).values()), _descriptions(node)
    finally:
        node.close()
        node.destroy_node()

    with pytest.raises(NodeStartupError) as e:
        B.SimBridge("param_bridge_bad", context=ros_context, parameter_overrides=small + [Parameter("test_gain", value=1.0)])
    assert str(e.value) == "test_gain must be in [0, 1) (got 1.0)"

    row = "| `test_gain` | double | `0.5` | in [0, 1) | a gain only this test knows |"
    assert row in markdown_table(B.PARAMETERS).splitlines()
    assert "  test_gain (double, default 0.5, in [0, 1)): a gain only this test knows" in \
        help_text("sim_bridge", B.PARAMETERS).splitlines()


@pytest.mark.parametrize("name", ["sim_bridge", "caption_oracle", "vlm_trainer", "spatial_query", "rl_sampler"])
def test_every_parameter_of_every_node_is_declared_with_a_description(ros_context, name):
    """Each node's table declared on a real rclpy node: every parameter has a description (its doc
    and what it accepts), the one ``ros2 param describe`` shows."""
    from rclpy.node import Node

    from rls3_ros.ros.node_params import declare, node_table

    table = node_table(name)
    node = Node(f"described_{name}", context=ros_context)
    try:
        declare(node, table)
        described = _descriptions(node)
        assert sorted(described) == sorted(p.name for p in table)
        assert all(v.strip() for v in described.values()), [k for k, v in described.items() if not v.strip()]
    finally:
        node.destroy_node()


def test_nodes_declare_parameters_only_through_their_table():
    """No node module declares a parameter by hand: ``declare_parameter`` is called in node_params only."""
    for path in sorted((ROOT / "rls3_ros" / "ros" / "nodes").glob("*.py")):
        assert not re.search(r"\.declare_parameters?\(", path.read_text()), f"{path.name} declares by hand"


def test_the_docs_parameter_tables_are_the_node_tables():
    """docs/vlm_nodes.md and docs/simulator.md hold the tables rendered (regenerate them with
    ``python -m rls3_ros.ros.node_params --write-docs``)."""
    from rls3_ros.ros.node_params import DOC_TABLES, node_table, with_generated_tables

    for rel, nodes in DOC_TABLES.items():
        text = (ROOT / rel).read_text()
        assert text == with_generated_tables(text, {n: node_table(n) for n in nodes}), \
            f"{rel}: run python -m rls3_ros.ros.node_params --write-docs"
