"""Offline fine-tuning from a recorded bag and from a caption dataset (``rls3 finetune``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from peft import PeftModel

import vlm_test_model as tm
from rls3_ros.bags.dataset_export import export_samples_to_bag
from rls3_ros.captions.dataset import write_dataset

TEST_DIR = Path(__file__).resolve().parent


def run_cli(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TEST_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rls3_ros.cli", "finetune", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)


@pytest.mark.parametrize("source", ["bag", "dataset"])
def test_finetune_from_recorded_samples_saves_a_peft_adapter(tmp_path, source):
    samples = tm.make_samples(24, seed=5)
    if source == "bag":
        src = tmp_path / "samples_bag"
        export_samples_to_bag(samples, src, storage="mcap")
    else:
        src = tmp_path / "dataset"
        write_dataset(samples, src)
    out = tmp_path / "adapter"
    r = run_cli([f"--{source}", str(src), "--out", str(out), "--model", "py:vlm_test_model:load", "--steps", "20",
                 "--eval-fraction", "0.25"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / "finetune_summary.json").read_text())
    assert summary["train_samples"] == 18 and summary["held_out"] == 6 and summary["steps"] == 20
    base = tm.build_base(0)
    tuned = PeftModel.from_pretrained(base, str(out))  # plain peft loads it
    assert any("lora" in n for n, _ in tuned.named_parameters())


def test_finetune_reports_a_bad_bag_without_traceback(tmp_path):
    bad = tmp_path / "broken.mcap"
    bad.write_bytes(b"\x89MCAP0\r\n" + b"garbage" * 10)
    r = run_cli(["--bag", str(bad), "--out", str(tmp_path / "a"), "--model", "py:vlm_test_model:load"], tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.startswith("rls3 finetune:")
    r = run_cli(["--dataset", str(tmp_path), "--out", str(tmp_path / "a")], tmp_path)
    assert r.returncode == 2 and "not a caption dataset" in r.stderr
