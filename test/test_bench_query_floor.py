"""The query benchmark's four modes against real processes: the spatial_query node (tiny real
VLM), a direct in-process call, and the no-op service that gives the ROS round trip's floor
(``rls3_ros.bench.noop_query_server``), all over isolated loopback DDS."""

from __future__ import annotations

from pathlib import Path

from rls3_ros.bench.query import run_bench

TEST_DIR = str(Path(__file__).resolve().parent)


def test_every_mode_answers(ros_env, tmp_path, monkeypatch):
    """Every mode answers every request with consistent statistics. How the floor compares with the
    node (a speed) is the benchmark's figure (``rls3 bench speed``: "ROS round trip ... that answers
    at once"), not asserted here: a busy machine can delay any single round trip."""
    monkeypatch.setenv("PYTHONPATH", TEST_DIR)  # the node process imports vlm_test_model
    out = run_bench("py:vlm_test_model:load", "", n=6, warmup=2, image_size=32, rounds=2, workdir=tmp_path)
    assert set(out) == {"direct", "node_request_image", "node_camera_frame", "noop_round_trip"}
    for mode, st in out.items():
        assert st["n"] == 6, mode
        assert 0 < st["min_ms"] <= st["p50_ms"] <= st["max_ms"], mode
