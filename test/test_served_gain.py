"""The run's served-model figures (served_gain.json): paired gains of what is served and of the last
fine-tune the gate held back, computed from the per-relation answers the history keeps."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from rls3_ros.loop.served_gain import format_gain, paired_difference, served_gain


def _it(iteration: int, test: str, val: str, adapter: str = ""):
    return SimpleNamespace(iteration=iteration, adapter_path=adapter,
                           splits={"test": {"correct": test}, "val": {"correct": val}})


def test_paired_difference_counts_changed_answers_only():
    d = paired_difference([True, True, False, False], [True, False, True, True])
    assert d["base"] == 0.5 and d["tuned"] == 0.75 and d["gain"] == pytest.approx(0.25)
    assert d["low"] <= d["gain"] <= d["high"]
    with pytest.raises(ValueError):
        paired_difference([True], [True, False])


def test_nothing_served_reports_the_refused_last_fine_tune_with_validation():
    history = [_it(0, "1100", "1010"), _it(1, "1111", "1011", "a1"), _it(2, "0100", "0010", "a2")]
    g = served_gain(history, 0)
    assert g["served_iteration"] == 0 and g["splits"]["test"]["gain"] == 0.0
    assert "val" not in g["splits"]  # the gate chose on validation: no unbiased gain there
    last = g["last"]
    assert last["iteration"] == 2 and last["adapter"] == "a2"
    assert last["splits"]["test"]["gain"] == pytest.approx(-0.25)
    assert last["splits"]["val"]["gain"] == pytest.approx(-0.25)
    assert any("last fine-tune (iteration 2, not served)" in line for line in format_gain(g))


def test_served_last_iteration_has_no_separate_last_entry():
    history = [_it(0, "1100", "1010"), _it(1, "1111", "1111", "a1")]
    g = served_gain(history, 1)
    assert g["adapter"] == "a1" and g["splits"]["test"]["gain"] == pytest.approx(0.5)
    assert "last" not in g


def test_the_run_plot_draws_what_was_served(tmp_path):
    from rls3_ros.loop.report import plot_accuracy, served_curve
    from rls3_ros.loop.run_dir import RunDir

    its = [{"type": "iteration", "iteration": i, "valid_samples": 10 * i, "test_accuracy": a, "val_accuracy": a,
            "test_per_term": {"left": a}, "served_iteration": s}
           for i, (a, s) in enumerate([(0.8, 0), (0.7, 0), (0.9, 2), (0.85, 2)])]
    assert served_curve(its) == [0.8, 0.8, 0.9, 0.9]
    run = RunDir(str(tmp_path / "run"))
    for m in its:
        run.append_metrics(m)
    out = plot_accuracy(run)
    assert os.path.getsize(out) > 10_000
