"""Train what you serve, across processes: ``rls3 launch training`` and a ``spatial_query`` node on one
domain. The query server switches to every adapter that passed the promotion gate and to no other:
the adapters announced on the adapter topic are exactly the promoted ones, in order, and the query
server ends up answering with the last promoted adapter (or the base when none passed)."""

from __future__ import annotations

import os
from pathlib import Path

from ros_harness import NodeProcess, deadline, poll_until
from tiny_training_graph import tiny_training_override

TEST_DIR = Path(__file__).resolve().parent


def test_query_server_serves_promoted_adapters_only(ros_env, tmp_path, rclpy_node):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rls3_msgs.msg import AdapterInfo

    from rls3_ros.loop.run_dir import RunDir
    from rls3_ros.loop.serving import read_served
    from rls3_ros.ros.client import SpatialQueryClient

    env = dict(ros_env)
    env["PYTHONPATH"] = os.pathsep.join([str(TEST_DIR), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    env["RLS3_CACHE"] = str(tmp_path / "cache")
    run_dir = tmp_path / "run"
    announced = []
    rclpy_node.create_subscription(AdapterInfo, "/adapter", lambda m: announced.append(m.path), QoSProfile(
        depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    model = "py:vlm_test_model:load_scripted_gate"  # real peft adapters; which relations each iteration gets right is scripted
    query = ["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", f"model:={model}",
             "-p", f"adapter_roots:=['{run_dir}']", "-p", "image_qos:=reliable"]
    with NodeProcess(query, env, "spatial_query", log_dir=tmp_path) as q:
        q.wait_for_output("model ready", deadline(90))
        params = tmp_path / "override.yaml"
        # gate_alpha 0.99: a candidate with more validation relations gained than lost is promoted
        params.write_text(tiny_training_override("random", 30, gate_alpha=0.99).replace(
            '"py:vlm_test_model:load"', f'"{model}"'))
        args = ["-m", "rls3_ros.ros.launcher", "training", "--params-file", str(params), "--run-dir", str(run_dir),
                "--timeout", str(int(deadline(200)))]
        with NodeProcess(args, env, "launch_training") as p:
            code = p.wait(timeout=deadline(220))
            out = p.output()
        assert code == 0, out[-4000:]
        its = [m for m in RunDir(str(run_dir)).read_metrics() if m["type"] == "iteration" and m["iteration"] > 0]
        assert its and all(m["gate"] for m in its), "every fine-tune went through the gate"
        promoted = [m["adapter_path"] for m in its if m["gate"]["promoted"]]
        refused = [m["adapter_path"] for m in its if not m["gate"]["promoted"]]
        # the script: iterations 2, 4, 6 answer more validation relations than what is served, 1, 3, 5, 7 not
        expected = [m["iteration"] for m in its if m["iteration"] in (2, 4, 6)]
        assert [m["iteration"] for m in its if m["gate"]["promoted"]] == expected and len(expected) >= 2, \
            [m["gate"] for m in its]
        assert refused
        # announced on the adapter topic: exactly the promoted adapters, in order
        poll_until(lambda: len(announced) >= len(promoted), deadline(30), "announcements of the promoted adapters")
        assert announced == promoted
        assert not set(announced) & set(refused)
        assert read_served(str(run_dir))["adapter"] == promoted[-1]
        # the query server answers with the last promoted adapter
        client = SpatialQueryClient(rclpy_node, service="/spatial_query/query")
        import numpy as np

        img = np.zeros((64, 64, 3), np.uint8)
        img[10:30, 5:25] = (220, 30, 30)
        img[35:55, 35:55] = (30, 30, 220)

        def serving_last():
            a = client.where_is("red square", "blue square", image=img)
            return a if a.success and a.adapter == promoted[-1] else None

        poll_until(serving_last, deadline(60), "the query server to serve the last promoted adapter", interval=0.5)
        assert not any(r in q.output() for r in refused), "the query server saw a refused adapter"
