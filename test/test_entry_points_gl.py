"""Every entry point renders offscreen without ``make`` (issue 26, item 10).

``make`` exports ``MUJOCO_GL=egl``; run directly, an entry point has no GL setting at all. MuJoCo picks
its GL backend once, when ``mujoco`` is first imported: unset means GLFW, which without a display
aborts the whole process (``__cxa_guard_acquire detected recursive initialization``). The default
(``rls3_ros.sim.gl_env``) is set by ``import rls3_ros``, i.e. before any entry point of the package can
import mujoco. The tests run real entry points in real processes with ``MUJOCO_GL``,
``PYOPENGL_PLATFORM`` and ``DISPLAY`` removed from their environment: they render, and every entry
module sees the default as soon as it is imported. Before the default moved into the package,
``rls3 bench speed`` (whose machine reference imports mujoco first) and a program importing mujoco
after rls3_ros aborted (rc -6), and no entry module saw a default (``rls3 sim sheet`` worked only
because the MuJoCo backend happened to be its first import of mujoco).
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ros_harness import deadline, poll_until

from rls3_ros.ros.isolation import isolated_ros_env
from rls3_ros.sim.gl_env import set_offscreen_gl_default

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
GL_VARS = ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")
ABORT_SIGNS = ("recursive initialization", "GLFWError", "Traceback")


def _bare_env(tmp_path: Path) -> dict:
    """An isolated environment (own ROS domain, caches in tmp_path) as a user's shell without
    ``make`` and without a display has it: no GL variable at all."""
    env = isolated_ros_env(tmp_path)  # it fills in MUJOCO_GL: removed again below
    for k in GL_VARS:
        env.pop(k, None)
    env["RLS3_CACHE"] = str(tmp_path / "cache")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _console_script(name: str) -> str:
    exe = Path(PYTHON).with_name(name)
    assert exe.is_file(), f"console script {name} not installed next to {PYTHON} (make setup installs it)"
    return str(exe)


def _run(cmd, env, cwd, timeout=120):
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=deadline(timeout))
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"rc {r.returncode}:\n{out[-3000:]}"
    for sign in ABORT_SIGNS:
        assert sign not in out, out[-3000:]
    return out


def _assert_rendered(rgb: np.ndarray) -> None:
    """A rendered room: varied pixels, mostly neither black (no GL output) nor one flat colour."""
    assert rgb.size and float(rgb.std()) > 5.0, float(rgb.std())
    assert float((rgb.max(axis=-1) > 10).mean()) > 0.5, "mostly black: nothing was rendered"


def test_a_program_importing_mujoco_after_rls3_ros_renders(tmp_path):
    """The package is the entry point of a user's program: ``import rls3_ros`` then ``import mujoco``
    (which picks the GL backend) then the MuJoCo backend. Aborted before the default moved into the
    package (it was set only when ``rls3_ros.sim.mujoco_backend`` was imported)."""
    code = (
        "import os, sys, numpy as np\n"
        "import rls3_ros\n"
        "import mujoco  # picks its GL backend now\n"
        "from rls3_ros.sim.mujoco_backend import MuJoCoBackend\n"
        "b = MuJoCoBackend(image_size=64, seed=0)\n"
        "b.reset(3)\n"
        "rgb = b.render().rgb\n"
        "b.close()\n"
        "np.save(sys.argv[1], rgb)\n"
        "print('GL', os.environ.get('MUJOCO_GL'), os.environ.get('PYOPENGL_PLATFORM'))\n"
    )
    npy = tmp_path / "rgb.npy"
    out = _run([PYTHON, "-c", code, str(npy)], _bare_env(tmp_path), tmp_path)
    assert "GL egl egl" in out, out
    rgb = np.load(npy)
    assert rgb.shape == (64, 64, 3), rgb.shape
    _assert_rendered(rgb)


def test_rls3_bench_speed_gets_past_its_first_renders_without_make(tmp_path):
    """The command of the issue: ``rls3 bench speed --quick`` imports mujoco for its machine reference
    before any simulator, then renders the in-process generation. Without the package default it
    aborted right there (GLFW, no display). It is stopped once it has moved on to the ROS part."""
    env = _bare_env(tmp_path)
    log = tmp_path / "bench.log"
    with open(log, "wb") as f:
        p = subprocess.Popen([_console_script("rls3"), "bench", "speed", "--quick", "--out", str(tmp_path / "out")],
                             env=env, cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        passed = "generation through ROS"
        # idle: ~6 s to get there
        poll_until(lambda: passed in log.read_text(errors="replace") or p.poll() is not None, 120,
                   "the bench to get past its in-process generation", interval=0.2)
        text = log.read_text(errors="replace")
        assert passed in text, f"rc {p.returncode}:\n{text[-3000:]}"
        assert "generation in-process: 30 samples" in text
        for sign in ABORT_SIGNS:
            assert sign not in text, text[-3000:]
    finally:
        if p.poll() is None:  # the process group this test started (the bench and its node processes)
            os.killpg(p.pid, signal.SIGINT)
            try:
                p.wait(timeout=deadline(60))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=60)


def _entry_modules() -> list:
    """The modules of every console script (setup.py) and every ``python -m`` of README/docs."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and re.fullmatch(r"\s*\w+\s*=\s*[\w.]+:\w+\s*", n.value)]
    mods = [s.split("=", 1)[1].split(":")[0].strip() for s in scripts]
    mods += ["rls3_ros.ros.launcher", "rls3_ros.loop.sim_worker"]  # the launcher's and the loop's child processes
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for d in docs:
        mods += [m.rstrip(".") for m in re.findall(r"python -m (rls3_ros[\w.]*)", d.read_text())]
    return sorted(set(mods))


def test_every_entry_point_is_inside_the_package_that_sets_the_default(tmp_path):
    """Each entry module imports ``rls3_ros`` (and so sets the default) before its own first line: it
    is inside the package. Checked in a fresh process per module, without GL variables, by the
    environment the module sees when it is imported."""
    mods = _entry_modules()
    assert "rls3_ros.cli.main" in mods and "rls3_ros.ros.nodes.sim_bridge" in mods, mods
    code = ("import importlib, os, sys\n"
            "importlib.import_module(sys.argv[1])\n"
            "print('GL', os.environ.get('MUJOCO_GL'), os.environ.get('PYOPENGL_PLATFORM'))\n")
    env = _bare_env(tmp_path)
    for mod in mods:
        assert mod.startswith("rls3_ros."), mod
        out = _run([PYTHON, "-c", code, mod], env, tmp_path, timeout=60)
        assert "GL egl egl" in out, (mod, out)


@pytest.mark.parametrize("given, expected", [
    ({}, {"MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}),
    ({"MUJOCO_GL": "osmesa"}, {"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}),
    ({"PYOPENGL_PLATFORM": "osmesa"}, {"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}),
    ({"MUJOCO_GL": "glfw"}, {"MUJOCO_GL": "glfw"}),  # a desktop with a display: left alone
    ({"MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}, {"MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}),
])
def test_the_default_keeps_what_the_user_set(given, expected):
    env = dict(given)
    set_offscreen_gl_default(env)
    assert env == expected
