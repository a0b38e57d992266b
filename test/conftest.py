"""Test isolation: every test that touches ROS gets its own domain, loopback discovery,
fast-discovery profile and temp ROS_HOME; nothing is written under ~/.ros or ~/.cache."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs every property test on the same examples (a red CI must be reproducible);
# locally hypothesis explores new examples each run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rls3_ros.ros.isolation import isolated_ros_env  # noqa: E402

# Process-wide defaults before anything imports rclpy (logging is set up once per process).
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="rls3-test-"))
os.environ.update(isolated_ros_env(_SESSION_ROOT))


@pytest.fixture
def ros_env(tmp_path, monkeypatch):
    """Env vars for an isolated ROS run (own domain id); also applied to os.environ."""
    env = isolated_ros_env(tmp_path)
    for k, v in env.items():
        if k.startswith(("ROS_", "FASTDDS", "RMW_")):
            monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def rclpy_node(ros_env):
    """An in-process rclpy node (own Context) spun in a background thread."""
    from ros_harness import BackgroundSpinner

    spinner = BackgroundSpinner("test_client")
    try:
        yield spinner.node
    finally:
        spinner.close()
