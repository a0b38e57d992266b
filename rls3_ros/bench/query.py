"""Query latency of the ``spatial_query`` node vs a direct in-process model call.

    python -m rls3_ros.bench.query [--model embedded] [--n 200] [--image-size 128]
                                   [--out results/query_latency.json]

(``cli_query_bench(argv)`` for ``rls3 bench query``.) Three measurements, run in interleaved
rounds so that load from other processes on a shared machine hits them alike:
1. ``direct``: ``answer_query`` on a model loaded in this process (what ``rls3 query`` does);
2. ``node_request_image``: the node in its own process, asked from this process over
   loopback DDS with the image in the request (``SpatialQueryClient.where_is(image=...)``);
3. ``node_camera_frame``: the same, the image published on ``image_raw`` and the request
   carrying no image (the node uses its buffered frame with the requested stamp); the time
   includes the frame's trip over the topic;
4. ``noop_round_trip``: the same client and image requests to a service that answers at once
   (``rls3_ros.bench.noop_query_server``): the floor of the ROS round trip on this machine, so
   the node's own share of its overhead is (node - direct) - this.
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

from rls3_ros.bench.proc_cpu import cpu_seconds
from rls3_ros.vlm.answers import QueryRequest, answer_query, load_model

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


class _Node:
    """The spatial_query node in its own process, plus an in-process client on its domain."""

    def __init__(self, spec: str, adapter: str, workdir: Path, threads: int, ready_timeout: float = 300.0):
        from rls3_ros.ros.isolation import isolated_ros_env

        env = isolated_ros_env(workdir)
        for k, v in env.items():  # this process's client joins the same isolated domain
            if k.startswith(("ROS_", "FASTDDS", "RMW_")):
                os.environ[k] = v
        self.log_path = workdir / "spatial_query.log"
        cmd = [sys.executable, "-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", f"model:={spec}",
               "-p", "follow_adapter_topic:=false", "-p", "image_qos:=reliable", "-p", "frame_buffer:=5",
               "-p", f"torch_threads:={threads}"]
        cmd += ["-p", f"adapter:={adapter}"] if adapter else []
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        t0 = time.monotonic()
        while "model ready" not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() - t0 > ready_timeout:
                self.close()
                raise RuntimeError(f"spatial_query did not get ready:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        self.ready_s = time.monotonic() - t0

        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        from rls3_ros.ros.client import SpatialQueryClient

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("query_bench", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)  # a 2-thread pool added ~0.3 ms per answer (hand-off)
        self.ex.add_node(self.node)
        threading.Thread(target=self.ex.spin, daemon=True).start()
        self.client = SpatialQueryClient(self.node)
        if not self.client.wait_for_service(60):
            raise RuntimeError("query service not available")
        self.noop = subprocess.Popen([sys.executable, "-m", "rls3_ros.bench.noop_query_server"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.noop.stdout.readline()  # "ready"
        self.noop_client = SpatialQueryClient(self.node, service="/noop_query/query")
        if not self.noop_client.wait_for_service(60):
            raise RuntimeError("no-op query service not available")
        self.pub = self.node.create_publisher(Image, "image_raw", 10)
        t0 = time.monotonic()
        while self.pub.get_subscription_count() == 0 and time.monotonic() - t0 < 20:
            time.sleep(0.02)
        self._stamp = 0

    def ask_with_image(self, msg) -> float:
        t = time.perf_counter()
        a = self.client.where_is(SUBJECT, REFERENCE, image=msg, timeout=60)
        dt = time.perf_counter() - t
        if not a.success:
            raise RuntimeError(f"node query failed: {a.message}")
        return dt

    def ask_noop(self, msg) -> float:
        t = time.perf_counter()
        self.noop_client.where_is(SUBJECT, REFERENCE, image=msg, timeout=60)
        return time.perf_counter() - t

    def ask_on_camera_frame(self, msg) -> float:
        from rls3_ros.ros.conversions import ns_to_stamp

        self._stamp += 1
        msg.header.stamp = ns_to_stamp(1_000_000_000 * self._stamp)
        msg.header.frame_id = "camera_optical"
        t = time.perf_counter()
        self.pub.publish(msg)
        while True:  # the frame travels on the topic; a query before it arrives is refused ("no frame")
            a = self.client.where_is(SUBJECT, REFERENCE, header=msg.header, timeout=60)
            if a.success or "no frame" not in a.message or time.perf_counter() - t > 10:
                break
        dt = time.perf_counter() - t
        if not a.success:
            raise RuntimeError(f"node query on a camera frame failed: {a.message}")
        return dt

    def cpu_s(self) -> float:
        """User + system CPU seconds of the node process so far (from /proc)."""
        return cpu_seconds(self.proc.pid)

    def close(self) -> None:
        if hasattr(self, "ex"):
            self.ex.shutdown(timeout_sec=2.0)
            self.node.destroy_node()
            self.ctx.try_shutdown()
        for proc in (self.proc, getattr(self, "noop", None)):
            if proc is None:
                continue
            proc.send_signal(2)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_bench(spec: str, adapter: str, n: int, warmup: int, image_size: int, rounds: int, workdir: Path,
              threads: int = 1, gap_s: float = 0.005) -> Dict:
    """Interleaved rounds (direct, node with image, node on camera frame; order rotated each
    round) so that CPU load from other processes hits the three alike."""
    from rls3_ros.core.image_codec import numpy_to_image_msg

    modes = ("direct", "node_request_image", "node_camera_frame", "noop_round_trip")
    total = n + warmup
    images = {m: [make_image(image_size, seed=k * total + i) for i in range(total)] for k, m in enumerate(modes)}
    msgs = {m: [numpy_to_image_msg(im, "rgb8") for im in images[m]] for m in modes[1:]}
    print(f"starting spatial_query ({spec!r}) in its own process ...", flush=True)
    node = _Node(spec, adapter, workdir, threads)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    try:
        t0 = time.monotonic()
        model = load_model(spec, adapter)
        load_s = time.monotonic() - t0
        req = QueryRequest("where", SUBJECT, REFERENCE)

        def direct(i: int) -> float:
            t = time.perf_counter()
            ans = answer_query(model, images["direct"][i], req)
            dt = time.perf_counter() - t
            if not ans.success:
                raise RuntimeError(f"direct query failed: {ans.message}")
            return dt

        ask = {"direct": direct, "node_request_image": lambda i: node.ask_with_image(msgs["node_request_image"][i]),
               "node_camera_frame": lambda i: node.ask_on_camera_frame(msgs["node_camera_frame"][i]),
               "noop_round_trip": lambda i: node.ask_noop(msgs["noop_round_trip"][i])}
        for m in modes:
            for i in range(n, total):
                ask[m](i)
        lat = {m: [] for m in modes}
        cpu = {m: 0.0 for m in modes}
        per = -(-n // rounds)
        for r in range(rounds):
            order = modes[r % len(modes):] + modes[: r % len(modes)]
            for m in order:
                c0 = time.process_time() + (0.0 if m == "direct" else node.cpu_s())
                for i in range(r * per, min(n, (r + 1) * per)):
                    time.sleep(gap_s)  # every query starts after the same idle gap (fair to the scheduler)
                    lat[m].append(ask[m](i))
                cpu[m] += time.process_time() + (0.0 if m == "direct" else node.cpu_s()) - c0
            print(f"  round {r + 1}/{rounds}: " + "  ".join(f"{m} {1e3 * np.median(lat[m]):.1f} ms" for m in modes), flush=True)
        out = {m: stats(lat[m]) for m in modes}
        for m in modes:  # CPU of this process (+ the node process): load-independent cost per query
            out[m]["cpu_ms_per_query"] = 1e3 * cpu[m] / len(lat[m])
        out["direct"]["model_load_s"] = load_s
        out["node_request_image"]["node_ready_s"] = node.ready_s
        return out
    finally:
        node.close()


def cli_query_bench(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="rls3 bench query", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="grounded")
    p.add_argument("--adapter", default="")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (direct / node / node camera)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in both processes (0 = torch default; >1 stalls on a busy shared CPU)")
    p.add_argument("--out", default="results/query_latency.json")
    p.add_argument("--quick", action="store_true", help="40 queries in 4 rounds (a smoke run)")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.rounds, a.warmup = min(a.n, 40), min(a.rounds, 4), min(a.warmup, 3)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rls3-qbench-") as tmp:
        res = run_bench(a.model, a.adapter, a.n, a.warmup, a.image_size, a.rounds, Path(tmp), a.threads)
    for k, v in res.items():
        print(f"{k}: p50 {v['p50_ms']:.2f} ms  p99 {v['p99_ms']:.2f} ms", flush=True)
    node = {k: v for k, v in res.items() if k not in ("direct", "noop_round_trip")}
    direct = res["direct"]
    result = {
        "what": "latency of one 'where' query: direct in-process model call vs the spatial_query node asked "
                "from another process over loopback DDS (sequential, one query in flight)",
        "method": f"{a.rounds} interleaved rounds of the three modes (order rotated), each query on its own image "
                  "after a 5 ms idle gap; wall latency per query, plus CPU per query (this process + the node "
                  "process, from /proc) which does not depend on the machine's load",
        "model": a.model, "adapter": a.adapter, "image_size": a.image_size, "n": a.n, "warmup": a.warmup,
        "torch_threads": a.threads,
        "direct": direct, **node, "noop_round_trip": res["noop_round_trip"],
        "overhead_p50_ms": {k: node[k]["p50_ms"] - direct["p50_ms"] for k in node},
        "overhead_min_ms": {k: node[k]["min_ms"] - direct["min_ms"] for k in node},
        "overhead_cpu_ms_per_query": {k: node[k]["cpu_ms_per_query"] - direct["cpu_ms_per_query"] for k in node},
        "note": "on a shared, loaded CPU the wall-clock percentiles mostly measure waiting for a core; the "
                "minimum and the CPU per query show the cost of going through the node",
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                 "loadavg_1m_at_start": load0, "loadavg_1m_at_end": os.getloadavg()[0]},
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m rls3_ros.bench.query " + " ".join(argv),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_query_bench(sys.argv[1:]))
