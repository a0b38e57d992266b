"""The benchmark of the vlm_trainer's ScoreSamples latency, idle and during a fine-tune
(``rls3_ros.bench.trainer_score``, reported by ``rls3 bench speed``), against a real vlm_trainer
process with the tiny test model over isolated loopback DDS. The figure itself is not asserted
(a test cannot bound a speed on a busy machine): only that both phases answered every request
and the fine-tune goal was running and cancelled."""

from __future__ import annotations

import os
from pathlib import Path

import vlm_test_model as tm

TEST_DIR = str(Path(__file__).resolve().parent)


def test_scores_are_measured_idle_and_during_a_fine_tune(ros_env, tmp_path, monkeypatch):
    from rls3_ros.bench.trainer_score import bench_score_during_fine_tune

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TEST_DIR, os.environ.get("PYTHONPATH", "")]))
    out = bench_score_during_fine_tune("py:vlm_test_model:load", tm.make_samples(8, seed=3), 6, tmp_path)
    assert out["n"] == 6
    for phase in ("idle", "during_fine_tune"):
        st = out[phase]
        assert st["n"] == 6 and 0 < st["min_ms"] <= st["p50_ms"] <= st["max_ms"], (phase, st)
    assert out["fine_tune_steps_during"] >= 0
    log = (tmp_path / "vlm_trainer.log").read_text()
    assert "fine-tune iteration 1: 100000 steps" in log and "Traceback" not in log, log[-3000:]


def test_speed_markdown_reports_scoring_idle_and_during_a_fine_tune(tmp_path):
    from test_bench_generation import _speed_doc

    from rls3_ros.bench.speed import write_markdown

    doc = _speed_doc((1, 2), 2)
    md = tmp_path / "speed.md"
    write_markdown(doc, md)
    assert "while it fine-tunes" not in md.read_text()  # older speed.json: no such line
    doc["score_during_fine_tune"] = {"idle": {"p50_ms": 5.04, "max_ms": 16.8},
                                     "during_fine_tune": {"p50_ms": 10.7, "max_ms": 12.1}}
    write_markdown(doc, md)
    assert ("| vlm_trainer ScoreSamples (1 sample) p50 / max, idle; while it fine-tunes | 5.0 / 16.8 ms; "
            "10.7 / 12.1 ms |") in md.read_text()
