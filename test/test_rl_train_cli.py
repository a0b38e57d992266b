"""``rls3 train`` end to end in one process (real MuJoCo, oracle, a real tiny torch VLM):
run directory contents, config round trip, resume of a finished run, bad arguments."""

from __future__ import annotations

import os

import pytest
import yaml

from rls3_ros.loop.run_dir import RunDir
from rls3_ros.cli.train import cli_train, load_train_config

TINY = ["--set", "run.vlm=py:vlm_test_model:load", "--set", "run.image_size=64", "--set", "run.torch_threads=1",
        "--set", "loop.T=3", "--set", "loop.T0=2", "--set", "loop.E=2", "--set", "loop.fine_tune_steps=1",
        "--set", "loop.budget_valid_samples=8", "--set", "eval.test_scenes=2", "--set", "eval.replay_scenes=2",
        "--set", "eval.moves_per_scene=3", "--set", "eval.test_per_term=4", "--no-pretrain", "--no-progress"]


def test_train_writes_a_complete_run_directory_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLS3_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert cli_train([*TINY, "--agent", "ppo", "--out", str(out)]) == 0
    run = RunDir(str(out))
    cfg = yaml.safe_load(open(run.config_path))
    assert cfg["run"]["agent"] == "ppo" and cfg["loop"]["E"] == 2 and cfg["run"]["vlm"] == "py:vlm_test_model:load"
    its = [m for m in run.read_metrics() if m["type"] == "iteration"]
    assert its[0]["iteration"] == 0 and len(its) >= 2
    assert sorted(os.listdir(run.adapters_dir)) == [f"iter_{i:03d}" for i in range(1, len(its))]
    assert os.path.getsize(run.plot_path) > 10_000
    report = open(run.report_path).read()
    assert "tuned (last)" in report and "agent: **ppo**" in report
    # the loop's time split names every stage, and the simulator stage really took time
    import re

    m = re.search(r"simulator \(resets, moves, renders, validity\) ([0-9.]+) s", report)
    assert m and float(m.group(1)) > 0 and "J2 scoring" in report and "fine-tuning" in report
    # and the simulator's own work is split (this run's simulator is in-process: its own counters)
    w = re.search(r"simulator's own work [^:]*: physics ([0-9.]+) s .*GL passes ([0-9.]+) s", report)
    assert w and float(w.group(1)) > 0 and float(w.group(2)) > 0, report
    assert os.listdir(run.tb_dir)
    assert run.latest_checkpoint().endswith(f"ckpt-{len(its) - 1:03d}")
    # resuming a finished run changes nothing but the report
    n_lines = len(run.read_metrics())
    assert cli_train(["--resume", str(out), "--no-progress", "--no-pretrain"]) == 0
    assert len(run.read_metrics()) == n_lines
    assert "already finished" in capsys.readouterr().err


def test_train_refuses_bad_input(tmp_path, capsys):
    assert cli_train(["--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert cli_train(["--set", "loop.bogus=1", "--out", str(tmp_path / "r"), "--no-pretrain"]) == 2
    assert "unknown key loop.bogus" in capsys.readouterr().err
    assert cli_train(["--set", "loop.T0=50", "--out", str(tmp_path / "r2"), "--no-pretrain"]) == 2


def test_quick_config_is_a_smaller_budget():
    full, quick = load_train_config(), load_train_config(quick=True)
    assert quick["loop"]["budget_valid_samples"] < full["loop"]["budget_valid_samples"]
    assert full["run"]["agent"] == "sac"  # the paper's agent is the default
    assert load_train_config(sets=["loop.E=7"])["loop"]["E"] == 7


def test_shipped_configs_validate():
    """config/train.yaml as shipped (and its --quick section) passes validation: `make run` starts."""
    from rls3_ros.loop.runner import validate_config
    from rls3_ros.cli.train import apply_sets, load_train_config

    for quick in (False, True):
        validate_config(load_train_config(quick=quick))
    with pytest.raises(ValueError, match="replay_rare_keep"):
        validate_config(apply_sets(load_train_config(), ["eval.replay_rare_keep=1.5"]))
