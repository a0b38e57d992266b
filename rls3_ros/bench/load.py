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

Here: the query clients and the swap run (steps 1-5); ``load_big``: the big-request row (step 6);
``load_harness``: the node under test, the isolated ROS root and the statistics both share.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from rls3_ros.bench.load_big import big_client_main, run_big_request_load
from rls3_ros.bench.proc_cpu import rss_mb
from rls3_ros.bench.load_harness import (OTHER, QUERY_SERVICE, REFERENCE, SUBJECT, bench_root, latency_stats,
                                         query_client, resolve_model, spun_node, start_query_node, stop_all,
                                         wait_for_model_ready)
from rls3_ros.ros.service_qos import SERVICE_QOS

SWAP_SERVICE = "/spatial_query/set_adapter"


def _image(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), (180, 170, 150), np.uint8)
    img[: size // 3] = (210, 210, 220)
    for colour in ((200, 40, 40), (40, 70, 210), (40, 180, 60)):
        x, y = rng.integers(0, size - size // 6, 2)
        img[y : y + size // 6, x : x + size // 6] = colour
    return img


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
    from rls3_msgs.srv import SpatialQuery

    from rls3_ros.core.image_codec import numpy_to_image_msg

    progress = Path(a.progress)
    with query_client(f"load_client_{a.client_id}", a.service, a.records) as (client, records):
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
    return 0


# ---------------------------------------------------------------------------------------- driver
def run_load(n_clients: int = 8, n_queries: int = 1000, model: str = "grounded", adapter: str = "",
             out: Optional[str] = "results/load.json", image_size: int = 96, timeout: float = 120.0,
             workdir: Optional[str] = None, log=print) -> Dict[str, Any]:
    """Run the load benchmark (see module docstring); returns the result dict (also written to
    ``out`` unless None)."""

    tmp_ctx, root, env = bench_root(workdir, "rls3-load-")
    spec = resolve_model(model)
    t_start = time.monotonic()
    if not adapter:
        log(f"making a swap adapter for {spec!r} ...")
        adapter = make_swap_adapter(spec, str(root / "swap_adapter"))
    # set_adapter loads only from adapter roots: the swap adapter's directory
    node, node_log = start_query_node(
        root, env, spec, "-p", f"adapter_roots:={json.dumps([os.path.dirname(os.path.abspath(adapter))])}")
    clients: List[subprocess.Popen] = []
    swap: Dict[str, Any] = {}
    ctx = None
    try:
        wait_for_model_ready(node, root)
        log(f"spatial_query ready ({spec!r}); starting {n_clients} clients x {n_queries} queries")
        rss0 = rss_mb(node.pid)
        start_file = root / "start"
        for c in range(n_clients):
            cmd = [sys.executable, "-m", "rls3_ros.bench.load", "--client", "--client-id", str(c), "--n", str(n_queries),
                   "--service", QUERY_SERVICE, "--start-file", str(start_file), "--progress", str(root / f"progress{c}"),
                   "--records", str(root / f"records{c}.json"), "--image-size", str(image_size), "--timeout", str(timeout)]
            clients.append(subprocess.Popen(cmd, env=env, stdout=open(root / f"client{c}.log", "wb"),
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

        # the swap client (this process, its own rclpy context in the isolated domain)
        from rls3_msgs.srv import SetAdapter

        ctx, snode, ex = spun_node(env, "load_swapper")
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
        rss1 = rss_mb(node.pid)
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
            "latency": latency_stats(lat), "latency_during_swap": latency_stats(during),
            # answered before the swap began or sent after it ended: the node's steady state
            "latency_outside_swap": latency_stats([r[2] for r in before + after]),
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
        stop_all(clients, ctx, locals().get("ex"), locals().get("snode"), node, node_log, tmp_ctx)


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
        return big_client_main(a) if a.big else _client_main(a)
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


if __name__ == "__main__":
    raise SystemExit(cli_bench_load(sys.argv[1:]))
