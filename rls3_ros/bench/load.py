"""Load benchmark of the query server: many client processes, one ``spatial_query`` node,
an adapter hot swap in the middle.

    rls3 bench load [--quick] [--clients 8] [--n 1000] [--model embedded] [--adapter DIR]
                    [--out results/load.json]
    python -m rls3_ros.bench.load ...            (same; ``cli_bench_load(argv)``)

What it does (all on loopback DDS, in an isolated ROS domain and temp ROS_HOME):
1. starts one ``spatial_query`` node process (``--model``; ``embedded`` falls back to
   ``embedded:random`` — same network and cost, untrained weights — when no pretrained
   embedded model is cached, since only latency and delivery are measured here);
2. prepares an adapter for the swap (``--adapter``, else a LoRA adapter with small random
   weights made for the model and saved in peft format);
3. starts ``--clients`` client processes; after a common start signal each sends ``--n``
   queries one after the other (where / check / what in turn, each on its own image), and
   records per query: send time, latency, success, message, the adapter that answered;
4. when half of all queries are answered, this process calls ``~/set_adapter`` (hot swap:
   the node builds the new instance off the query path);
5. collects the clients' records: **failed** = answered with success=false, **lost** = no
   answer within ``--timeout`` (or never recorded because a client died); latency p50/p90/
   p99/max over all answered queries, and separately for queries sent during the swap and for
   those outside it (answered before it began or sent after it ended);
   throughput; the node's RSS before/after.
6. the big-request row (``big_request`` in the JSON; ``run_big_request_load``, its own node):
   small queries from one client process (where / check / what in turn, each on its own 96 px
   image), first alone (idle), then while another client process sends maximum-size requests
   back to back: a 'what' with 256 candidates of ~200 characters each (the limits), on a camera frame of
   ``max_image_pixels`` (2048 x 1024 PNG on the compressed camera topic) with a 32FC1 depth frame
   of that size and camera_info (the node decodes, encodes, ranks, locates and back-projects at
   the limits). Records small-query p50/p99 idle and during, their ratio (goal: within 2x), how
   many small queries completed inside one big request's window, and the big requests' latency.
Writes ``--out`` (JSON) and prints a summary. Exit code 0 when nothing failed or was lost.
``--quick``: 8 clients x 50 queries (default out ``results/load_quick.json``); the big-request row
with 100 small queries per phase (500 without ``--quick``); ``--no-big`` skips it, ``--big-only``
runs only it (merged into ``--out`` under ``big_request``).
"""

from __future__ import annotations
from rls3_ros.ros.service_qos import SERVICE_QOS

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
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

QUERY_SERVICE = "/spatial_query/query"
SWAP_SERVICE = "/spatial_query/set_adapter"
SUBJECT, REFERENCE, OTHER = "red box", "blue box", "green box"


