"""The benchmarks' plumbing (not their numbers): a tiny learning benchmark through the real
loop writes the stable keys, the Markdown and the plots; no benchmark writes the README."""

import json
import re
from pathlib import Path

from rls3_ros.bench.learning import run_benchmark, samples_to_reach

REPO = Path(__file__).resolve().parent.parent


def test_tiny_learning_benchmark_writes_stable_keys(tmp_path):
    # the small real test VLM (torch + peft) keeps this independent of `rls3 pretrain`
    doc = run_benchmark(["random", "teacher", "miner"], [0], budget=12, quick=True, out_dir=tmp_path,
                        log=lambda m: None, jobs=1,
                        overrides=["run.vlm=py:vlm_test_model:load", "run.image_size=64"])
    data = json.loads((tmp_path / "learning_quick.json").read_text())
    assert data["budget"] == 12 and data["budget_unit"] == "renders" and 0.0 <= data["base_accuracy"] <= 1.0
    assert data["split_sizes"]["test"] > 0 and data["split_sizes"]["tail"] > 0
    for name in ("random", "teacher", "miner"):
        s = data["samplers"][name]
        finals = s["final_accuracy"]
        assert len(finals) == 1 and 0.0 <= finals[0] <= 1.0
        for split in ("test", "tail"):
            curve = s["curves"][split][0]
            assert curve[0][0] == 0 and len(curve) >= 2  # the base, then at least one fine-tune
            assert len(s["auc"][split]) == 1 and 0.0 <= s["auc"][split][0] <= 1.0
            assert len(s["renders_to_random_final"][split]) == 1
        assert s["renders"][0] >= 12
    # random runs to 3R: its own curve gives the 2x / 3x reference points
    assert data["samplers"]["random"]["renders"][0] >= 3 * 12
    assert data["samplers"]["teacher"]["renders"][0] < data["samplers"]["random"]["renders"][0]
    assert "vs_random" in data["samplers"]["teacher"]["paired"] and "vs_miner" in data["samplers"]["teacher"]["paired"]
    for f in ("learning_quick.md", "learning_curves.png", "learning_terms.png", "learning_modes.png"):
        assert (tmp_path / f).stat().st_size > 0
    assert set(doc["samplers"]) == {"random", "teacher", "miner"}


def test_samples_to_reach_ignores_the_base_point():
    pts = [{"iteration": 0, "valid_samples": 0, "test_accuracy": 0.9},
           {"iteration": 1, "valid_samples": 36, "test_accuracy": 0.5},
           {"iteration": 2, "valid_samples": 72, "test_accuracy": 0.7}]
    assert samples_to_reach(pts, 0.6) == 72
    assert samples_to_reach(pts, 0.95) is None


def test_no_benchmark_writes_the_readme():
    """Benchmarks write results/ only: the README links results/*.md and keeps no generated section.
    No module of ``rls3 bench`` names the README (the learning and speed
    benchmarks used to rewrite a section of it after every full run)."""
    sources = sorted((REPO / "rls3_ros" / "bench").glob("*.py"))
    assert len(sources) > 5, sources
    offenders = [str(p.relative_to(REPO)) for p in sources if re.search(r"readme", p.read_text(), re.I)]
    assert not offenders, f"benchmark sources that name the README: {offenders}"
    assert "<!-- results:start -->" not in (REPO / "README.md").read_text()


def test_the_two_learning_regimes_start_from_their_own_base_and_recipe():
    """scratch: the weak base with the recipe results/learning.json was measured with (pinned whatever the
    main job's config says); served: the served model with the main job's recipe for it."""
    from rls3_ros.bench.learning import SCRATCH_REGIME, bench_config, result_name
    from rls3_ros.loop.config import validate_config

    scratch = bench_config("random", 0, 600, False)
    served = bench_config("random", 0, 600, False, regime="served")
    for cfg in (scratch, served):
        validate_config(cfg)
    assert scratch["run"]["vlm"] == "grounded" and "lora_learning_rate" not in scratch["run"]
    for section, values in SCRATCH_REGIME.items():
        assert {k: scratch[section][k] for k in values} == values
    assert served["run"]["vlm"] == "grounded:serving" and served["loop"]["cumulative"]
    assert served["eval"]["replay_rare_keep"] == 1.0
    # both on the same pre-registered splits
    for k in ("test_scenes", "test_per_term", "tail_scenes", "val_scenes", "val_tail_scenes"):
        assert scratch["eval"][k] == served["eval"][k]
    assert result_name("scratch", False) == "learning" and result_name("served", False) == "learning_served"


def test_every_listed_benchmark_resolves_to_its_command(capsys):
    """``rls3 bench --help`` lists every benchmark (the simulator, bag and 'where' ones included: there is no
    second benchmark directory), and each name resolves to a callable of its module."""
    import importlib

    from rls3_ros.bench import BENCHMARKS
    from rls3_ros.cli.main import main

    assert main(["bench", "--help"]) == 0
    listed = re.findall(r"^  (\S+)\s", capsys.readouterr().out, re.M)
    assert listed == list(BENCHMARKS) and {"where", "sim", "bags"} <= set(listed)
    for module, func, _ in BENCHMARKS.values():
        assert callable(getattr(importlib.import_module(module), func))
    assert not (REPO / "benchmarks").exists()
