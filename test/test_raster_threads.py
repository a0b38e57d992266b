"""Raster threads per simulator process (rls3_ros/sim/raster_threads.py): shared out among the
bridges of a graph, and really what Mesa's llvmpipe starts in the process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rls3_ros.ros import graph_spec as G
from rls3_ros.sim.raster_threads import shared_raster_threads

pytestmark = pytest.mark.timeout(120)

_COUNT_LLVMPIPE_THREADS = """
import os, sys
from rls3_ros.sim.raster_threads import set_raster_threads
set_raster_threads(int(sys.argv[1]))
from rls3_ros.sim.factory import make_backend
b = make_backend("mujoco", image_size=32, seed=0)
b.reset(0)
b.render()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(sum(n.startswith("llvmpipe-") for n in names))
b.close()
"""


def test_the_cores_are_shared_out_among_several_rendering_processes():
    assert shared_raster_threads(1, cpus=8) == 0  # one process: llvmpipe's own choice
    assert shared_raster_threads(2, cpus=8) == 4
    assert shared_raster_threads(2, cpus=2) == 1
    assert shared_raster_threads(4, cpus=2) == 1  # never none


def test_training_graph_gives_its_bridges_their_share():
    one = G.training_graph(bridges=1)
    assert "render_threads" not in one[0].params
    three = [s for s in G.training_graph(bridges=3) if s.name == "sim_bridge"]
    assert [s.params["render_threads"] for s in three] == [shared_raster_threads(3)] * 3


def test_llvmpipe_starts_the_raster_threads_set(tmp_path):
    env = dict(os.environ, MUJOCO_GL="egl", MESA_SHADER_CACHE_DIR=str(tmp_path))
    env.pop("LP_NUM_THREADS", None)
    counts = {}
    for n in (1, 2):
        out = subprocess.run([sys.executable, "-c", _COUNT_LLVMPIPE_THREADS, str(n)], env=env, capture_output=True,
                             text=True, timeout=100)
        assert out.returncode == 0, out.stderr[-2000:]
        counts[n] = int(out.stdout.split()[-1])
    assert counts == {1: 1, 2: 2}