# ---------------------------------------------------------------------------------------- helpers
def _image(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), (180, 170, 150), np.uint8)
    img[: size // 3] = (210, 210, 220)
    for colour in ((200, 40, 40), (40, 70, 210), (40, 180, 60)):
        x, y = rng.integers(0, size - size // 6, 2)
        img[y : y + size // 6, x : x + size // 6] = colour
    return img


def _stats(lat_s: List[float]) -> Dict[str, float]:
    if not lat_s:
        return {"n": 0}
    a = np.asarray(lat_s) * 1e3
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p90_ms": round(float(np.percentile(a, 90)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "mean_ms": round(float(a.mean()), 2), "max_ms": round(float(a.max()), 2)}


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _resolve_model(spec: str) -> str:
    """``embedded`` without a pretrained cache -> ``embedded:random`` (same cost, see docstring)."""
    if spec.strip() != "embedded":
        return spec
    try:
        from rls3_ros.vlm.factory import embedded_base_dir

        embedded_base_dir(must_exist=True)
        return spec
    except Exception:  # noqa: BLE001 - not pretrained here
        return "embedded:random"


def make_swap_adapter(spec: str, directory: str, seed: int = 0) -> str:
    """A LoRA adapter for ``spec`` in peft format: a fresh adapter whose B matrices get small
    random values (so the swapped model really answers differently)."""
    import torch

    from rls3_ros.vlm.answers import load_model

    model = load_model(spec)
    host = getattr(model, "host", None)
    if host is None:  # any other SpatialVLM: a few real fine-tuning steps give a real adapter

        return adapter_for_swap(Path(directory).parent, spec, Path(directory).name)
    host.ensure_adapter()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in host.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model.save_adapter(directory)


# ---------------------------------------------------------------------------------------- client
def _client_main(a) -> int:
    """One client process: wait for the start file, send ``n`` queries sequentially, write records."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rls3_msgs.srv import SpatialQuery

    from rls3_ros.core.image_codec import numpy_to_image_msg

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node(f"load_client_{a.client_id}", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    client = node.create_client(SpatialQuery, a.service, qos_profile=SERVICE_QOS)
    records: List[list] = []
    progress = Path(a.progress)
    try:
        if not client.wait_for_service(timeout_sec=60.0):
            raise RuntimeError(f"service {a.service} not available")
        start = Path(a.start_file)
        reqs = []
        for i in range(a.n):
            r = SpatialQuery.Request()
            kind = ("where", "check", "what")[i % 3]
            r.query_type, r.subject, r.reference = kind, SUBJECT if kind != "what" else "", REFERENCE
            r.relation = "" if kind == "where" else "left"
            r.candidates = [SUBJECT, OTHER] if kind == "what" else []
            r.image = numpy_to_image_msg(_image(a.image_size, a.client_id * 100_003 + i), "rgb8")
            r.header.frame_id = f"c{a.client_id}q{i}"
            r.image.header = r.header
            reqs.append(r)
        progress.write_text("0")  # ready: service found, requests built
        while not start.exists():
            time.sleep(0.01)
        for i, r in enumerate(reqs):
            done = threading.Event()
            t_send = time.time()
            t0 = time.perf_counter()
            fut = client.call_async(r)
            fut.add_done_callback(lambda _f: done.set())
            if not done.wait(a.timeout):
                client.remove_pending_request(fut)
                records.append([i, t_send, None, False, "lost: no answer", ""])
            else:
                dt = time.perf_counter() - t0
                resp = fut.result()
                ok = bool(resp.success) and resp.header.frame_id == r.header.frame_id
                msg = resp.message
                if resp.success and not ok:
                    msg = f"answer carries header {resp.header.frame_id!r}, expected {r.header.frame_id!r}"
                records.append([i, t_send, dt, ok, msg[:200], resp.adapter])
            if (i + 1) % 10 == 0 or i + 1 == a.n:
                tmp = progress.with_suffix(".tmp")
                tmp.write_text(str(i + 1))
                os.replace(tmp, progress)
    finally:
        Path(a.records).write_text(json.dumps(records))
        ex.shutdown(timeout_sec=2.0)
        node.destroy_node()
        ctx.try_shutdown()
    return 0


# ------------------------------------------------------------------------------- big-request row
BIG_STAMP_SEC = 1000  # stamp of the maximum-size camera frame the big requests ask about
BIG_CAMERA_TOPIC = "camera/image/compressed"
BIG_DEPTH_TOPIC = "camera/depth"
BIG_WORDS = ("red", "blue", "green", "yellow", "white", "black", "small", "box", "mug", "bowl", "plate", "vase",
             "lamp", "book", "bottle", "can")


def big_candidates(n: int = 256, chars: int = 0) -> List[str]:
    """``n`` distinct object names of vocabulary words, each just under the length limit
    (``answers.MAX_TEXT_CHARS``)."""
    from rls3_ros.vlm.answers import MAX_TEXT_CHARS

    chars = chars or MAX_TEXT_CHARS - 10
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        words, size = [], 0
        while size < chars - 8:
            w = BIG_WORDS[int(rng.integers(len(BIG_WORDS)))]
            words.append(w)
            size += len(w) + 1
        out.append(" ".join(words)[:chars].rsplit(" ", 1)[0] + f" {BIG_WORDS[i % 7]} box")
    return list(dict.fromkeys(out))


def big_frame(width: int = 2048, height: int = 1024) -> Tuple[bytes, np.ndarray]:
    """(PNG bytes, float32 depth [m]) of a maximum-size camera frame: a floor, three boxes, noise."""
    import cv2

    rng = np.random.default_rng(11)
    img = np.full((height, width, 3), (180, 170, 150), np.uint8)
    img[: height // 3] = (210, 210, 220)
    for k, colour in enumerate(((200, 40, 40), (40, 70, 210), (40, 180, 60))):
        x, y = (k + 1) * width // 5, height // 2
        img[y: y + height // 6, x: x + width // 8] = colour
    img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    depth = np.linspace(1.0, 6.0, height, dtype=np.float32)[:, None].repeat(width, 1)
    return png.tobytes(), depth


def _big_client_main(a) -> int:
    """Client process of the big-request row: maximum-size 'what' requests back to back until the
    stop file exists (or ``n`` are answered); records [i, t_send, latency, success, message, ranked]."""
    import rclpy
    from builtin_interfaces.msg import Time
    from rclpy.executors import SingleThreadedExecutor
    from rls3_msgs.srv import SpatialQuery
    from sensor_msgs.msg import CameraInfo

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("load_big_client", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    client = node.create_client(SpatialQuery, a.service, qos_profile=SERVICE_QOS)
    records: List[list] = []
    try:
        if not client.wait_for_service(timeout_sec=60.0):
            raise RuntimeError(f"service {a.service} not available")
        w, h = a.big_width, a.big_height
        req = SpatialQuery.Request(query_type="what", reference=REFERENCE, relation="left",
                                   candidates=big_candidates())
        req.header.stamp = Time(sec=BIG_STAMP_SEC, nanosec=0)
        req.header.frame_id = "camera_optical"
        req.camera_info = CameraInfo(width=w, height=h, k=[0.8 * w, 0.0, w / 2, 0.0, 0.8 * w, h / 2, 0.0, 0.0, 1.0])
        req.camera_info.header = req.header
        stop, progress = Path(a.start_file), Path(a.progress)
        for i in range(a.n):
            if stop.exists():
                break
            done = threading.Event()
            t_send = time.time()
            t0 = time.perf_counter()
            fut = client.call_async(req)
            if i == 0:
                progress.write_text("started")
            fut.add_done_callback(lambda _f: done.set())
            if not done.wait(a.timeout):
                client.remove_pending_request(fut)
                records.append([i, t_send, None, False, "lost: no answer", 0])
                continue
            r = fut.result()
            records.append([i, t_send, time.perf_counter() - t0, bool(r.success), r.message[:200],
                            len(r.ranked_candidates)])
    finally:
        Path(a.records).write_text(json.dumps(records))
        ex.shutdown(timeout_sec=2.0)
        node.destroy_node()
        ctx.try_shutdown()
    return 0


def run_big_request_load(model: str = "grounded", n_small: int = 500, out: Optional[str] = None,
                         width: int = 2048, height: int = 1024, timeout: float = 120.0,
                         workdir: Optional[str] = None, node_args: Sequence[str] = (), log=print) -> Dict[str, Any]:
    """The big-request row (module docstring, step 6): small-query latency idle and while maximum-size
    requests run. Returns the row (also merged into ``out`` as ``big_request`` when given)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from rls3_ros.core.image_codec import numpy_to_image_msg

    tmp_ctx, root, env = _bench_root(workdir, "rls3-load-big-")
    spec = _resolve_model(model)
    t_start = time.monotonic()
    node_log = open(root / "spatial_query.log", "wb")
    node = subprocess.Popen([sys.executable, "-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args",
                             "-p", f"model:={spec}", "-p", "follow_adapter_topic:=false", "-p", "image_qos:=reliable",
                             "-p", "image_transport:=compressed", "-p", f"image_topic:={BIG_CAMERA_TOPIC}",
                             "-p", f"depth_topic:={BIG_DEPTH_TOPIC}", "-p", "torch_threads:=1", *node_args],
                            env=env, stdout=node_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    procs: List[subprocess.Popen] = []
    ctx = None

    def client_cmd(kind: str, n: int) -> List[str]:
        cid = {"idle": "0", "during": "1"}.get(kind, "2")  # other images per phase: no feature-cache hits
        return [sys.executable, "-m", "rls3_ros.bench.load", "--client", "--client-id", cid, "--n", str(n),
                "--service", QUERY_SERVICE, "--progress", str(root / f"progress_{kind}"),
                "--records", str(root / f"records_{kind}.json"), "--image-size", "96", "--timeout", str(timeout),
                "--start-file", str(root / ("stop_big" if kind == "big" else "go")),
                *(["--big", "--big-width", str(width), "--big-height", str(height)] if kind == "big" else [])]

    def run_small(kind: str) -> List[list]:
        (root / "go").write_text("go")
        p = subprocess.Popen(client_cmd(kind, n_small), env=env, stdout=open(root / f"client_{kind}.log", "wb"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(p)
        p.wait(timeout=n_small * timeout + 120)
        return json.loads((root / f"records_{kind}.json").read_text())

    try:
        deadline = time.monotonic() + 180
        while b"model ready" not in (root / "spatial_query.log").read_bytes():
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("spatial_query did not get ready:\n"
                                   + (root / "spatial_query.log").read_text(errors="replace")[-3000:])
            time.sleep(0.1)
        # this process publishes the maximum-size camera and depth frames (one stamp)
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import Header

        ctx, pnode, ex = _spun_node(env, "load_big_frames")
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        pub_img = pnode.create_publisher(CompressedImage, BIG_CAMERA_TOPIC, qos)
        pub_depth = pnode.create_publisher(Image, BIG_DEPTH_TOPIC, qos)
        png, depth = big_frame(width, height)
        header = Header(frame_id="camera_optical")
        header.stamp.sec = BIG_STAMP_SEC
        deadline = time.monotonic() + 60
        while pub_img.get_subscription_count() == 0 or pub_depth.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("spatial_query did not subscribe to the camera and depth topics")
            time.sleep(0.05)
        pub_depth.publish(numpy_to_image_msg(depth, "32FC1", header))
        pub_img.publish(CompressedImage(header=header, format="png", data=png))
        log(f"big-request row: {spec!r}; {width}x{height} PNG frame ({len(png) / 1e6:.1f} MB) + 32FC1 depth; "
            f"{n_small} small queries idle, then during maximum-size requests")

        idle = run_small("idle")
        big = subprocess.Popen(client_cmd("big", 100000), env=env, stdout=open(root / "client_big.log", "wb"),
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(big)
        deadline = time.monotonic() + 120
        while not (root / "progress_big").exists():
            if big.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("big-request client did not start:\n"
                                   + (root / "client_big.log").read_text(errors="replace")[-2000:])
            time.sleep(0.02)
        during = run_small("during")
        (root / "stop_big").write_text("stop")
        big.wait(timeout=timeout + 60)
        bigs = json.loads((root / "records_big.json").read_text())
        node_alive = node.poll() is None

        ok_idle = [r[2] for r in idle if r[2] is not None and r[3]]
        ok_during = [r[2] for r in during if r[2] is not None and r[3]]
        windows = [(r[1], r[1] + r[2]) for r in bigs if r[2] is not None]
        inside = [sum(1 for s in during if s[2] is not None and t0 <= s[1] and s[1] + s[2] <= t1) for t0, t1 in windows]
        s_idle, s_during = _stats(ok_idle), _stats(ok_during)
        ratio = (round(s_during["p99_ms"] / s_idle["p99_ms"], 2)
                 if s_idle.get("p99_ms") and s_during.get("p99_ms") else None)
        row = {
            "what": "small queries (where/check/what, own 96 px image) from one client process, idle and while "
                    "another client process sends maximum-size requests back to back: 'what' with 256 candidates "
                    f"of ~200 characters on a {width}x{height} PNG camera frame with a 32FC1 depth frame of that size "
                    "and camera_info (decoded, encoded, ranked, located, back-projected by the node)",
            "model": spec, "big_frame": f"{width}x{height}", "big_frame_png_mb": round(len(png) / 1e6, 2),
            "small_queries_per_phase": n_small,
            "small_idle": s_idle, "small_during_big": s_during, "p99_ratio_during_over_idle": ratio,
            "small_failed": sum(1 for r in idle + during if not r[3]),
            "small_failed_examples": [r[4] for r in idle + during if not r[3]][:5],
            "big": _stats([r[2] for r in bigs if r[2] is not None and r[3]]),
            "big_requests": len(bigs), "big_failed": sum(1 for r in bigs if not r[3]),
            "big_failed_examples": [r[4] for r in bigs if not r[3]][:3],
            "big_ranked_candidates": max((r[5] for r in bigs), default=0),
            "small_completed_inside_a_big_window": sum(inside), "max_small_inside_one_big_window": max(inside, default=0),
            "node_alive_at_end": node_alive,
            "host": {"cpus": os.cpu_count(), "loadavg_1m_at_end": os.getloadavg()[0]},
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "total_s": round(time.monotonic() - t_start, 1),
            "records": {"idle": idle, "during": during, "big": bigs},
        }
        log(f"big-request row: small p99 idle {s_idle.get('p99_ms')} ms, during {s_during.get('p99_ms')} ms "
            f"(ratio {ratio}); {len(bigs)} big requests, p50 {row['big'].get('p50_ms')} ms; "
            f"{sum(inside)} small queries completed inside a big request's window")
        if out:
            p = Path(out)
            try:
                doc = json.loads(p.read_text())
            except (OSError, ValueError):
                doc = {}
            doc["big_request"] = {k: v for k, v in row.items() if k != "records"}
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            os.replace(tmp, p)
        return row
    finally:
        _stop_all(procs, ctx, locals().get("ex"), locals().get("pnode"), node, node_log, tmp_ctx)


def _bench_root(workdir: Optional[str], prefix: str):
    """(temp dir or None, the benchmark's root directory, an isolated ROS env for its processes)."""
    from rls3_ros.ros.isolation import isolated_ros_env

    tmp_ctx = tempfile.TemporaryDirectory(prefix=prefix) if workdir is None else None
    root = Path(workdir or tmp_ctx.name)
    root.mkdir(parents=True, exist_ok=True)
    env = isolated_ros_env(root)
    env.setdefault("OMP_NUM_THREADS", "1")
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([p for p in (env.get("PYTHONPATH", ""), here) if p])
    return tmp_ctx, root, env


def _spun_node(env: Dict[str, str], name: str):
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


def _stop_all(procs, ctx, ex, rnode, node, node_log, tmp_ctx) -> None:
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


# ---------------------------------------------------------------------------------------- driver
def run_load(n_clients: int = 8, n_queries: int = 1000, model: str = "grounded", adapter: str = "",
             out: Optional[str] = "results/load.json", image_size: int = 96, timeout: float = 120.0,
             workdir: Optional[str] = None, log=print) -> Dict[str, Any]:
    """Run the load benchmark (see module docstring); returns the result dict (also written to
    ``out`` unless None)."""

    tmp_ctx, root, env = _bench_root(workdir, "rls3-load-")
    spec = _resolve_model(model)
    t_start = time.monotonic()
    if not adapter:
        log(f"making a swap adapter for {spec!r} ...")
        adapter = make_swap_adapter(spec, str(root / "swap_adapter"))
    node_log = open(root / "spatial_query.log", "wb")
    node = subprocess.Popen([sys.executable, "-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args",
                             "-p", f"model:={spec}", "-p", "follow_adapter_topic:=false", "-p", "image_qos:=reliable",
                             # set_adapter loads only from adapter roots: the swap adapter's directory
                             "-p", f"adapter_roots:={json.dumps([os.path.dirname(os.path.abspath(adapter))])}"],
                            env=env, stdout=node_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    clients: List[subprocess.Popen] = []
    swap: Dict[str, Any] = {}
    ctx = None
    try:
        deadline = time.monotonic() + 180
        while b"model ready" not in (root / "spatial_query.log").read_bytes():
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("spatial_query did not get ready:\n"
                                   + (root / "spatial_query.log").read_text(errors="replace")[-3000:])
            time.sleep(0.1)
        log(f"spatial_query ready ({spec!r}); starting {n_clients} clients x {n_queries} queries")
        rss0 = _rss_mb(node.pid)
        start_file = root / "start"
        for c in range(n_clients):
            cmd = [sys.executable, "-m", "rls3_ros.bench.load", "--client", "--client-id", str(c), "--n", str(n_queries),
                   "--service", QUERY_SERVICE, "--start-file", str(start_file), "--progress", str(root / f"progress{c}"),
                   "--records", str(root / f"records{c}.json"), "--image-size", str(image_size), "--timeout", str(timeout)]
            clients.append(subprocess.Popen(cmd, env=env, stdout=open(root / f"client{c}.log", "wb"),
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

        # the swap client (this process, its own rclpy context in the isolated domain)
        from rls3_msgs.srv import SetAdapter

        ctx, snode, ex = _spun_node(env, "load_swapper")
        sclient = snode.create_client(SetAdapter, SWAP_SERVICE, qos_profile=SERVICE_QOS)
        if not sclient.wait_for_service(timeout_sec=60):
            raise RuntimeError("set_adapter service not available")
        # all clients discovered the service and built their requests: go
        ready_deadline = time.monotonic() + 180
        while not all((root / f"progress{c}").exists() for c in range(n_clients)):
            dead = [c for c, p in enumerate(clients) if p.poll() is not None]
            if dead or time.monotonic() > ready_deadline:
                raise RuntimeError(f"clients not ready (dead: {dead}):\n"
                                   + (root / f"client{(dead or [0])[0]}.log").read_text(errors="replace")[-2000:])
            time.sleep(0.05)
        start_file.write_text("go")
        t_go = time.time()

        def answered() -> int:
            n = 0
            for c in range(n_clients):
                try:
                    n += int((root / f"progress{c}").read_text() or 0)
                except (OSError, ValueError):
                    pass
            return n

        total = n_clients * n_queries
        while answered() < total // 2 and any(p.poll() is None for p in clients):
            time.sleep(0.02)
        swap["at_answered"] = answered()
        swap["t_start"] = time.time()
        done = threading.Event()
        fut = sclient.call_async(SetAdapter.Request(path=adapter))
        fut.add_done_callback(lambda _f: done.set())
        if not done.wait(300):
            raise RuntimeError("set_adapter did not answer within 300 s")
        r = fut.result()
        swap.update(t_end=time.time(), success=bool(r.success), message=r.message, active_adapter=r.active_adapter)
        swap["duration_s"] = round(swap["t_end"] - swap["t_start"], 3)
        log(f"adapter swap after {swap['at_answered']}/{total} answers: {r.message} ({swap['duration_s']:.2f} s)")
        for p in clients:
            p.wait(timeout=n_queries * timeout + 60)
        t_end = time.time()
        rss1 = _rss_mb(node.pid)
        node_alive = node.poll() is None

        records: List[list] = []
        lost_missing = 0
        for c in range(n_clients):
            try:
                rec = json.loads((root / f"records{c}.json").read_text())
            except (OSError, ValueError):
                rec = []
            lost_missing += n_queries - len(rec)
            records += rec
        answered_recs = [r for r in records if r[2] is not None]
        lost = lost_missing + sum(1 for r in records if r[2] is None)
        failed = [r for r in answered_recs if not r[3]]
        lat = [r[2] for r in answered_recs]
        during = [r[2] for r in answered_recs if swap["t_start"] <= r[1] <= swap["t_end"]]
        after = [r for r in answered_recs if r[1] > swap["t_end"]]
        before = [r for r in answered_recs if r[1] + r[2] < swap["t_start"]]
        result = {
            "what": f"{n_clients} client processes x {n_queries} sequential spatial queries (where/check/what in turn, "
                    "each on its own image) against one spatial_query node over loopback DDS, with a SetAdapter hot "
                    "swap when half were answered",
            "model": spec, "model_requested": model, "adapter": adapter, "image_size": image_size,
            "clients": n_clients, "queries_per_client": n_queries, "queries": total,
            "answered": len(answered_recs), "failed": len(failed), "lost": lost,
            "failed_examples": [r[4] for r in failed[:5]],
            "latency": _stats(lat), "latency_during_swap": _stats(during),
            # answered before the swap began or sent after it ended: the node's steady state
            "latency_outside_swap": _stats([r[2] for r in before + after]),
            "throughput_qps": round(len(answered_recs) / max(1e-9, t_end - t_go), 1),
            "wall_s": round(t_end - t_go, 1),
            "swap": {k: v for k, v in swap.items() if k not in ("t_start", "t_end")},
            "adapter_before_swap": sorted({r[5] for r in before}),
            "adapter_after_swap": sorted({r[5] for r in after}),
            "node_alive_at_end": node_alive,
            "node_rss_mb": {"before": round(rss0, 1), "after": round(rss1, 1)},
            "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                     "loadavg_1m_at_end": os.getloadavg()[0]},
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "total_s": round(time.monotonic() - t_start, 1),
        }
        if out:
            p = Path(out)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(result, indent=1) + "\n")
            result["out"] = str(p)
        lt = result["latency"]
        log(f"load: {result['answered']}/{total} answered, failed {result['failed']}, lost {result['lost']}; "
            f"latency p50 {lt.get('p50_ms', float('nan'))} ms p99 {lt.get('p99_ms', float('nan'))} ms; "
            f"{result['throughput_qps']} queries/s; swap {swap.get('message')!r}"
            + (f"; wrote {out}" if out else ""))
        return result
    finally:
        _stop_all(clients, ctx, locals().get("ex"), locals().get("snode"), node, node_log, tmp_ctx)


def cli_bench_load(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="rls3 bench load", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 clients x 50 queries (default out results/load_quick.json)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--n", type=int, default=0, help="queries per client (default 1000, --quick 50)")
    ap.add_argument("--model", default="grounded")
    ap.add_argument("--adapter", default="", help="adapter to swap to (default: one made for the model)")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--timeout", type=float, default=120.0, help="a query without an answer after this is lost [s]")
    ap.add_argument("--out", default="")
    ap.add_argument("--workdir", default="", help="keep logs and records here (default: a temp dir)")
    ap.add_argument("--no-big", action="store_true", help="skip the big-request row")
    ap.add_argument("--big-only", action="store_true", help="run only the big-request row (merged into --out)")
    ap.add_argument("--big-small-n", type=int, default=0, help="small queries per phase of the big-request row "
                                                                 "(default 500, --quick 100)")
    # client-process mode (internal)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--client-id", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--service", default=QUERY_SERVICE, help=argparse.SUPPRESS)
    ap.add_argument("--start-file", default="", help=argparse.SUPPRESS)
    ap.add_argument("--progress", default="", help=argparse.SUPPRESS)
    ap.add_argument("--records", default="", help=argparse.SUPPRESS)
    ap.add_argument("--big", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--big-width", type=int, default=2048, help=argparse.SUPPRESS)
    ap.add_argument("--big-height", type=int, default=1024, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.client:
        return _big_client_main(a) if a.big else _client_main(a)
    n = a.n or (50 if a.quick else 1000)
    out = a.out or ("results/load_quick.json" if a.quick else "results/load.json")
    if a.clients < 1 or n < 1:
        print("rls3 bench load: --clients and --n must be >= 1", file=sys.stderr)
        return 2
    if a.big_only and a.no_big:
        print("rls3 bench load: --big-only and --no-big exclude each other", file=sys.stderr)
        return 2
    try:
        if a.big_only:
            big = run_big_request_load(a.model, a.big_small_n or (100 if a.quick else 500), out, timeout=a.timeout,
                                       workdir=a.workdir or None)
            return 0 if big["small_failed"] == 0 and big["big_failed"] == 0 else 1
        res = run_load(a.clients, n, a.model, a.adapter, out, a.image_size, a.timeout, a.workdir or None)
        big = None if a.no_big else run_big_request_load(
            a.model, a.big_small_n or (100 if a.quick else 500), out, timeout=a.timeout,
            workdir=os.path.join(a.workdir, "big") if a.workdir else None)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        print(f"rls3 bench load: {e}", file=sys.stderr)
        return 1
    ok = res["failed"] == 0 and res["lost"] == 0 and res["swap"].get("success")
    if big is not None:
        ok = ok and big["small_failed"] == 0 and big["big_failed"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(cli_bench_load(sys.argv[1:]))


def adapter_for_swap(tmp: Path, spec: str = "", name: str = "swap_adapter") -> str:
    """A real LoRA adapter of the embedded base (a few steps on rendered samples) to swap to."""
    from rls3_ros.vlm.answers import load_model
    from rls3_ros.vlm.factory import DEFAULT_MODEL

    spec = spec or DEFAULT_MODEL
    from rls3_ros.bench.query import make_image
    from rls3_ros.core.scene import CameraModel, ObjectState, Sample, SceneState, SpatialRelation

    vlm = load_model(spec)
    cam = CameraModel.look_at((0.0, -2.0, 1.5), (0.0, 0.0, 0.8), 128, 128, 60.0)
    objs = [ObjectState("a", "box", "red box", (-0.3, 0, 0.8), active=True),
            ObjectState("b", "box", "blue box", (0.3, 0, 0.8), active=True)]
    rel = SpatialRelation("a", "b", "red box", "blue box", ["left"], caption="The red box is to the left of the blue box.",
                          negatives=["The red box is to the right of the blue box."])
    samples = [Sample(f"s{i}", make_image(128, 1000 + i), SceneState("x", "kitchen", 0, cam, objs), [rel]) for i in range(8)]
    vlm.fine_tune(samples, 2)
    return vlm.save_adapter(str(tmp / name))
