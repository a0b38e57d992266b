"""Sample-generation speed: render + caption in-process vs through the ROS graph.

One *sample* = one random move applied to a scene (swap or place, as the RL agent does),
rendered and validity-checked; a *valid* sample is then captioned by the oracle. Both paths
run the same move sequence from the same seeded scenes:

- in-process: ``backend.apply`` + ``CaptionOracle.caption_scene`` in this process;
- ROS: ``sim_bridge`` processes (``~/apply_action``, answer carries the image) and a
  ``caption_oracle`` process (``~/caption_scene``, sent the answer's scene only, never the
  image), called from a client node in this process; with N bridges in namespaces (parallel data
  generation), up to ``MOVES_IN_FLIGHT`` moves in flight per bridge: a move is sent while the
  bridge still simulates the one before, except after a swap (which changes the active objects the
  next move targets), so the moves are the in-process run's. A valid sample's caption request overlaps the
  bridge's next move (a pipeline, as a data generator runs it: the oracle is another process);
  the client still receives every sample's image and every valid sample's caption.

Both paths start timing from a built scene (no reset in the timed region) and do the same
simulator work (``BRIDGE_BACKEND_KWARGS``).
"""

from __future__ import annotations

import collections
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Deque, Dict, List, Sequence

import numpy as np

from rls3_ros.bench.proc_cpu import cpu_seconds
from rls3_ros.ros.isolation import isolated_ros_env
from rls3_ros.sim.raster_threads import shared_raster_threads
from rls3_ros.sim.backend import PLACE, SWAP, MoveAction
from rls3_ros.ros.service_qos import SERVICE_QOS

# The simulator settings the ROS path's sim_bridge uses (its defaults at 224 px): the in-process
# baseline builds its backend with the same ones, so both paths do the same simulator work per
# sample. The bridge renders no depth (it publishes none); the baseline rendered depth too (one more
# GL pass, ~3 ms of a ~13 ms move), which made the ROS/in-process ratio look better than it is.
BRIDGE_BACKEND_KWARGS = dict(render_depth=False)
# Apply requests the ROS client keeps in flight per bridge: with 2 the bridge finds its next move
# waiting when it answers (its answer's trip to the client and the client's next request overlap
# the next simulation). On 2 cores, two alternating pairs: 1 bridge 108.6 / 111.7 samples/s with 2
# in flight against 104.2 / 104.9 with 1 (0.85-0.89 of in-process against 0.80-0.81), 2 bridges
# 178.8 / 174.2 against 165.9 / 161.3. The moves and their answers are the same (tested).
MOVES_IN_FLIGHT = 2


def random_moves(scene, bounds, rng: np.random.Generator, n: int) -> List[MoveAction]:
    """``n`` agent-like moves: every 4th swaps with the container, the others place."""
    lo, hi = np.asarray(bounds[0]), np.asarray(bounds[1])
    ids = [o.id for o in scene.active_objects()] or [o.id for o in scene.objects[:3]]
    moves = []
    for i in range(n):
        oid = ids[int(rng.integers(len(ids)))]
        if i % 4 == 0:
            moves.append(MoveAction(SWAP, oid))
        else:
            moves.append(MoveAction(PLACE, oid, position=tuple(float(v) for v in rng.uniform(lo, hi)),
                                    yaw=float(rng.uniform(-np.pi, np.pi))))
    return moves


def bench_inprocess(n: int, image_size: int, seed: int = 0) -> Dict[str, float]:
    from rls3_ros.captions.oracle import CaptionOracle
    from rls3_ros.sim.factory import make_backend

    backend = make_backend("mujoco", image_size=image_size, seed=seed, **BRIDGE_BACKEND_KWARGS)
    oracle = CaptionOracle()
    rng = np.random.default_rng(seed)
    try:
        scene = backend.reset(seed)
        bounds = backend.placement_bounds()
        moves = random_moves(scene, bounds, rng, n)
        valid = relations = 0
        t = time.perf_counter()
        for mv in moves:
            # ids of swapped-out objects change: re-target to a current active object
            active = [o.id for o in backend.state().active_objects()]
            if mv.object_id not in active:
                mv.object_id = active[0]
            res = backend.apply(mv)
            if res.valid:
                valid += 1
                relations += len(oracle.caption_scene(res.scene))
        dt = time.perf_counter() - t
    finally:
        backend.close()
    return {"samples_per_s": n / dt, "valid_per_s": valid / dt, "valid_fraction": valid / n,
            "relations_per_valid": relations / max(valid, 1), "n": n}


