"""Simulator speed: raw MuJoCo backend frames/s vs the same through sim_bridge services.

Measures (all on this machine, CPU rendering, no shadows):
- raw render frames/s (RGB + instance segmentation, no depth) at 224² and 448²;
- ``apply`` moves/s at 224² and at 448², raw (in-process backend) and through ``~/apply_action``
  of a sim_bridge in another process started with that ``image_size`` (each answer carries the
  rendered image). Both run the SAME deterministic move sequence from the same scene (seed 0),
  in interleaved rounds, so both do identical simulator work under the same CPU load; the
  ratio ROS / raw at each size is the ROS overhead (plus ms per call);
- a render-only rate through ROS is NOT measured: sim_bridge has no service that renders
  without moving (``reset_scene`` rebuilds the scene, ``apply_action`` moves). What is measured
  instead is the ROS round trip with no simulator work: an ``apply_action`` bad request is
  answered from the last render (scene + full image in the answer, topics published), so it
  is the transport + serialisation cost of one image-carrying call at that size;
- reset seconds, raw and through ``~/reset_scene``.

Other processes share the CPU, so each rate is measured in rounds and reported as best
(~ the machine's speed) and median (~ this run's). Writes results/sim_speed.json and prints
it. ``--quick`` uses fewer frames.

    rls3 bench sim [--quick] [--out results/sim_speed.json]
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
from typing import List, Optional

import numpy as np

ROUNDS = 7


def _summary(rates):
    return {"best": round(max(rates), 1), "median": round(float(np.median(rates)), 1)}


def _move(scene, lo, hi, rng, n):
    """The n-th move of the benchmark sequence (swap every 4th, else place at a random point)."""
    from rls3_ros.sim.backend import PLACE, SWAP, MoveAction

    o = scene.objects[n % 3]
    p = tuple(float(v) for v in rng.uniform(lo, hi))
    yaw = float(rng.uniform(-3, 3))
    return MoveAction(SWAP, o.id) if n % 4 == 0 else MoveAction(PLACE, o.id, position=p, yaw=yaw)


def bench_render(size: int, frames: int) -> dict:
    from rls3_ros.sim.factory import make_backend

    b = make_backend("mujoco", image_size=size, seed=0, render_depth=False)
    try:
        b.reset(0)
        b.render()
        rates = []
        for _ in range(ROUNDS):
            t = time.perf_counter()
            for _ in range(frames):
                b.render()
            rates.append(frames / (time.perf_counter() - t))
        return {"image_size": size, "render_rgb_seg_fps": _summary(rates)}
    finally:
        b.close()


class _RosClient:
    def __init__(self, size: int, root: Path):
        from rls3_ros.ros.isolation import isolated_ros_env

        env = isolated_ros_env(root)
        os.environ.update({k: v for k, v in env.items() if k.startswith(("ROS_", "FASTDDS", "RMW_"))})
        self.log_path = root / "bridge.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rls3_ros.ros.nodes.sim_bridge", "--ros-args", "-r", "__ns:=/bench",
             "-p", f"image_size:={size}", "-p", "seed:=0"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        import rclpy
        from rls3_msgs.srv import ApplyAction, ResetScene

        self.rclpy, self.ApplyAction, self.ResetScene = rclpy, ApplyAction, ResetScene
        rclpy.init()
        self.node = rclpy.create_node("bench_sim_client")
        self.reset_c = self.node.create_client(ResetScene, "/bench/sim_bridge/reset_scene")
        self.apply_c = self.node.create_client(ApplyAction, "/bench/sim_bridge/apply_action")
        if not (self.reset_c.wait_for_service(timeout_sec=60) and self.apply_c.wait_for_service(timeout_sec=60)):
            raise RuntimeError("sim_bridge services did not appear:\n" + self.log_path.read_text()[-2000:])

    def call(self, client, req):
        fut = client.call_async(req)
        self.rclpy.spin_until_future_complete(self.node, fut, timeout_sec=60)
        if fut.result() is None:
            raise RuntimeError("service call timed out")
        return fut.result()

    def reset(self, seed: int):
        from rls3_ros.ros.conversions import msg_to_scene

        r = self.call(self.reset_c, self.ResetScene.Request(seed=seed))
        if not r.success:
            raise RuntimeError(r.message)
        return msg_to_scene(r.scene)

    def apply(self, a):
        from rls3_ros.ros.conversions import msg_to_scene

        req = self.ApplyAction.Request(action_type=a.action_type, object_id=a.object_id)
        if a.position is not None:
            req.target_pose.position.x, req.target_pose.position.y, req.target_pose.position.z = a.position
        req.target_pose.orientation.z = float(np.sin(a.yaw / 2))
        req.target_pose.orientation.w = float(np.cos(a.yaw / 2))
        res = self.call(self.apply_c, req)
        if not res.success:
            raise RuntimeError(res.message)
        return bool(res.valid), msg_to_scene(res.scene)

    def noop(self, object_id: str):
        """A bad request (unknown receptacle): answered from the last render, no simulator work."""
        req = self.ApplyAction.Request(action_type="place", object_id=object_id, receptacle_id="no_such_receptacle")
        res = self.call(self.apply_c, req)
        if res.success or res.image.height == 0:
            raise RuntimeError(f"expected a bad_request answer carrying the image, got {res.message!r}")
        return res

    def close(self):
        self.node.destroy_node()
        self.rclpy.try_shutdown()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def bench_apply(size: int, moves_per_round: int) -> dict:
    from rls3_ros.sim.factory import make_backend

    raw = make_backend("mujoco", image_size=size, seed=0, render_depth=False)
    ros = _RosClient(size, Path(tempfile.mkdtemp(prefix="rls3-bench-sim-")))
    try:
        raw_scene = raw.reset(0)
        ros_scene = ros.reset(0)
        lo, hi = raw.placement_bounds()
        raw_rng, ros_rng = np.random.default_rng(0), np.random.default_rng(0)
        rates = {"raw": [], "ros": [], "ros_noop": []}
        valid = {"raw": 0, "ros": 0}
        n_raw = n_ros = 0
        for _ in range(ROUNDS):
            t = time.perf_counter()
            for _ in range(moves_per_round):
                res = raw.apply(_move(raw_scene, lo, hi, raw_rng, n_raw))
                raw_scene = res.scene
                valid["raw"] += res.valid
                n_raw += 1
            rates["raw"].append(moves_per_round / (time.perf_counter() - t))
            t = time.perf_counter()
            for _ in range(moves_per_round):
                ok, ros_scene = ros.apply(_move(ros_scene, lo, hi, ros_rng, n_ros))
                valid["ros"] += ok
                n_ros += 1
            rates["ros"].append(moves_per_round / (time.perf_counter() - t))
            t = time.perf_counter()
            for _ in range(moves_per_round):
                ros.noop(ros_scene.objects[0].id)
            rates["ros_noop"].append(moves_per_round / (time.perf_counter() - t))
        t = time.perf_counter()
        for k in range(3):
            raw.reset(100 + k)
        raw_reset = (time.perf_counter() - t) / 3
        t = time.perf_counter()
        for k in range(3):
            ros.reset(100 + k)
        ros_reset = (time.perf_counter() - t) / 3
        return {
            "image_size": size,
            "moves": n_raw,
            "raw_apply_per_s": _summary(rates["raw"]),
            "ros_apply_per_s": _summary(rates["ros"]),
            "ratio_ros_over_raw": {"best": round(max(rates["ros"]) / max(rates["raw"]), 3),
                                   "median": round(float(np.median(np.array(rates["ros"]) / np.array(rates["raw"]))), 3)},
            "ros_overhead_ms_per_call": {
                "best": round(1000 * (1 / max(rates["ros"]) - 1 / max(rates["raw"])), 2),
                "median": round(1000 * float(np.median(1 / np.array(rates["ros"]) - 1 / np.array(rates["raw"]))), 2)},
            "ros_call_without_sim_per_s": _summary(rates["ros_noop"]),
            "valid_fraction": {"raw": round(valid["raw"] / n_raw, 3), "ros": round(valid["ros"] / n_ros, 3)},
            "reset_s": {"raw": round(raw_reset, 3), "ros": round(ros_reset, 3)},
        }
    finally:
        raw.close()
        ros.close()


def cli_bench_sim(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="rls3 bench sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer frames (CI smoke run)")
    p.add_argument("--out", default="results/sim_speed.json")
    a = p.parse_args(argv)
    per_round = 8 if a.quick else 40
    load0 = round(os.getloadavg()[0], 2)
    r224 = bench_render(224, per_round)
    r448 = bench_render(448, max(per_round // 2, 4))
    app = bench_apply(224, per_round)
    app448 = bench_apply(448, max(per_round // 2, 4))
    result = {
        "what": "MuJoCo backend speed: raw render, and apply raw vs through sim_bridge services from another process",
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": load0,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "mujoco_gl": os.environ.get("MUJOCO_GL", "egl"),
        "render_224": r224,
        "render_448": r448,
        "apply_224": app,
        "apply_448": app448,
        "ratio_ros_over_raw_apply": {"224": app["ratio_ros_over_raw"], "448": app448["ratio_ros_over_raw"]},
        "render_only_via_ros": "not measured: sim_bridge offers no service that renders without moving "
                               "(reset_scene rebuilds the scene, apply_action moves); ros_call_without_sim_per_s is "
                               "the image-carrying round trip with no simulator work (a bad request answered from "
                               "the last render)",
        "rounds": ROUNDS,
        "note": "render = RGB + instance segmentation (no depth, no shadows). apply = settle physics + validity "
                "segmentation + unoccluded render of the moved object + RGB of valid results; raw and ROS run the "
                "same deterministic move sequence in interleaved rounds (448: half the moves per round). "
                "best ~ machine speed, median ~ this run.",
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0
