"""The sample-generation benchmark (rls3_ros/bench/generation.py) compares like with like and its
ROS client still receives an image and a caption for every sample."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(240)

_SIM_SETTINGS = ("image_size", "render_depth", "min_visible_fraction", "_cam_ranges", "_types")


def _settings(backend):
    return {k: getattr(backend, k) for k in _SIM_SETTINGS}


def test_inprocess_baseline_does_the_bridges_simulator_work(ros_env, monkeypatch):
    """Same simulator settings as a sim_bridge of the same image size: no depth pass the bridge skips."""
    import rclpy
    from rclpy.parameter import Parameter

    import rls3_ros.sim.factory as factory
    from rls3_ros.bench.generation import bench_inprocess
    from rls3_ros.ros.nodes.sim_bridge import SimBridge

    made = []
    real = factory.make_backend

    def recording(*a, **k):
        b = real(*a, **k)
        made.append(b)
        return b

    monkeypatch.setattr(factory, "make_backend", recording)
    out = bench_inprocess(4, 32)
    assert out["n"] == 4 and len(made) == 1
    baseline = _settings(made[0])
    monkeypatch.setattr(factory, "make_backend", real)

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        bridge = SimBridge(context=ctx, parameter_overrides=[Parameter("image_size", value=32)])
        try:
            assert _settings(bridge.backend) == baseline
            assert baseline["render_depth"] is False
        finally:
            bridge.close()
            bridge.destroy_node()
    finally:
        ctx.try_shutdown()
