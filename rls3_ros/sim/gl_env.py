"""The offscreen OpenGL default for MuJoCo, set before anything can import ``mujoco``.

MuJoCo picks its GL backend once, when ``mujoco`` is first imported (``MUJOCO_GL``; unset means
GLFW, which needs a display: without one it aborts the process with ``__cxa_guard_acquire
detected recursive initialization``). PyOpenGL likewise picks its platform once, on first import
(``PYOPENGL_PLATFORM``). So the default has to be in the environment before the first import of
either, wherever that happens: ``rls3_ros/__init__.py`` calls :func:`set_offscreen_gl_default`, which
runs before any module of the package (every console script, node ``main``, ``python -m
rls3_ros....``, worker process) and so before any of them imports mujoco. Values the user set are
kept. No import here beyond ``os``: this runs on every ``import rls3_ros``.
"""

from __future__ import annotations

import os
from typing import MutableMapping, Optional

_OFFSCREEN = ("egl", "osmesa")  # the MUJOCO_GL values that need PYOPENGL_PLATFORM set to the same


def set_offscreen_gl_default(environ: Optional[MutableMapping[str, str]] = None) -> str:
    """Set ``MUJOCO_GL`` (``egl``) and ``PYOPENGL_PLATFORM`` (the same offscreen platform) in
    ``environ`` (default ``os.environ``) unless already set; returns the ``MUJOCO_GL`` in effect.

    A user's ``PYOPENGL_PLATFORM=osmesa`` (or ``egl``) without ``MUJOCO_GL`` selects the same MuJoCo
    backend (MuJoCo refuses a PyOpenGL platform other than its own); a user's ``MUJOCO_GL=glfw`` (a
    desktop with a display) leaves ``PYOPENGL_PLATFORM`` alone."""
    env = os.environ if environ is None else environ
    platform = env.get("PYOPENGL_PLATFORM", "").strip().lower()
    gl = env.get("MUJOCO_GL", "").strip()
    if not gl:
        gl = platform if platform in _OFFSCREEN else "egl"
        env["MUJOCO_GL"] = gl
    if gl.lower() in _OFFSCREEN and not platform:
        env["PYOPENGL_PLATFORM"] = gl.lower()
    return gl
