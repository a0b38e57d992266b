"""rls3_ros: RLS3 (RL-based synthetic sample selection) for spatial VLMs on ROS 2.

Layers: the science (scene types, simulator backends, caption oracle, VLMs, RL env,
scheduler) lives in plain Python modules with no ROS import; ``rls3_ros.ros.nodes`` holds
thin rclpy nodes that convert messages to these types and call the science.
"""

__version__ = "0.1.0"

# Before any submodule can import mujoco (or PyOpenGL), which pick their GL backend once, on first
# import: the offscreen default (MUJOCO_GL=egl, PYOPENGL_PLATFORM to match) unless the user set one.
# Every entry point (the rls3 and node console scripts, ``python -m rls3_ros...``, worker processes)
# imports this package first, with or without ``make``.
from rls3_ros.sim.gl_env import set_offscreen_gl_default as _set_offscreen_gl_default  # noqa: E402

_set_offscreen_gl_default()
