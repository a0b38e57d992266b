"""`rls3 pretrain` pipeline on a tiny budget: real MuJoCo renders, real oracle, real model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rls3_ros.vlm.pretrain import COMMON_TERMS, imbalance
from rls3_ros.cli.pretrain import cli_pretrain
from rls3_ros.vlm.standin import make_samples


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.setenv("MESA_SHADER_CACHE_DIR", str(tmp_path / "mesa"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_imbalance_keeps_left_right_and_thins_the_rest():
    samples = make_samples(150, seed=5, image_size=32)
    kept = imbalance(samples, rare_keep=0.1, seed=0)
    common_before = sum(all(t in COMMON_TERMS for t in r.terms) for s in samples for r in s.relations)
    common_after = sum(all(t in COMMON_TERMS for t in r.terms) for s in kept for r in s.relations)
    rare_before = sum(not all(t in COMMON_TERMS for t in r.terms) for s in samples for r in s.relations)
    rare_after = sum(not all(t in COMMON_TERMS for t in r.terms) for s in kept for r in s.relations)
    assert common_after == common_before > 0
    assert 0 < rare_after < 0.25 * rare_before
    assert all(s.relations for s in kept)


def test_cli_pretrain_mujoco_tiny_budget_then_cached(tmp_path, monkeypatch, capsys):
    from rls3_ros.vlm.factory import load_vlm

    monkeypatch.setenv("RLS3_MODEL_DIR", str(tmp_path / "models"))
    args = ["--model", "embedded", "--images", "16", "--test-images", "8", "--image-size", "64", "--minutes", "0.05",
            "--seed", "1"]
    assert cli_pretrain(args) == 0
    out = tmp_path / "models" / "embedded"
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    m = json.loads((out / "pretrain_metrics.json").read_text())
    assert m["backend"] == "mujoco" and m["steps"] > 0 and m["n_test_images"] == 8
    assert 0.0 <= m["heldout"]["accuracy"] <= 1.0 and 0.0 < m["heldout"]["chance"] < 1.0
    for t, d in m["heldout"]["per_term"].items():
        assert d["n"] > 0 and 0.0 < d["chance"] <= 0.5
    capsys.readouterr()
    assert cli_pretrain(args) == 0  # cached: skipped
    assert "already at" in capsys.readouterr().out
    vlm = load_vlm("embedded")  # found through RLS3_MODEL_DIR
    assert vlm.host.base.config.image_size == 64
    assert str(out) in vlm.host.base_spec


def test_cli_pretrain_builds_the_grounded_default(tmp_path, capsys):
    out = tmp_path / "grounded"
    args = ["--out", str(out), "--n-train", "12", "--n-test", "6", "--image-size", "64", "--steps", "5"]
    assert cli_pretrain(args) == 0  # no --model: the default VLM
    m = json.loads((out / "pretrain_metrics.json").read_text())
    assert (out / "model.safetensors").is_file() and m["steps"] == 5 and m["n_test"] == 6 and m["rare_keep"] == 0.0
    assert json.loads((out / "config.json").read_text())["image_size"] == 64
    capsys.readouterr()
    assert cli_pretrain(args) == 0  # cached: skipped
    assert "already in" in capsys.readouterr().out
