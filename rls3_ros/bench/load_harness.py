"""What the load benchmarks (``rls3_ros.bench.load``, ``rls3_ros.bench.load_big``) share: the
``spatial_query`` node process under test (started, waited for, stopped), an isolated ROS root for a
run, an in-process node for the benchmark's own calls, and the latency statistics.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Dict, Iterator, List, Optional, Tuple

import numpy as np

from rls3_ros.core.share_dir import SOURCE_ROOT
from rls3_ros.ros.service_qos import SERVICE_QOS

QUERY_SERVICE = "/spatial_query/query"
SUBJECT, REFERENCE, OTHER = "red box", "blue box", "green box"


def latency_stats(lat_s: List[float]) -> Dict[str, float]:
    if not lat_s:
        return {"n": 0}
    a = np.asarray(lat_s) * 1e3
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p90_ms": round(float(np.percentile(a, 90)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "mean_ms": round(float(a.mean()), 2), "max_ms": round(float(a.max()), 2)}




def resolve_model(spec: str) -> str:
    """``embedded`` without a pretrained cache -> ``embedded:random`` (same cost, see docstring)."""
    if spec.strip() != "embedded":
        return spec
    try:
        from rls3_ros.vlm.factory import embedded_base_dir

        embedded_base_dir(must_exist=True)
        return spec
    except Exception:  # noqa: BLE001 - not pretrained here
        return "embedded:random"


def bench_root(workdir: Optional[str], prefix: str):
    """(temp dir or None, the benchmark's root directory, an isolated ROS env for its processes)."""
    from rls3_ros.ros.isolation import isolated_ros_env

    tmp_ctx = tempfile.TemporaryDirectory(prefix=prefix) if workdir is None else None
    root = Path(workdir or tmp_ctx.name)
    root.mkdir(parents=True, exist_ok=True)
    env = isolated_ros_env(root)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join([p for p in (env.get("PYTHONPATH", ""), str(SOURCE_ROOT)) if p])
    return tmp_ctx, root, env


def spun_node(env: Dict[str, str], name: str):
    """(context, node, executor) of a node in this process, in the isolated domain of ``env`` (its ROS
    variables applied only while the context starts), spun in a daemon thread."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from rls3_ros.ros.isolation import ros_env_applied

    ctx = rclpy.Context()
    with ros_env_applied(env):
        rclpy.init(context=ctx)
    node = rclpy.create_node(name, context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    return ctx, node, ex


def stop_all(procs, ctx, ex, rnode, node, node_log, tmp_ctx) -> None:
    """End a benchmark's client processes, its in-process ROS context and node, the node under test (SIGINT,
    then kill) and its log and temp directory."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    if ctx is not None:
        try:
            ex.shutdown(timeout_sec=2.0)
            rnode.destroy_node()
        except Exception:  # noqa: BLE001
            pass
        ctx.try_shutdown()
    if node.poll() is None:
        node.send_signal(2)
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
    node_log.close()
    if tmp_ctx is not None:
        tmp_ctx.cleanup()


def start_query_node(root: Path, env: Dict[str, str], spec: str, *params: str) -> Tuple[subprocess.Popen, IO]:
    """(process, its open log) of a ``spatial_query`` node serving ``spec`` (no adapter topic, reliable
    images) with ``params`` (more ``-p name:=value`` arguments), logging to ``root/spatial_query.log``."""
    node_log = open(root / "spatial_query.log", "wb")
    node = subprocess.Popen([sys.executable, "-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args",
                             "-p", f"model:={spec}", "-p", "follow_adapter_topic:=false", "-p", "image_qos:=reliable",
                             *params], env=env, stdout=node_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return node, node_log


def wait_for_model_ready(node: subprocess.Popen, root: Path, timeout: float = 180.0) -> None:
    """Poll the node's log (``root/spatial_query.log``) until it says "model ready"; raise with the log's
    tail when the node exits or ``timeout`` seconds pass first."""
    log_path = root / "spatial_query.log"
    deadline = time.monotonic() + timeout
    while b"model ready" not in log_path.read_bytes():
        if node.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("spatial_query did not get ready:\n" + log_path.read_text(errors="replace")[-3000:])
        time.sleep(0.1)


@contextlib.contextmanager
def query_client(name: str, service: str, records_file: str) -> Iterator[Tuple[object, List[list]]]:
    """In a client process: (a SpatialQuery client of ``service`` on node ``name``, spun in a daemon
    thread, the service found within 60 s; the list the caller records its queries in). On leaving, the
    records are written to ``records_file`` (JSON) whatever happened, and the node ends."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rls3_msgs.srv import SpatialQuery

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node(name, context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    client = node.create_client(SpatialQuery, service, qos_profile=SERVICE_QOS)
    records: List[list] = []
    try:
        if not client.wait_for_service(timeout_sec=60.0):
            raise RuntimeError(f"service {service} not available")
        yield client, records
    finally:
        Path(records_file).write_text(json.dumps(records))
        ex.shutdown(timeout_sec=2.0)
        node.destroy_node()
        ctx.try_shutdown()