class _Pending:
    """One request in flight: its future and an Event the future's done callback sets."""

    def __init__(self, client, request):
        self.srv_name = client.srv_name
        self.future = client.call_async(request)
        self.done = threading.Event()
        self.future.add_done_callback(lambda _f: self.done.set())

    def result(self, timeout: float = 60.0):
        if not self.done.wait(timeout):
            raise TimeoutError(f"no answer from {self.srv_name} in {timeout}s")
        return self.future.result()


class _GraphClient:
    """Client node calling N sim_bridges and one caption_oracle (``MOVES_IN_FLIGHT`` moves per bridge).

    One executor thread spins the node; callers block on an Event the response's done callback
    sets (no polling). A single-threaded executor: its only callbacks are the responses, which it
    hands over at once; a multi-threaded one added a thread-pool hand-off (and GIL contention with
    the worker threads) to every answer.
    """

    def __init__(self, namespaces: Sequence[str]):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rls3_msgs.srv import ApplyAction, CaptionScene, ResetScene

        self.ApplyAction, self.CaptionScene, self.ResetScene = ApplyAction, CaptionScene, ResetScene
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("generation_bench", context=self.ctx)
        self.apply = [self.node.create_client(ApplyAction, f"{ns}/sim_bridge/apply_action", qos_profile=SERVICE_QOS) for ns in namespaces]
        self.reset = [self.node.create_client(ResetScene, f"{ns}/sim_bridge/reset_scene", qos_profile=SERVICE_QOS) for ns in namespaces]
        self.caption = self.node.create_client(CaptionScene, "/caption_oracle/caption_scene", qos_profile=SERVICE_QOS)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def wait_ready(self, timeout: float) -> None:
        for c in [*self.apply, *self.reset, self.caption]:
            if not c.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {c.srv_name} not up after {timeout}s")

    def send(self, client, request) -> _Pending:
        return _Pending(client, request)

    def call(self, client, request, timeout: float = 60.0):
        return self.send(client, request).result(timeout)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.ctx.try_shutdown()


def _to_request(req_cls, mv: MoveAction):
    r = req_cls.Request(action_type=mv.action_type, object_id=mv.object_id,
                        container_object_id=mv.container_object_id)
    if mv.position is not None:
        r.target_pose.position.x, r.target_pose.position.y, r.target_pose.position.z = mv.position
        r.target_pose.orientation.z, r.target_pose.orientation.w = float(np.sin(mv.yaw / 2)), float(np.cos(mv.yaw / 2))
    return r


