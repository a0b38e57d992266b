"""Helpers for tests that run real rclpy nodes in real processes over loopback DDS."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

PYTHON = sys.executable

# A deadline in a test catches a hang; it never checks speed (a busy CI machine runs everything
# several times slower). Every wait of this harness, the per-test pytest timeout (conftest.py) and
# the deadlines tests pass to nodes through ``deadline()`` allow TIMEOUT_SCALE times the figure
# written in the test, which its author chose as ~10x the idle duration. RLS3_TEST_TIMEOUT_SCALE
# sets another factor (a slower machine: more; a failing test found sooner: 1).
TIMEOUT_SCALE = max(1.0, float(os.environ.get("RLS3_TEST_TIMEOUT_SCALE", "4")))


def deadline(seconds: float) -> float:
    """``seconds`` as the harness allows it (``TIMEOUT_SCALE`` x), for deadlines a test hands to
    anything that is not this harness (a node's parameter, ``--timeout``, ``subprocess.run``)."""
    return float(seconds) * TIMEOUT_SCALE


def poll_until(predicate: Callable[[], object], timeout: float, what: str = "condition", interval: float = 0.02):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``deadline(timeout)`` s."""
    timeout = deadline(timeout)
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


class NodeProcess:
    """A real process (node or program) with its output in a log file.

    ``args`` is the command after the interpreter, e.g. ``["-m", "rls3_ros.ros.nodes.sim_bridge",
    "--ros-args", "-p", "image_size:=64"]``; a first element that is a path to a .py file runs
    that script. On exit the process gets SIGINT, then SIGTERM, then SIGKILL.
    """

    def __init__(self, args: List[str], env: Dict[str, str], name: str, log_dir: Optional[Path] = None,
                 preexec_fn: Optional[Callable[[], None]] = None):
        self.args = [PYTHON, *args]
        self.preexec_fn = preexec_fn
        self.env = env
        self.name = name
        root = Path(log_dir or env.get("ROS_HOME", "/tmp"))
        root.mkdir(parents=True, exist_ok=True)
        self.log_path = root / f"{name}.{os.getpid()}.{id(self)}.log"
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "NodeProcess":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=self.preexec_fn,
        )
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, pattern: str, timeout: float = 30.0) -> re.Match:
        rx = re.compile(pattern)

        def found():
            m = rx.search(self.output())
            if m is None and not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before printing {pattern!r}:\n{self.output()[-3000:]}")
            return m

        try:
            return poll_until(found, timeout, f"{self.name} to print {pattern!r}", interval=0.05)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n--- {self.name} output ---\n{self.output()[-3000:]}") from None

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        timeout = deadline(timeout)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} still running after {timeout}s:\n{self.output()[-3000:]}") from None

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        if self.proc is None:
            return None
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        self._log.close()
        return self.proc.returncode


class BackgroundSpinner:
    """An in-process rclpy node with its own Context, spun by an executor thread."""

    def __init__(self, name: str):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown races end the spin; anything else is shown
            if self.context.ok():
                import traceback

                print(f"[{self.node.get_name()}] background spin died:\n{traceback.format_exc()}",
                      file=sys.stderr, flush=True)

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(timeout=5.0)


class UnspunNode:
    """An rclpy node in its own Context that no executor spins: for entities a test creates and
    destroys from the test thread (destroying an entity with QoS event handlers that another
    thread's executor is about to take from ends that executor's spin, ros2/rclpy#1284)."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        import rclpy

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(self.name, context=self.context)
        return self.node

    def __exit__(self, *exc):
        self.node.destroy_node()
        self.context.try_shutdown()
        return False


def spin_until_future(future, timeout: float, what: str = "future"):
    """Wait (the executor spins in the background) until ``future`` is done; return its result."""
    poll_until(future.done, timeout, what, interval=0.01)
    return future.result()


def call_service(node, srv_type, name: str, request, timeout: float = 30.0):
    """Wait for service ``name`` and call it from the background-spun ``node``."""
    client = node.create_client(srv_type, name)
    try:
        if not client.wait_for_service(timeout_sec=deadline(timeout)):
            raise TimeoutError(f"service {name} not available after {deadline(timeout)}s")
        return spin_until_future(client.call_async(request), timeout, f"answer of {name}")
    finally:
        node.destroy_client(client)


def startup_failure_problems(label: str, code: int, out: str, expected: str) -> list:
    """What is wrong with a node start that should have been refused: exit 2 (any non-zero when
    ``code`` 0 is the only failure), no traceback, exactly one 'startup failed' line naming ``expected``."""
    problems = []
    reason = [line for line in out.splitlines() if "startup failed" in line]
    if code == 0:
        problems.append(f"{label}: exit 0")
    if "Traceback" in out:
        problems.append(f"{label}: traceback:\n{out[-1500:]}")
    if len(reason) != 1:
        problems.append(f"{label}: expected one 'startup failed' line, got {len(reason)}:\n{out[-1500:]}")
    elif expected not in reason[0]:
        problems.append(f"{label}: reason {reason[0]!r} does not say {expected!r}")
    return problems

