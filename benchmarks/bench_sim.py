"""Simulator speed: raw MuJoCo backend frames/s vs the same through sim_bridge services.

Measures (all on this machine, CPU rendering):
- raw render frames/s (RGB + instance segmentation, no depth) at 224² and 448²;
- raw ``apply`` moves/s at 224² (physics settle + validity renders + the result frame);
- through ROS: ``~/apply_action`` calls/s answered by a sim_bridge in another process
  (each answer carries the rendered image), and ``~/reset_scene`` calls/s;
- ratio ROS / raw for the same work (apply at 224²).

Writes results/sim_speed.json and prints it. ``--quick`` uses fewer frames.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _moves(scene, lo, hi, rng, n):
    from rls3_ros.sim.backend import PLACE, SWAP, MoveAction

    out = []
    for i in range(n):
        o = scene.objects[i % 3]
        if i % 4 == 0:
            out.append(MoveAction(SWAP, o.id))
        else:
            out.append(MoveAction(PLACE, o.id, position=tuple(rng.uniform(lo, hi)), yaw=float(rng.uniform(-3, 3))))
    return out


def bench_raw(size: int, frames: int) -> dict:
    from rls3_ros.sim.factory import make_backend

    b = make_backend("mujoco", image_size=size, seed=0, render_depth=False)
    try:
        b.reset(0)
        b.render()
        t = time.perf_counter()
        for _ in range(frames):
            b.render()
        render_fps = frames / (time.perf_counter() - t)
        out = {"image_size": size, "render_rgb_seg_fps": round(render_fps, 1)}
        if size == 224:
            rng = np.random.default_rng(0)
            lo, hi = b.placement_bounds()
            n, valid = 0, 0
            t = time.perf_counter()
            while n < frames:
                s = b.state()
                for a in _moves(s, lo, hi, rng, 1):
                    a.object_id = s.objects[n % 3].id
                    valid += b.apply(a).valid
                    n += 1
            out["apply_per_s"] = round(n / (time.perf_counter() - t), 1)
            out["apply_valid_fraction"] = round(valid / n, 3)
            t = time.perf_counter()
            for k in range(5):
                b.reset(100 + k)
            out["reset_s"] = round((time.perf_counter() - t) / 5, 3)
        return out
    finally:
        b.close()


def bench_ros(size: int, calls: int) -> dict:
    from rls3_ros.ros_isolation import isolated_ros_env

    root = Path(tempfile.mkdtemp(prefix="rls3-bench-sim-"))
    env = isolated_ros_env(root)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("ROS_", "FASTDDS", "RMW_"))})
    log = open(root / "bridge.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "rls3_ros.nodes.sim_bridge", "--ros-args", "-r", "__ns:=/bench",
                             "-p", f"image_size:={size}", "-p", "seed:=0"], env=env, stdout=log, stderr=subprocess.STDOUT)
    import rclpy
    from rls3_msgs.srv import ApplyAction, ResetScene

    rclpy.init()
    node = rclpy.create_node("bench_sim_client")
    try:
        reset = node.create_client(ResetScene, "/bench/sim_bridge/reset_scene")
        apply = node.create_client(ApplyAction, "/bench/sim_bridge/apply_action")
        if not (reset.wait_for_service(timeout_sec=60) and apply.wait_for_service(timeout_sec=60)):
            raise RuntimeError("sim_bridge services did not appear:\n" + (root / "bridge.log").read_text()[-2000:])

        def call(client, req):
            fut = client.call_async(req)
            rclpy.spin_until_future_complete(node, fut, timeout_sec=60)
            if fut.result() is None:
                raise RuntimeError("service call timed out")
            return fut.result()

        r = call(reset, ResetScene.Request(seed=0))
        from rls3_ros.nodes.conversions import msg_to_scene

        scene = msg_to_scene(r.scene)
        bounds = (np.array([-1.2, -0.6, 0.0]), np.array([1.2, 1.2, 1.3]))
        rng = np.random.default_rng(0)
        n, valid = 0, 0
        t = time.perf_counter()
        while n < calls:
            a = _moves(scene, *bounds, rng, 1)[0]
            a.object_id = scene.objects[n % 3].id
            req = ApplyAction.Request(action_type=a.action_type, object_id=a.object_id)
            if a.position is not None:
                req.target_pose.position.x, req.target_pose.position.y, req.target_pose.position.z = a.position
            req.target_pose.orientation.w = 1.0
            res = call(apply, req)
            valid += res.valid
            scene = msg_to_scene(res.scene)
            n += 1
        apply_rate = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for k in range(5):
            call(reset, ResetScene.Request(seed=100 + k))
        reset_s = (time.perf_counter() - t) / 5
        return {"image_size": size, "apply_per_s": round(apply_rate, 1), "apply_valid_fraction": round(valid / n, 3),
                "reset_s": round(reset_s, 3)}
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer frames (CI smoke run)")
    p.add_argument("--out", default=str(REPO / "results" / "sim_speed.json"))
    a = p.parse_args(argv)
    frames = 30 if a.quick else 200
    raw224 = bench_raw(224, frames)
    raw448 = bench_raw(448, frames // 2)
    ros = bench_ros(224, frames // 2)
    result = {
        "what": "MuJoCo backend speed, raw (in-process) vs through sim_bridge services from another process",
        "cpu_count": os.cpu_count(),
        "mujoco_gl": os.environ.get("MUJOCO_GL", "egl"),
        "raw_224": raw224,
        "raw_448": raw448,
        "ros_224": ros,
        "ratio_ros_over_raw_apply_224": round(ros["apply_per_s"] / raw224["apply_per_s"], 3),
        "frames": frames,
        "note": "render fps = RGB + instance segmentation, no depth, no shadows; apply = settle physics + "
                "validity segmentation + unoccluded render of the moved object + RGB of valid results",
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
