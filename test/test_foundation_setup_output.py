"""What a newcomer sees from ``make setup``: one ``[setup]`` line per stage that runs, the tools'
own output (pip, apt, cmake, setuptools' warning boxes) only in ``.venv/.rls3-logs/<stage>.log``,
and a failing tool reported with its log's tail and a non-zero exit (not swallowed)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "tools" / "setup.sh"


def _run(env_venv: Path, **extra):
    return subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RLS3_VENV": str(env_venv), **extra})


def test_a_stage_that_runs_prints_one_line_and_nothing_else():
    # the cmake-path repair is idempotent (already repaired files no longer match): forcing it
    # changes nothing in the venv, but the stage runs and must stay quiet
    stamps = Path(sys.prefix) / ".rls3-stamps"
    before = {p.name: p.read_text() for p in stamps.iterdir()}
    (stamps / "cmake-paths").unlink()
    try:
        out = _run(Path(sys.prefix))
    finally:
        if not (stamps / "cmake-paths").exists():
            (stamps / "cmake-paths").write_text(before["cmake-paths"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["[setup] repairing include paths in ROS cmake exports",
                                       f"[setup] ready: {sys.prefix} (run: .venv/bin/rls3 --help)"], out.stdout
    assert out.stderr == "", out.stderr
    assert {p.name: p.read_text() for p in stamps.iterdir()} == before


def test_a_failing_tool_stops_setup_with_its_log_tail(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"  # a "venv" whose pip fails
    fake.write_text("#!/bin/sh\necho 'pip exploded: no space left' >&2\nexit 3\n")
    fake.chmod(0o755)
    out = _run(venv)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[setup] installing pinned Python packages (first run: ~2 min)", out.stdout
    assert lines[1].startswith("[setup] ERROR: '") and "pip install" in lines[1] and "pip.log" in lines[1], out.stdout
    assert "  pip exploded: no space left" in lines[2:], out.stdout
    assert not (venv / ".rls3-stamps" / "requirements").exists()
    assert "pip exploded" in (venv / ".rls3-logs" / "pip.log").read_text()
