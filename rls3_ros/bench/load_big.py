"""The big-request row of the load benchmark (``rls3 bench load``, module docstring step 6): small
queries from one client process, idle and then while another client process sends maximum-size
requests back to back (a 'what' with 256 candidates of ~200 characters on a 2048 x 1024 PNG camera
frame with a 32FC1 depth frame of that size and camera_info). ``run_big_request_load`` runs it;
``big_client_main`` is the maximum-size client process (``python -m rls3_ros.bench.load --client --big``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.bench.load_harness import (QUERY_SERVICE, REFERENCE, bench_root, latency_stats, query_client,
                                         resolve_model, spun_node, start_query_node, stop_all, wait_for_model_ready)


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


def big_client_main(a) -> int:
    """Client process of the big-request row: maximum-size 'what' requests back to back until the
    stop file exists (or ``n`` are answered); records [i, t_send, latency, success, message, ranked]."""
    from builtin_interfaces.msg import Time
    from rls3_msgs.srv import SpatialQuery
    from sensor_msgs.msg import CameraInfo

    with query_client("load_big_client", a.service, a.records) as (client, records):
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
    return 0


def run_big_request_load(model: str = "grounded", n_small: int = 500, out: Optional[str] = None,
                         width: int = 2048, height: int = 1024, timeout: float = 120.0,
                         workdir: Optional[str] = None, node_args: Sequence[str] = (), log=print) -> Dict[str, Any]:
    """The big-request row (module docstring, step 6): small-query latency idle and while maximum-size
    requests run. Returns the row (also merged into ``out`` as ``big_request`` when given)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from rls3_ros.core.image_codec import numpy_to_image_msg

    tmp_ctx, root, env = bench_root(workdir, "rls3-load-big-")
    spec = resolve_model(model)
    t_start = time.monotonic()
    node, node_log = start_query_node(root, env, spec, "-p", "image_transport:=compressed",
                                      "-p", f"image_topic:={BIG_CAMERA_TOPIC}", "-p", f"depth_topic:={BIG_DEPTH_TOPIC}",
                                      "-p", "torch_threads:=1", *node_args)
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
        wait_for_model_ready(node, root)
        # this process publishes the maximum-size camera and depth frames (one stamp)
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import Header

        ctx, pnode, ex = spun_node(env, "load_big_frames")
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
        s_idle, s_during = latency_stats(ok_idle), latency_stats(ok_during)
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
            "big": latency_stats([r[2] for r in bigs if r[2] is not None and r[3]]),
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
        stop_all(procs, ctx, locals().get("ex"), locals().get("pnode"), node, node_log, tmp_ctx)
