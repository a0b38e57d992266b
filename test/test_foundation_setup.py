"""The install works without sourcing anything, and a second setup run changes nothing."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_interfaces_import_in_a_bare_environment():
    # No ROS sourcing, no inherited bootstrap mark: only what the venv itself provides.
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "ROS_LOG_DIR": os.environ["ROS_LOG_DIR"]}
    code = "import rclpy, rls3_msgs.msg, rls3_msgs.srv, rls3_msgs.action; print(rls3_msgs.action.FineTune.Goal())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "FineTune_Goal" in out.stdout


def test_second_setup_run_changes_nothing():
    stamps = Path(sys.prefix) / ".rls3-stamps"
    before = {p.name: p.read_text() for p in stamps.iterdir()}
    out = subprocess.run(["bash", str(ROOT / "tools" / "setup.sh")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "RLS3_VENV": sys.prefix})
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [l for l in out.stdout.splitlines() if l.startswith("[setup]")]
    assert len(lines) == 1 and "ready" in lines[0], out.stdout
    assert {p.name: p.read_text() for p in stamps.iterdir()} == before
    assert set(before) == {"requirements", "cmake-paths", "rls3_msgs", "rls3_ros"}
