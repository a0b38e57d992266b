"""The query graph across processes: ``rls3 launch query --with-sim`` starts a sim_bridge (a demo
camera) and spatial_query from config/query.yaml; a client answers "where is A relative to B?"
on the bridge's latest frame; Ctrl-C stops both."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from ros_harness import NodeProcess, call_service, poll_until

TEST_DIR = Path(__file__).resolve().parent


def test_query_graph_answers_on_the_camera_frame(ros_env, tmp_path, rclpy_node):
    from rls3_msgs.srv import ResetScene, SpatialQuery

    env = dict(ros_env)
    env["PYTHONPATH"] = os.pathsep.join([str(TEST_DIR), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    args = ["-m", "rls3_ros.ros.launcher", "query", "--with-sim", "--set", "spatial_query.model=py:vlm_test_model:load",
            "--set", "sim_bridge.image_size=64", "--set", "spatial_query.image_qos=reliable",
            "--set", "sim_bridge.image_qos=reliable"]
    with NodeProcess(args, env, "launch_query") as p:
        p.wait_for_output(r"\[spatial_query\].*model ready", timeout=90)
        p.wait_for_output(r"\[sim_bridge\].*ready", timeout=60)
        # a new frame after both are up, so the query node has one buffered
        reset = call_service(rclpy_node, ResetScene, "/sim_bridge/reset_scene", ResetScene.Request(seed=7), timeout=30)
        assert reset.success, reset.message
        names = [o.description for o in reset.scene.objects if o.active]
        req = SpatialQuery.Request(query_type="where", subject=names[0], reference=names[1])

        def answered():
            r = call_service(rclpy_node, SpatialQuery, "/spatial_query/query", req, timeout=30)
            return r if r.success else None

        resp = poll_until(answered, 30, "a where-answer on the camera frame", interval=0.5)
        assert resp.terms and resp.answer and 0.0 <= resp.confidence <= 1.0
        assert resp.header.stamp == reset.scene.header.stamp  # answered on that frame
        out = p.output()
        pids = [int(m) for m in re.findall(r"\[launch\] started \S+ \(pid (\d+)\)", out)]
        assert len(pids) == 2
        p.proc.send_signal(signal.SIGINT)
        assert p.wait(timeout=40) == 130
    for pid in pids:
        poll_until(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
                   15, f"node {pid} to exit")


def test_ctrl_c_stops_a_launcher_started_with_sigint_ignored(ros_env, tmp_path):
    """A shell's background job (`rls3 launch query &`) starts with SIGINT ignored; Ctrl-C must still stop the graph."""
    args = ["-m", "rls3_ros.ros.launcher", "query", "--set", "spatial_query.model=py:no_such_module:load"]
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    with NodeProcess(args, dict(ros_env), "launch_sigign", preexec_fn=ignore_sigint) as p:
        p.wait_for_output(r"\[spatial_query\].*not available", timeout=60)  # the node is up (and waits for a model)
        pids = [int(m) for m in re.findall(r"\[launch\] started \S+ \(pid (\d+)\)", p.output())]
        p.proc.send_signal(signal.SIGINT)
        assert p.wait(timeout=40) == 130
        assert "interrupted: stopping every node" in p.output()
    for pid in pids:
        poll_until(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
                   15, f"node {pid} to exit")
