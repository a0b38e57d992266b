"""Query latency of the ``spatial_query`` node vs a direct in-process model call.

    python -m rls3_ros.query_bench [--model embedded] [--n 200] [--image-size 128]
                                   [--out results/query_latency.json]

(``cli_query_bench(argv)`` for ``rls3 bench query``.) Three measurements, one after the
other so they do not share the CPU:
1. ``direct``: ``answer_query`` on a model loaded in this process (what ``rls3 query`` does);
2. ``node_request_image``: the node in its own process, asked from this process over
   loopback DDS with the image in the request (``SpatialQueryClient.where_is(image=...)``);
3. ``node_camera_frame``: the same, the image published on ``image_raw`` and the request
   carrying no image (the node uses its buffered frame with the requested stamp); the time
   includes the frame's trip over the topic.
Each: ``--warmup`` untimed queries, then ``--n`` timed sequential ``where`` queries, each on
a different image (models may cache image features by content; a robot asks about new frames).
In the camera-frame run a new frame is published before each query and the request names
its stamp.
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
from typing import Dict, List

import numpy as np

from rls3_ros.spatial_answers import QueryRequest, answer_query, load_model

SUBJECT, REFERENCE = "red box", "blue box"


def make_image(size: int, seed: int = 0) -> np.ndarray:
    """A floor-coloured image with a red and a blue box (any RGB image would do for timing)."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), (180, 170, 150), np.uint8)
    img[: size // 3] = (210, 210, 220)
    for colour in ((200, 40, 40), (40, 70, 210)):
        x, y = rng.integers(size // 8, size - size // 4, 2)
        w = size // 8
        img[y : y + w, x : x + w] = colour
    return img


def stats(lat_s: List[float]) -> Dict[str, float]:
    a = np.asarray(lat_s) * 1e3
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "min_ms": float(a.min()),
            "max_ms": float(a.max())}


def bench_direct(spec: str, adapter: str, images: List[np.ndarray], n: int, warmup: int) -> Dict[str, float]:
    t0 = time.monotonic()
    model = load_model(spec, adapter)
    load_s = time.monotonic() - t0
    req = QueryRequest("where", SUBJECT, REFERENCE)
    for i in range(warmup):
        assert answer_query(model, images[n + i], req).success
    lat = []
    for i in range(n):
        t = time.perf_counter()
        ans = answer_query(model, images[i], req)
        lat.append(time.perf_counter() - t)
        if not ans.success:
            raise RuntimeError(f"direct query failed: {ans.message}")
    out = stats(lat)
    out["model_load_s"] = load_s
    return out


def bench_node(spec: str, adapter: str, images: List[np.ndarray], n: int, warmup: int, workdir: Path,
               ready_timeout: float = 300.0) -> Dict[str, Dict[str, float]]:
    from rls3_ros.ros_isolation import isolated_ros_env

    env = isolated_ros_env(workdir)
    for k, v in env.items():  # this process's client joins the same isolated domain
        if k.startswith(("ROS_", "FASTDDS", "RMW_")):
            os.environ[k] = v
    log_path = workdir / "spatial_query.log"
    cmd = [sys.executable, "-m", "rls3_ros.nodes.spatial_query", "--ros-args", "-p", f"model:={spec}",
           "-p", "follow_adapter_topic:=false", "-p", "image_qos:=reliable"] + (["-p", f"adapter:={adapter}"] if adapter else [])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while "model ready" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() - t0 > ready_timeout:
                raise RuntimeError(f"spatial_query did not get ready:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        ready_s = time.monotonic() - t0
        return _client_runs(images, n, warmup, ready_s)
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _client_runs(images: List[np.ndarray], n: int, warmup: int, ready_s: float) -> Dict[str, Dict[str, float]]:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import Image

    from rls3_ros.client import SpatialQueryClient
    from rls3_ros.nodes.conversions import ns_to_stamp
    from rls3_ros.nodes.image_conversion import numpy_to_image_msg

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("query_bench", context=ctx)
    ex = MultiThreadedExecutor(num_threads=2, context=ctx)
    ex.add_node(node)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        client = SpatialQueryClient(node)
        if not client.wait_for_service(60):
            raise RuntimeError("query service not available")
        results = {}
        msgs = [numpy_to_image_msg(im, "rgb8") for im in images]
        for i in range(warmup):
            assert client.where_is(SUBJECT, REFERENCE, image=msgs[n + i], timeout=60).success
        lat = []
        for i in range(n):
            t = time.perf_counter()
            a = client.where_is(SUBJECT, REFERENCE, image=msgs[i], timeout=60)
            lat.append(time.perf_counter() - t)
            if not a.success:
                raise RuntimeError(f"node query failed: {a.message}")
        results["node_request_image"] = stats(lat)
        results["node_request_image"]["node_ready_s"] = ready_s

        pub = node.create_publisher(Image, "image_raw", 10)
        t0 = time.monotonic()
        while pub.get_subscription_count() == 0 and time.monotonic() - t0 < 20:
            time.sleep(0.02)

        def publish(i: int):
            frame = msgs[i]
            frame.header.stamp = ns_to_stamp(1_000_000_000 * (i + 1))
            frame.header.frame_id = "camera_optical"
            pub.publish(frame)
            return frame.header

        lat = []
        for i in list(range(n, n + warmup)) + list(range(n)):
            header = publish(i)
            t = time.perf_counter()
            while True:  # the frame travels on the topic; a query before it arrives is refused ("no frame")
                a = client.where_is(SUBJECT, REFERENCE, header=header, timeout=60)
                if a.success or "no frame" not in a.message or time.perf_counter() - t > 10:
                    break
            if i < n:
                lat.append(time.perf_counter() - t)
            if not a.success:
                raise RuntimeError(f"node query on a camera frame failed: {a.message}")
        results["node_camera_frame"] = stats(lat)
        return results
    finally:
        ex.shutdown(timeout_sec=2.0)
        node.destroy_node()
        ctx.try_shutdown()


def cli_query_bench(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="rls3 bench query", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--adapter", default="")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--out", default="results/query_latency.json")
    a = p.parse_args(argv)
    images = [make_image(a.image_size, seed) for seed in range(a.n + a.warmup)]
    print(f"direct: {a.n} where-queries on {a.model!r} ...", flush=True)
    direct = bench_direct(a.model, a.adapter, images, a.n, a.warmup)
    print(f"  p50 {direct['p50_ms']:.2f} ms  p99 {direct['p99_ms']:.2f} ms", flush=True)
    with tempfile.TemporaryDirectory(prefix="rls3-qbench-") as tmp:
        print("node: starting spatial_query in its own process ...", flush=True)
        node = bench_node(a.model, a.adapter, images, a.n, a.warmup, Path(tmp))
    for k, v in node.items():
        print(f"{k}: p50 {v['p50_ms']:.2f} ms  p99 {v['p99_ms']:.2f} ms", flush=True)
    result = {
        "what": "latency of one 'where' query: direct in-process model call vs the spatial_query node asked "
                "from another process over loopback DDS (sequential, one query in flight)",
        "model": a.model, "adapter": a.adapter, "image_size": a.image_size, "n": a.n, "warmup": a.warmup,
        "direct": direct, **node,
        "overhead_p50_ms": {k: node[k]["p50_ms"] - direct["p50_ms"] for k in node},
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                 "loadavg_1m_at_end": os.getloadavg()[0]},
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m rls3_ros.query_bench " + " ".join(argv),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_query_bench(sys.argv[1:]))
