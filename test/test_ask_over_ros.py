"""issue 27's outside check, as a test: a plain rclpy client asking the spatial_query node (its own
process, isolated loopback domain) "where" on `rls3 captions` images gets the same terms as the
model asked in-process, and the tool scores every relation of the dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(600)


def test_plain_rclpy_where_answers_equal_the_direct_calls(tmp_path):
    out = tmp_path / "where_over_ros.json"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "ask_over_ros.py"), "--n", "3", "--size", "160",
                        "--seed", "5150", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=580)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = json.loads(out.read_text())
    assert res["node_vs_direct_disagreements"] == 0
    assert res["images"] == 3 and res["n"] >= 3  # every relation of every image was asked
    assert sum(d["n"] for d in res["per_term"].values()) >= res["n"]
