"""The README's figures are generated from the result files (``tools/readme_figures.py``), never hand-edited.

The committed README must be what the tool renders from the committed sources, and a changed source
must change the README: a figure edited in a copy of ``results/served_model.json`` appears in the
rendered block, with its goal verdict; a main-job record made from a real (quick) run's
``served_gain.json`` and ``metrics.jsonl`` states that run's own counts.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "readme_figures.py"


def _tool():
    spec = importlib.util.spec_from_file_location("readme_figures", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_readme_is_what_its_sources_render():
    r = subprocess.run([sys.executable, str(TOOL), "check"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_changed_source_changes_the_block(tmp_path, monkeypatch):
    rf = _tool()
    served = json.loads(rf.SERVED.read_text())
    edited = copy.deepcopy(served)
    size = sorted(edited["sizes"], key=int)[0]
    edited["sizes"][size]["new"]["pointing"] = 0.9321
    src = tmp_path / "served_model.json"
    src.write_text(json.dumps(edited))
    monkeypatch.setattr(rf, "SERVED", src)
    readme = rf.README.read_text()
    assert "<!-- figures:served -->" in readme
    new = rf.render(readme)
    block = new.split("<!-- figures:served -->")[1].split("<!-- /figures:served -->")[0]
    line = next(ln for ln in block.splitlines() if ln.startswith("| pointing"))
    assert "0.932 met" in line  # the edited value, judged against the goal stated in the source
    assert new.replace(block, "") == readme.replace(
        readme.split("<!-- figures:served -->")[1].split("<!-- /figures:served -->")[0], "")  # prose untouched


def test_a_missing_source_is_refused(tmp_path, monkeypatch):
    rf = _tool()
    monkeypatch.setattr(rf, "SERVED", tmp_path / "absent.json")
    with pytest.raises(SystemExit, match="served"):
        rf.render(rf.README.read_text())


@pytest.mark.timeout(900)
def test_record_states_the_runs_own_counts(tmp_path):
    """A real quick main-job run, recorded: the counts are the run's metrics', the table its served_gain's."""
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "rls3_ros.cli", "train", "--quick", "--out", str(run), "--no-progress",
                        "--set", "loop.budget_valid_samples=12"],
                       capture_output=True, text=True, cwd=ROOT, timeout=850)
    assert r.returncode == 0, r.stderr[-2000:]
    rf = _tool()
    rec = rf.record(run)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    episodes = [x for x in rows if x["type"] == "episode"]
    assert rec["valid_samples"] == episodes[-1]["valid_samples"] >= 12
    assert rec["renders"] == episodes[-1]["total_renders"]
    assert rec["fine_tunes"] == len([x for x in rows if x["type"] == "iteration" and x["iteration"] > 0]) >= 1
    block = rf.main_job_block(rec)
    gain = json.loads((run / "served_gain.json").read_text())
    test = gain["splits"]["test"]
    assert f"balanced test ({test['n']}) | {test['base']:.3f} |" in block
    assert f"{rec['valid_samples']} valid samples from {rec['renders']} renders" in block
