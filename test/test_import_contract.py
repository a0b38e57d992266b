"""The layers' import contract (``.importlinter``), checked by import-linter over the real import
graph: the science and the pure bag I/O import no ROS client library, and each layer imports only
the layers below it. A new ``import rclpy`` in, say, ``rls3_ros/loop`` fails this test."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(config: Path):
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_the_layer_contract_holds():
    out = _lint(ROOT / ".importlinter")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout, out.stdout[-2000:]


def test_the_contract_catches_a_forbidden_import(tmp_path):
    """The same contract over a copy of the package in which one loop module imports rclpy is broken:
    the check can fail."""
    import shutil

    pkg = tmp_path / "rls3_ros"
    shutil.copytree(ROOT / "rls3_ros", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    victim = pkg / "loop" / "scheduler.py"
    victim.write_text("import rclpy  # planted\n" + victim.read_text())
    cfg = tmp_path / ".importlinter"
    cfg.write_text((ROOT / ".importlinter").read_text())
    exe = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(exe), "--config", str(cfg), "--no-cache"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0, out.stdout[-2000:]
    assert "rls3_ros.loop.scheduler -> rclpy" in out.stdout, out.stdout[-3000:]
