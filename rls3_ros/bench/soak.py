"""Soak benchmark of ``sim_bridge``: many resets and moves, the bridge's resident memory over time.

    rls3 bench soak [--ops 1000] [--image-size 64] [--reset-every 4] [--no-trim]
                    [--out results/soak_sim_bridge.json]
    python -m rls3_ros.bench.soak ...            (same; ``cli_bench_soak(argv)``)

One ``sim_bridge`` process (MuJoCo) in an isolated ROS domain; this process calls its services
``--ops`` times: every ``--reset-every``-th call is ``~/reset_scene`` with a new seed (a new
room: new model, textures, renderer), the others ``~/apply_action`` (a swap of an active object
with a container object: physics, render, image in the answer). The bridge's VmRSS is sampled
every ``--sample-every`` calls. Reported: RSS at start (after the startup scene), after the
warm-up (the first 10 % of the calls), max and end; the growth after the warm-up; the mean RSS
of the last quarter of the calls minus that of the second quarter (the trend); the slope of a
line fitted to the second half [MB per 100 calls]; failed calls; calls/s.

``--no-trim`` starts the bridge with ``trim_memory:=false`` and ``MALLOC_ARENA_MAX=16`` (glibc's
default on 2 cores): the memory behaviour before issue 17's fix, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from rls3_ros.bench.proc_cpu import rss_mb
from rls3_ros.core.share_dir import SOURCE_ROOT

RESET = "/sim_bridge/reset_scene"
APPLY = "/sim_bridge/apply_action"




def summarise(series: List[List[float]], warmup_op: int) -> Dict[str, float]:
    """Figures of an RSS series [[op, MB], ...] (see module docstring)."""
    ops = np.array([s[0] for s in series], float)
    mb = np.array([s[1] for s in series], float)
    after = mb[ops >= warmup_op] if np.any(ops >= warmup_op) else mb[-1:]
    warm = float(after[0])
    half = ops >= ops[-1] / 2
    slope = float(np.polyfit(ops[half], mb[half], 1)[0] * 100) if half.sum() >= 3 else float("nan")
    q2 = mb[(ops >= ops[-1] / 4) & (ops < ops[-1] / 2)]
    q4 = mb[ops >= 3 * ops[-1] / 4]
    trend = float(q4.mean() - q2.mean()) if len(q2) and len(q4) else float("nan")
    return {"rss_mb_start": round(float(mb[0]), 1), "rss_mb_after_warmup": round(warm, 1),
            "rss_mb_max": round(float(mb.max()), 1), "rss_mb_end": round(float(mb[-1]), 1),
            "growth_after_warmup_mb": round(float(after.max()) - warm, 1),
            "last_minus_second_quarter_mb": round(trend, 1),
            "slope_second_half_mb_per_100_ops": round(slope, 2)}


def run_soak(ops: int = 1000, image_size: int = 64, reset_every: int = 4, trim: bool = True, sample_every: int = 10,
             workdir: Optional[str] = None, log=print, timeout: float = 60.0) -> Dict[str, Any]:
    """Run the soak (see module docstring); returns the result dict."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rls3_msgs.srv import ApplyAction, ResetScene

    from rls3_ros.ros.service_qos import SERVICE_QOS
    from rls3_ros.ros.isolation import isolated_ros_env

    if ops < 1 or reset_every < 1 or sample_every < 1:
        raise ValueError("ops, reset_every and sample_every must be >= 1")
    tmp_ctx = tempfile.TemporaryDirectory(prefix="rls3-soak-") if workdir is None else None
    root = Path(workdir or tmp_ctx.name)
    root.mkdir(parents=True, exist_ok=True)
    env = isolated_ros_env(root)
    env["PYTHONPATH"] = os.pathsep.join([p for p in (str(SOURCE_ROOT), env.get("PYTHONPATH", "")) if p])
    args = [sys.executable, "-m", "rls3_ros.ros.nodes.sim_bridge", "--ros-args", "-p", f"image_size:={image_size}",
            "-p", "image_qos:=reliable"]
    if not trim:
        args += ["-p", "trim_memory:=false"]
        env["MALLOC_ARENA_MAX"] = "16"
    saved = {k: os.environ.get(k) for k in env if k.startswith(("ROS_", "FASTDDS", "RMW_"))}
    os.environ.update({k: env[k] for k in saved})
    node_log = open(root / "sim_bridge.log", "wb")
    proc = subprocess.Popen(args, env=env, stdout=node_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    ctx = rclpy.Context()
    rclpy.init(args=["rls3 bench soak"], context=ctx)
    node = rclpy.create_node("soak_client", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    reset_c = node.create_client(ResetScene, RESET, qos_profile=SERVICE_QOS)
    apply_c = node.create_client(ApplyAction, APPLY, qos_profile=SERVICE_QOS)

    def call(client, req):
        done = threading.Event()
        fut = client.call_async(req)
        fut.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            client.remove_pending_request(fut)
            return None
        return fut.result()

    series: List[List[float]] = []
    failed: List[str] = []
    counts = {"reset": 0, "apply": 0, "valid_moves": 0}
    try:
        deadline = time.monotonic() + 120
        while "sim_bridge ready" not in (root / "sim_bridge.log").read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sim_bridge did not start:\n{(root / 'sim_bridge.log').read_text()[-2000:]}")
            time.sleep(0.05)
        if not (reset_c.wait_for_service(timeout_sec=30) and apply_c.wait_for_service(timeout_sec=30)):
            raise RuntimeError("sim_bridge services not available")
        series.append([0, rss_mb(proc.pid)])
        active: List[str] = []
        t0 = time.monotonic()
        for i in range(ops):
            if i % reset_every == 0:
                r = call(reset_c, ResetScene.Request(seed=1000 + i))
                counts["reset"] += 1
                if r is None or not r.success:
                    failed.append(f"reset {i}: {'no answer' if r is None else r.message}")
                else:
                    active = [o.id for o in r.scene.objects if o.active]
            else:
                req = ApplyAction.Request(action_type="swap", object_id=active[i % len(active)] if active else "")
                r = call(apply_c, req)
                counts["apply"] += 1
                if r is None or not r.success:
                    failed.append(f"apply {i}: {'no answer' if r is None else r.message}")
                else:
                    counts["valid_moves"] += int(r.valid)
                    active = [o.id for o in r.scene.objects if o.active]
            if (i + 1) % sample_every == 0 or i + 1 == ops:
                series.append([i + 1, rss_mb(proc.pid)])
            if proc.poll() is not None:
                raise RuntimeError(f"sim_bridge died at call {i}:\n{(root / 'sim_bridge.log').read_text()[-2000:]}")
        wall = time.monotonic() - t0
    finally:
        ex.shutdown(timeout_sec=2.0)
        node.destroy_node()
        ctx.try_shutdown()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        node_log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    res: Dict[str, Any] = {
        "ops": ops, "image_size": image_size, "reset_every": reset_every, "trim_memory": trim,
        "calls": counts, "failed": len(failed), "failures": failed[:20], "wall_s": round(wall, 1),
        "ops_per_s": round(ops / wall, 2), "rss_series_mb": [[int(o), round(m, 1)] for o, m in series],
        "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), load average at end {os.getloadavg()[0]:.1f}",
    }
    res.update(summarise(series, warmup_op=max(1, ops // 10)))
    log(f"sim_bridge soak ({'trim' if trim else 'no trim'}): {ops} calls ({counts['reset']} resets, "
        f"{counts['apply']} moves) in {wall:.0f} s, {len(failed)} failed; RSS {res['rss_mb_start']:.0f} -> "
        f"{res['rss_mb_after_warmup']:.0f} (after warm-up) -> max {res['rss_mb_max']:.0f}, end {res['rss_mb_end']:.0f} MB; "
        f"second-half slope {res['slope_second_half_mb_per_100_ops']:+.1f} MB / 100 calls")
    return res


def cli_bench_soak(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="rls3 bench soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=1000, help="service calls (default 1000)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--reset-every", type=int, default=4, help="every N-th call is a reset (default 4)")
    p.add_argument("--sample-every", type=int, default=10)
    p.add_argument("--no-trim", action="store_true", help="the pre-fix memory settings, for comparison")
    p.add_argument("--quick", action="store_true", help="200 calls")
    p.add_argument("--out", default="results/soak_sim_bridge.json", help="JSON output ('' = none)")
    a = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    res = run_soak(ops=200 if a.quick else a.ops, image_size=a.image_size, reset_every=a.reset_every,
                   trim=not a.no_trim, sample_every=a.sample_every)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            doc = json.loads(out.read_text())
        except (OSError, ValueError):
            doc = {}
        doc["trim" if not a.no_trim else "no_trim"] = res
        out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(f"wrote {out}")
    return 0 if res["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(cli_bench_soak())
