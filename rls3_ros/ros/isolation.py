"""Environment for an isolated ROS 2 run on loopback (tests, CI, benchmarks).

Pure Python (no rclpy import): it only builds the environment a process needs *before*
rclpy starts: its own ROS_DOMAIN_ID, discovery limited to localhost, the fast-discovery
Fast DDS profile, and ROS_HOME / log / Mesa cache directories inside ``root``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path
from typing import Dict, Iterator, Optional

from rls3_ros.core.share_dir import data_path

# the source tree's copy, else the one setup.py installs to <prefix>/share/rls3_ros/config/
FASTDDS_PROFILE = data_path("config", "fastdds_localhost.xml")

_counter = itertools.count()


def pick_domain_id() -> int:
    """A domain id in 1..100 that differs between concurrent runs (by pid) and calls."""
    return 1 + (os.getpid() * 7 + next(_counter) * 13) % 100


def isolated_ros_env(root: Path, domain_id: Optional[int] = None, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """A copy of ``base`` (default os.environ) set up for an isolated loopback ROS run."""
    root = Path(root)
    env = dict(os.environ if base is None else base)
    # A child inheriting the wheels' bootstrap mark from another venv fails to import rclpy.
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    ros_home = root / "ros_home"
    log_dir = ros_home / "log"
    cache = root / "cache"
    for d in (log_dir, cache):
        d.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "ROS_DOMAIN_ID": str(domain_id if domain_id is not None else pick_domain_id()),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "ROS_LOCALHOST_ONLY": "0",
            "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
            "FASTDDS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE),
            "ROS_HOME": str(ros_home),
            "ROS_LOG_DIR": str(log_dir),
            "MESA_SHADER_CACHE_DIR": str(cache / "mesa"),
            "MUJOCO_GL": env.get("MUJOCO_GL", "egl"),
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
    )
    return env


@contextlib.contextmanager
def ros_env_applied(env: Dict[str, str]) -> Iterator[None]:
    """Apply ``env``'s ROS / Fast DDS variables to this process while the block runs (an rclpy context
    started inside joins that isolated domain), then restore them."""
    saved = {k: os.environ.get(k) for k in env if k.startswith(("ROS_", "FASTDDS", "RMW_"))}
    os.environ.update({k: env[k] for k in saved})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
