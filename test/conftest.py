"""Test isolation: every test that touches ROS gets its own domain, loopback discovery,
fast-discovery profile and temp ROS_HOME; nothing is written under ~/.ros or ~/.cache."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# CI runs every property test on the same examples (a red CI must be reproducible);
# locally hypothesis explores new examples each run. Neither times an example (no deadline, no
# too_slow health check): a busy machine is slow, not wrong.
_NO_TIMING = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", derandomize=True, print_blob=True, **_NO_TIMING)
settings.register_profile("local", **_NO_TIMING)
settings.load_profile("ci" if os.environ.get("CI") else "local")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rls3_ros.ros.isolation import isolated_ros_env  # noqa: E402

# Process-wide defaults before anything imports rclpy (logging is set up once per process).
_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="rls3-test-"))
os.environ.update(isolated_ros_env(_SESSION_ROOT))


def pytest_collection_modifyitems(config, items):
    """The per-test timeout (pytest.ini, ``--timeout``, ``@pytest.mark.timeout``) is a hang guard:
    scaled like every deadline of the harness (``ros_harness.TIMEOUT_SCALE``), never a speed check."""
    from ros_harness import TIMEOUT_SCALE

    default = getattr(config, "_env_timeout", None) or config.getini("timeout")
    for item in items:
        m = item.get_closest_marker("timeout")
        kwargs = dict(m.kwargs) if m is not None else {}
        args = list(m.args) if m is not None else []
        base = kwargs.pop("timeout", None) if "timeout" in kwargs else (args.pop(0) if args else default)
        if base and float(base) > 0:  # 0 or unset: no timeout, nothing to scale
            item.add_marker(pytest.mark.timeout(float(base) * TIMEOUT_SCALE, *args, **kwargs), append=False)


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
