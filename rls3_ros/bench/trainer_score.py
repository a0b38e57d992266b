"""How long the vlm_trainer takes to answer ScoreSamples (the loop's reward), idle and while it
trains: a real vlm_trainer process over isolated loopback DDS, one sample per request, first with
no fine-tune running, then while a long fine-tune goal runs (cancelled afterwards).

The node scores on its own callback group while a fine-tune runs: test_vlm_nodes.py shows that it
answers during a fine-tune; how fast is this benchmark's figure (``rls3 bench speed``), since a
test on a busy machine cannot bound it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from rls3_ros.bench.query import stats


def captioned_renders(image_size: int, n: int, seed: int = 0, prefix: str = "sc") -> List[Any]:
    """``n`` captioned samples from valid random moves in MuJoCo scenes (ids ``<prefix><k>``)."""
    from rls3_ros.bench.generation import random_moves
    from rls3_ros.captions.oracle import CaptionOracle
    from rls3_ros.core.scene import Sample
    from rls3_ros.sim.factory import make_backend

    backend = make_backend("mujoco", image_size=image_size, seed=seed)
    oracle = CaptionOracle()
    samples: List[Sample] = []
    try:
        s = 0
        while len(samples) < n:
            scene = backend.reset(seed + s)
            for mv in random_moves(scene, backend.placement_bounds(), np.random.default_rng(s), 6):
                active = [o.id for o in backend.state().active_objects()]
                if mv.object_id not in active:
                    mv.object_id = active[0]
                res = backend.apply(mv)
                if res.valid:
                    rels = oracle.caption_scene(res.scene)
                    if rels:
                        samples.append(Sample(f"{prefix}{len(samples)}", res.render.rgb, res.scene, rels))
            s += 1
    finally:
        backend.close()
    return samples[:n]


def _wait(future, timeout: float, what: str):
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    if not done.wait(timeout):
        raise RuntimeError(f"no {what} within {timeout:.0f} s")
    return future.result()


def bench_score_during_fine_tune(model: str, samples: Sequence[Any], n: int, workdir: Path,
                                 ready_timeout: float = 600.0, call_timeout: float = 300.0) -> Dict[str, Any]:
    """ScoreSamples latency (one sample per request, ``n`` requests) of a vlm_trainer running
    ``model``: ``idle`` and ``during_fine_tune`` (a goal of 100,000 steps on ``samples``, the node's
    default max_steps, cancelled after the last answer; ``fine_tune_steps_during`` counts the steps
    it made while the scores were asked)."""
    from rls3_ros.ros.isolation import isolated_ros_env

    workdir = Path(workdir)
    env = isolated_ros_env(workdir)
    for k, v in env.items():  # this process's client joins the same isolated domain
        if k.startswith(("ROS_", "FASTDDS", "RMW_")):
            os.environ[k] = v
    log_path = workdir / "vlm_trainer.log"
    cmd = [sys.executable, "-m", "rls3_ros.ros.nodes.vlm_trainer", "--ros-args", "-p", f"model:={model}",
           "-p", f"adapter_dir:={workdir / 'adapters'}"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    ctx = ex = None
    try:
        t0 = time.monotonic()
        while "vlm_trainer ready" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() - t0 > ready_timeout:
                raise RuntimeError(f"vlm_trainer did not get ready:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)

        import rclpy
        from rls3_ros.ros.rosutil import SpinSafeActionClient
        from rclpy.executors import MultiThreadedExecutor
        from rls3_msgs.action import FineTune
        from rls3_msgs.srv import ScoreSamples

        from rls3_ros.ros.conversions import sample_to_msg

        ctx = rclpy.Context()
        rclpy.init(context=ctx)
        node = rclpy.create_node("score_bench", context=ctx)
        ex = MultiThreadedExecutor(num_threads=2, context=ctx)
        ex.add_node(node)
        threading.Thread(target=ex.spin, daemon=True).start()
        score = node.create_client(ScoreSamples, "/vlm_trainer/score_samples")
        fine_tune = SpinSafeActionClient(node, FineTune, "/vlm_trainer/fine_tune")
        if not score.wait_for_service(timeout_sec=60) or not fine_tune.wait_for_server(timeout_sec=60):
            raise RuntimeError("vlm_trainer services not available")
        msgs = [sample_to_msg(s) for s in samples]

        def scores(k: int) -> List[float]:
            lat = []
            for i in range(k):
                t = time.perf_counter()
                r = _wait(score.call_async(ScoreSamples.Request(samples=[msgs[i % len(msgs)]])), call_timeout, "score")
                lat.append(time.perf_counter() - t)
                if not r.success:
                    raise RuntimeError(f"score failed: {r.message}")
            return lat

        scores(min(3, len(msgs)))  # warm-up: the first requests match the reader, fill the feature cache
        idle = scores(n)
        feedback: List[int] = []
        goal = FineTune.Goal(iteration=1, steps=100_000, use_buffer=False, samples=msgs)
        handle = _wait(fine_tune.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback.step)),
                       call_timeout, "goal acceptance")
        if not handle.accepted:
            raise RuntimeError("the fine-tune goal was rejected")
        result = handle.get_result_async()
        t0 = time.monotonic()
        while len(feedback) < 2:  # training is under way
            if result.done():
                raise RuntimeError(f"the fine-tune goal ended at once: {result.result().result.message}")
            if time.monotonic() - t0 > call_timeout:
                raise RuntimeError("no fine-tune feedback")
            time.sleep(0.05)
        first_step = feedback[-1]
        during = scores(n)
        steps_during = feedback[-1] - first_step
        _wait(handle.cancel_goal_async(), call_timeout, "cancel response")
        _wait(result, call_timeout, "cancelled result")
        return {"model": model, "n": n, "idle": stats(idle), "during_fine_tune": stats(during),
                "fine_tune_steps_during": int(steps_during)}
    finally:
        if ex is not None:
            ex.shutdown(timeout_sec=2.0)
        if ctx is not None:
            ctx.try_shutdown()
        proc.send_signal(2)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