def bench_ros(n_per_bridge: int, image_size: int, bridges: int, seed: int = 0, workdir: Path = None) -> Dict[str, float]:
    """Samples/s through ``bridges`` sim_bridge processes + one caption_oracle process."""
    import subprocess

    from rls3_ros.ros.conversions import msg_to_scene
    from rls3_ros.sim.factory import make_backend

    workdir = Path(workdir or tempfile.mkdtemp(prefix="rls3-genbench-"))
    env = isolated_ros_env(workdir)
    namespaces = [f"/gen{i}" for i in range(bridges)]
    procs = []
    logs = []
    try:
        for i, ns in enumerate(namespaces):
            log = open(workdir / f"bridge{i}.log", "wb")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "rls3_ros.ros.nodes.sim_bridge", "--ros-args", "-r", f"__ns:={ns}",
                 "-p", f"image_size:={image_size}", "-p", f"seed:={seed + i}",
                 "-p", f"render_threads:={shared_raster_threads(bridges)}"],  # as the training graph does
                env=env, stdout=log, stderr=subprocess.STDOUT))
        log = open(workdir / "oracle.log", "wb")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, "-m", "rls3_ros.ros.nodes.caption_oracle"],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
        import os

        from rls3_ros.ros.isolation import ros_env_applied

        with ros_env_applied(env):
            client = _GraphClient(namespaces)
        try:
            client.wait_ready(120.0)
            # Same move sequences as the in-process run (bounds from a local backend of the same seed).
            plans, actives = [], []
            for i in range(bridges):
                res = client.call(client.reset[i], client.ResetScene.Request(seed=seed + i))
                if not res.success:
                    raise RuntimeError(f"reset failed on bridge {i}: {res.message}")
                local = make_backend("mujoco", image_size=32, seed=seed + i)
                try:
                    local.reset(seed + i)
                    bounds = local.placement_bounds()
                finally:
                    local.close()
                plans.append(random_moves(msg_to_scene(res.scene), bounds, np.random.default_rng(seed + i), n_per_bridge))
                actives.append([o.id for o in res.scene.objects if o.active])
            counts = {"valid": 0, "samples": 0, "relations": 0, "errors": 0, "images": 0, "captions": 0}
            lock = threading.Lock()
            # Each bridge starts from its seed's scene (the reset above), outside the timed region:
            # the in-process run times no reset either. The workers start together.
            start = threading.Barrier(bridges + 1)
            failures: List[BaseException] = []
            image_bytes = image_size * image_size * 3

            def take_caption(pending: _Pending) -> None:
                cap = pending.result()
                with lock:
                    counts["captions"] += int(cap.success)
                    counts["relations"] += len(cap.relations) if cap.success else 0

            def generate(i: int) -> None:
                active = actives[i]
                caption = None  # the caption request of the previous valid sample, in flight
                moves: Deque = collections.deque()  # (move, its apply request in flight), oldest first

                def take_answer() -> None:
                    nonlocal active, caption
                    mv, pending = moves.popleft()
                    ans = pending.result()
                    got_image = (ans.image.width, ans.image.height, len(ans.image.data)) == (image_size, image_size, image_bytes)
                    if ans.success and ans.valid:
                        active = [o.id for o in ans.scene.objects if o.active]
                        # Captioning needs only the scene: the oracle's round trip overlaps this
                        # bridge's next move instead of stalling it (at most one caption in flight
                        # per bridge; every valid sample's caption is received).
                        if caption is not None:
                            take_caption(caption)
                        caption = client.send(client.caption, client.CaptionScene.Request(scene=ans.scene))
                    with lock:
                        counts["samples"] += 1
                        counts["valid"] += int(ans.success and ans.valid)
                        counts["images"] += int(got_image)
                        counts["errors"] += int(not ans.success)

                for mv in plans[i]:
                    # The next move goes out while the bridge still simulates the last one, so the bridge
                    # never waits for this client's turn-around - unless the last one is a swap, which
                    # changes the active objects the next move's target is chosen from (a place
                    # never does): then its answer comes first, and the moves are the serial loop's.
                    while moves and (len(moves) >= MOVES_IN_FLIGHT or moves[-1][0].action_type == SWAP):
                        take_answer()
                    if mv.object_id not in active:
                        mv.object_id = active[0]
                    moves.append((mv, client.send(client.apply[i], _to_request(client.ApplyAction, mv))))
                while moves:
                    take_answer()
                if caption is not None:
                    take_caption(caption)

            def worker(i: int) -> None:
                start.wait()
                try:
                    generate(i)
                except BaseException as e:  # noqa: BLE001 - re-raised by the caller after join
                    failures.append(e)

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(bridges)]
            for th in threads:
                th.start()
            start.wait()
            t = time.perf_counter()
            cpu0 = [cpu_seconds(p.pid) for p in procs] + [time.process_time()]
            for th in threads:
                th.join()
            dt = time.perf_counter() - t
            cpu1 = [cpu_seconds(p.pid) for p in procs] + [time.process_time()]
            if failures:
                raise failures[0]
        finally:
            client.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()
    n = counts["samples"]
    used = [b - a for a, b in zip(cpu0, cpu1)]  # the bridges', the oracle's, this client's
    cpu_ms = {"sim_bridge": 1e3 * sum(used[:bridges]) / max(n, 1), "caption_oracle": 1e3 * used[bridges] / max(n, 1),
              "client": 1e3 * used[bridges + 1] / max(n, 1)}
    return {"samples_per_s": n / dt, "valid_per_s": counts["valid"] / dt, "valid_fraction": counts["valid"] / max(n, 1),
            "relations_per_valid": counts["relations"] / max(counts["valid"], 1), "errors": counts["errors"],
            "images_received": counts["images"], "captions_received": counts["captions"], "n": n, "bridges": bridges,
            "cpu_ms_per_sample": cpu_ms, "cores_busy": sum(used) / dt}
