"""Shared helpers of the reliability tests (fuzz, load, faults, startup parameters).

Not a test module: node environments, RSS of a process, request counters written to
``results/fuzz_counts.json``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Tuple

import pytest

from rls3_ros.ros.isolation import isolated_ros_env

TEST_DIR = Path(__file__).resolve().parent
REPO = TEST_DIR.parent
RESULTS = REPO / "results"
TEST_MODEL = "py:vlm_test_model:load"


def node_env(root: Path) -> Dict[str, str]:
    """An isolated loopback ROS env for node processes (own domain, temp ROS_HOME), one torch
    thread per process (2 shared cores), the test model importable."""
    env = isolated_ros_env(Path(root))
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(TEST_DIR), str(REPO), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    env["RLS3_CACHE"] = str(Path(root) / "cache")
    return env


def apply_ros_env(env: Mapping[str, str], monkeypatch) -> None:
    """Make in-process rclpy clients use the same domain / discovery as ``env``."""
    for k, v in env.items():
        if k.startswith(("ROS_", "FASTDDS", "RMW_")):
            monkeypatch.setenv(k, v)


from rls3_ros.bench.soak import rss_mb  # noqa: E402 - one VmRSS reader for the benchmark and the tests


class Counts:
    """Requests tried per kind (several kinds per request: one per field class)."""

    def __init__(self) -> None:
        self.c: collections.Counter = collections.Counter()

    def add(self, *kinds: str) -> None:
        for k in kinds:
            self.c[k] += 1

    def as_dict(self) -> Dict[str, int]:
        return dict(sorted(self.c.items()))


def write_results(name: str, key: str, data) -> Path:
    """Merge ``{key: data}`` into ``<dir>/<name>`` (JSON, atomic replace) and return its path.

    ``<dir>`` is the checkout's ``results/`` only with ``RLS3_WRITE_RESULTS=1`` (so a plain
    ``make test`` leaves the checkout clean); else ``$RLS3_RESULTS_DIR`` if set; else
    ``rls3-results/`` in pytest's temp root (``$PYTEST_DEBUG_TEMPROOT`` or the system temp dir,
    ``pytest-of-<user>``), which pytest's numbered-dir cleanup leaves alone.
    """
    if os.environ.get("RLS3_WRITE_RESULTS") == "1":
        out = RESULTS
    elif os.environ.get("RLS3_RESULTS_DIR"):
        out = Path(os.environ["RLS3_RESULTS_DIR"]).expanduser()
    else:
        import getpass

        try:
            user = getpass.getuser()
        except (ImportError, KeyError, OSError):
            user = "unknown"
        temproot = Path(os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir())
        out = temproot / f"pytest-of-{user}" / "rls3-results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = {}
    doc[key] = data
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def node_under_test(root: Path, args: List[str], name: str, client_name: str) -> Iterator[Tuple[object, object]]:
    """(NodeProcess, client node) of a node started with ``args`` in an isolated ROS env under
    ``root``; the client node is spun in the background. Everything is undone on exit."""
    from ros_harness import BackgroundSpinner, NodeProcess

    env = node_env(root)
    mp = pytest.MonkeyPatch()
    apply_ros_env(env, mp)
    with NodeProcess(args, env, name, log_dir=root) as proc:
        spinner = BackgroundSpinner(client_name)
        try:
            yield proc, spinner.node
        finally:
            spinner.close()
            mp.undo()


def call_service(client, request, timeout: float = 60.0):
    """The answer of ``client`` (whose node is spun elsewhere) to ``request``, None after ``timeout`` s."""
    done = threading.Event()
    fut = client.call_async(request)
    fut.add_done_callback(lambda _f: done.set())
    if not done.wait(timeout):
        client.remove_pending_request(fut)
        return None
    return fut.result()


def report_fuzz(name: str, counts: Counts, wall: float, rss0: float, rss1: float) -> None:
    """Print what a fuzz run sent and merge it into ``results/fuzz_counts.json`` under ``name``."""
    summary = {"requests": counts.c["total"], "per_kind": counts.as_dict(), "wall_s": round(wall, 1),
               "rss_mb_start": round(rss0, 1), "rss_mb_end": round(rss1, 1)}
    print(f"\n{name} fuzz: {summary['requests']} requests in {wall:.1f} s, RSS {rss0:.0f} -> {rss1:.0f} MB")
    for k, v in summary["per_kind"].items():
        print(f"  {k:34s} {v}")
    write_results("fuzz_counts.json", name, summary)
