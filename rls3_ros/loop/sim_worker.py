"""The loop's simulator on the second core: backends in worker processes, next scene built ahead.

A reset (build the room, compile the MuJoCo model, bind the renderer, place three objects with
physics checks) costs about as much as ten moves (~90 ms of ~190 ms per episode at 160 px), and
it does not depend on anything the agent does: the scene of episode k+1 is a pure function of
its seed and scene type. :class:`PrefetchSource` keeps **two** backends, each in its own process,
and alternates them by episode: while the env steps episode k on one, the other builds the scene
of episode k+1 (the env says which through :meth:`PrefetchSource.prefetch` right after each
reset). The main process (VLM scoring, fine-tuning, agent updates) and the simulator then run
on different cores; moves stay synchronous (the agent's next action depends on their result),
but while the worker simulates one, ``while_waiting`` runs here: the loop computes the VLM
features of the previous valid render then (the feature cache hands them to the episode's J2
scoring; the features are batch-invariant, so nothing changes but when they are computed).

Determinism: a backend's reset re-seeds everything it draws from (``MuJoCoBackend._reset``), so
a prefetched scene is the scene a serial :class:`~rls3_ros.loop.env.BackendSource` would build
for the same seed and type, move for move (``test/test_rl_sim_worker.py`` compares both).
A hint that does not match the reset the env then asks for (a retried seed, a resumed run) is
dropped and the reset runs synchronously. Renders are counted when the env consumes them, so a
scene built ahead and never used (the run ended) is not counted.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from rls3_ros.loop.env import Bounds, SimSource, SimStep
from rls3_ros.sim.backend import MoveAction


def _serve(conn) -> None:
    """Worker process: one backend behind a pipe; answers ("ok", value) or ("error", type, text)."""
    from rls3_ros.loop.env import BackendSource
    from rls3_ros.sim.factory import make_backend

    try:
        backend_name, params = conn.recv()
        src = BackendSource(make_backend(backend_name, **params))
        conn.send(("ok", (tuple(src.scene_types), tuple(src.categories))))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        conn.send(("error", type(e).__name__, f"{e}\n{traceback.format_exc()}"))
        return
    try:
        while True:
            try:
                cmd, args = conn.recv()
            except EOFError:
                break
            if cmd == "close":
                break
            try:
                if cmd == "reset":
                    step = src.reset(*args)
                    out: Any = (step, src.placement_bounds(step.scene))
                elif cmd == "apply":
                    out = src.apply(args[0])
                elif cmd == "receptacles":
                    out = src.receptacles()
                else:
                    raise ValueError(f"unknown command {cmd!r}")
                conn.send(("ok", out, src.work_seconds()))
            except Exception as e:  # noqa: BLE001 - the parent re-raises it
                conn.send(("error", type(e).__name__, str(e)))
    finally:
        src.close()
        conn.close()


_ERRORS = {"RuntimeError": RuntimeError, "ValueError": ValueError, "KeyError": KeyError}


class _Worker:
    """One backend in a fresh child interpreter (``python -m rls3_ros.loop.sim_worker FD``: no GL
    context, torch threads or ``__main__`` re-import inherited), a pickled pipe to it."""

    def __init__(self, backend_name: str, params: Dict[str, Any]):
        parent, child = socket.socketpair()
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "rls3_ros.loop.sim_worker", str(child.fileno())],
                                         pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.conn.send((backend_name, dict(params)))
        self.pending: Optional[Tuple[int, Optional[str]]] = None  # reset sent, answer not read yet
        self.work: Dict[str, float] = {}  # the worker's simulator work as of its last answer
        self.meta: Optional[Tuple[Sequence[str], Sequence[str]]] = None

    def started(self) -> Tuple[Sequence[str], Sequence[str]]:
        if self.meta is None:
            self.meta = self._result()
        return self.meta

    def send(self, cmd: str, *args) -> None:
        try:
            self.conn.send((cmd, args))
        except OSError as e:  # broken pipe: the process is gone
            raise RuntimeError(f"simulator worker (pid {self.proc.pid}) died (exit code {self.proc.poll()})") from e

    def _result(self):
        try:
            msg = self.conn.recv()
        except EOFError as e:
            raise RuntimeError(f"simulator worker (pid {self.proc.pid}) died (exit code {self.proc.poll()})") from e
        if msg[0] == "ok":
            if len(msg) > 2:  # the worker's cumulative simulator work, sent with every answer
                self.work = msg[2]
            return msg[1]
        raise _ERRORS.get(msg[1], RuntimeError)(msg[2])

    def call(self, cmd: str, *args):
        self.send(cmd, *args)
        return self._result()

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                if self.pending is not None:  # a scene being built: wait for it a while, not for ever
                    try:
                        if self.conn.poll(10):
                            self._result()
                    except Exception:  # noqa: BLE001 - closing anyway
                        pass
                self.conn.send(("close", ()))
        except (OSError, EOFError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.conn.close()


class PrefetchSource(SimSource):
    """Two backends in worker processes, alternating by episode, the next scene built ahead
    (see module docstring). Same interface and same samples as a serial ``BackendSource``."""

    def __init__(self, backend_name: str = "mujoco", **params):
        self.renders = 0
        self._workers = [_Worker(backend_name, params), _Worker(backend_name, params)]
        self._lock = threading.Lock()
        self._active = 0
        self._bounds: Optional[Bounds] = None
        self.prefetch_hits = 0
        self.prefetch_misses = 0
        # called with the previous move's SimStep (None after a reset) while a move is simulated in
        # the worker: the loop computes that image's VLM features there (cached for J2 scoring)
        self.while_waiting: Optional[Callable[[Optional[SimStep]], None]] = None
        # more of this process's work run while a move is simulated, as (stage, job): the SAC agent's
        # gradient steps ("agent_update"). Each job's seconds are reported by take_overlap() under its stage,
        # so the loop's time split does not count them as waiting on the simulator.
        self.idle_jobs: List[Tuple[str, Callable[[], None]]] = []
        self._overlap: Dict[str, float] = {}
        self._last_step: Optional[SimStep] = None
        try:
            self._scene_types, self._categories = self._workers[0].started()
            self._workers[1].started()
        except BaseException:
            self.close()
            raise

    @property
    def scene_types(self) -> Sequence[str]:
        return self._scene_types

    @property
    def categories(self) -> Sequence[str]:
        return self._categories

    def prefetch(self, seed: int, scene_type: Optional[str] = None) -> None:
        """Start building the scene of (``seed``, ``scene_type``) on the idle backend."""
        with self._lock:
            w = self._workers[1 - self._active]
            if w.pending is not None:
                if w.pending == (int(seed), scene_type):
                    return
                self._drain(w)
            w.send("reset", int(seed), scene_type)
            w.pending = (int(seed), scene_type)

    @staticmethod
    def _drain(w: _Worker) -> None:
        w.pending = None
        try:
            w._result()
        except Exception:  # noqa: BLE001 - an unused scene's failure does not matter
            pass

    def reset(self, seed: int, scene_type: Optional[str] = None) -> SimStep:
        key = (int(seed), scene_type)
        with self._lock:
            idle = self._workers[1 - self._active]
            if idle.pending == key:
                idle.pending = None
                self._active = 1 - self._active
                self.prefetch_hits += 1
                step, bounds = idle._result()
            else:
                if idle.pending is not None:
                    self._drain(idle)
                w = self._workers[self._active]
                if w.pending is not None:
                    self._drain(w)
                self.prefetch_misses += 1
                step, bounds = w.call("reset", *key)
            self._bounds = bounds
            self._last_step = None
            self.renders += 1
            return step

    def apply(self, action: MoveAction) -> SimStep:
        with self._lock:
            w = self._workers[self._active]
            w.send("apply", action)
            try:
                self._work_while_waiting()
            finally:
                step = w._result()
            self._last_step = step
            self.renders += 1
            return step

    def _work_while_waiting(self) -> None:
        """This process's work while the worker simulates: the agent's pending updates first (its next
        action needs them), then the previous render's VLM features (needed at the episode's end)."""
        jobs = list(self.idle_jobs)
        if self.while_waiting is not None:
            last = self._last_step
            jobs.append(("features", lambda: self.while_waiting(last)))
        for stage, job in jobs:
            t0 = time.perf_counter()
            try:
                job()
            finally:
                self._overlap[stage] = self._overlap.get(stage, 0.0) + time.perf_counter() - t0

    def take_overlap(self) -> Dict[str, float]:
        """Seconds per stage of the work done while moves were simulated, since the last call."""
        with self._lock:
            out, self._overlap = self._overlap, {}
            return out

    def placement_bounds(self, scene) -> Bounds:
        return self._bounds if self._bounds is not None else super().placement_bounds(scene)

    def receptacles(self):
        """The active backend's support surfaces now (they include the active objects' tops)."""
        with self._lock:
            return self._workers[self._active].call("receptacles")

    def work_seconds(self) -> Dict[str, float]:
        """Both workers' simulator work as of their last answers (a scene still being built ahead
        counts when its answer is read)."""
        with self._lock:
            out: Dict[str, float] = {}
            for w in self._workers:
                for k, v in w.work.items():
                    out[k] = out.get(k, 0.0) + float(v)
            return out

    def close(self) -> None:
        for w in getattr(self, "_workers", []):
            w.close()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the loop's to handle: it closes its workers
    _serve(Connection(int(sys.argv[1])))
