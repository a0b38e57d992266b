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


def test_ros_path_receives_every_image_and_caption_and_matches_inprocess():
    """1 bridge, seed 0: the same moves as in-process give the same valid samples and relations,
    with two moves in flight (a move is sent before the last one's answer unless that one is a swap);
    the client got an image for every sample and a caption for every valid one (captions overlap
    the next move, none may be lost)."""
    from rls3_ros.bench.generation import bench_inprocess, bench_ros

    from rls3_ros.bench.generation import MOVES_IN_FLIGHT

    assert MOVES_IN_FLIGHT == 2  # what this test checks the moves' equality with
    ros = bench_ros(24, 32, 1)
    ref = bench_inprocess(24, 32)
    assert ros["errors"] == 0 and ros["n"] == 24
    assert ros["images_received"] == 24
    valid = round(ros["valid_fraction"] * ros["n"])
    assert valid > 0 and ros["captions_received"] == valid
    assert ros["valid_fraction"] == ref["valid_fraction"]
    assert ros["relations_per_valid"] == ref["relations_per_valid"]
    # the CPU each process spent per sample: the bridge simulates, so it spends the most
    cpu = ros["cpu_ms_per_sample"]
    assert set(cpu) == {"sim_bridge", "caption_oracle", "client"}
    assert cpu["sim_bridge"] > 0 and cpu["sim_bridge"] >= cpu["caption_oracle"]
    assert 0 < ros["cores_busy"] <= 2.5  # ~1: one bridge busy, the client and oracle in its round trips


def _speed_doc(bridges, cpus):
    return {"host": {"cpus": cpus, "machine": "x86_64", "loadavg_start": 0.5}, "quick": False, "image_size": 224,
            "samples_per_s_inprocess": 80.0, "samples_per_s_ros": 66.0, "ros_over_inprocess": 0.82,
            "bridges_samples_per_s": {str(k): 60.0 + k for k in bridges},
            "query_direct_p50_ms": 1.0, "query_p50_ms": 2.0, "query_p99_ms": 3.0,
            "query_p50_ms_8_clients": 4.0, "query_p99_ms_8_clients": 5.0, "load": {"failed": 0, "lost": 0},
            "fine_tune": {"steps_per_s": 1.0, "score_relations_per_s": 10.0}}


def test_speed_markdown_says_why_bridges_beyond_the_cores_do_not_scale(tmp_path):
    from rls3_ros.bench.speed import write_markdown

    md = tmp_path / "speed.md"
    write_markdown(_speed_doc((1, 2, 4), 2), md)
    text = md.read_text()
    assert "| samples/s with 4 sim_bridge(s) | 64.0 |" in text
    assert "N bridges on 2 cores cannot exceed 2 x one bridge" in text
    write_markdown(_speed_doc((1, 2), 2), md)  # no bridge count beyond the cores: no such line
    assert "cannot exceed" not in md.read_text()


def test_speed_markdown_states_the_cpu_ceiling_of_the_bridges(tmp_path):
    """From the CPU per sample: 2 cores and 8 + 1 + 1 ms per sample allow at most 200 samples/s."""
    from rls3_ros.bench.speed import write_markdown

    doc = _speed_doc((1, 2), 2)
    doc["bridges_samples_per_s"]["1"] = 100.0
    doc["ros"] = {"1": {"cpu_ms_per_sample": {"sim_bridge": 8.0, "caption_oracle": 1.0, "client": 1.0},
                        "cores_busy": 1.0}}
    md = tmp_path / "speed.md"
    write_markdown(doc, md)
    row = next(line for line in md.read_text().splitlines() if line.startswith("| CPU per sample, 1 sim_bridge"))
    assert "sim_bridge 8.0 ms, caption_oracle 1.0 ms, client 1.0 ms" in row
    assert "cores busy 1.00 of 2" in row and "ceiling on 2 cores 200 samples/s = 2.00 x one bridge" in row


def test_speed_markdown_states_the_8_client_latency_outside_the_swap(tmp_path):
    from rls3_ros.bench.speed import write_markdown

    doc = _speed_doc((1, 2), 2)
    md = tmp_path / "speed.md"
    write_markdown(doc, md)
    assert "outside the swap's window" not in md.read_text()  # an older load result: no such row
    doc["load"]["latency_outside_swap"] = {"n": 300, "p50_ms": 40.0, "p99_ms": 70.5}
    write_markdown(doc, md)
    assert "| query p50 / p99 with 8 client processes, outside the swap's window | 40.0 / 70.5 ms |" in md.read_text()
