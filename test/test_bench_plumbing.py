"""The benchmarks' plumbing (not their numbers): a tiny learning benchmark through the real
loop writes the stable keys, the Markdown and the plots; the README section is regenerated."""

import json

from rls3_ros.bench.learning import run_benchmark, samples_to_reach
from rls3_ros.bench.readme_results import END, START, update_readme


def test_tiny_learning_benchmark_writes_stable_keys(tmp_path):
    # the small real test VLM (torch + peft) keeps this independent of `rls3 pretrain`
    doc = run_benchmark(["random", "miner"], [0], budget=12, quick=True, out_dir=tmp_path, log=lambda m: None,
                        overrides=["run.vlm=py:vlm_test_model:load", "run.image_size=64"])
    data = json.loads((tmp_path / "learning_quick.json").read_text())
    assert data["budget"] == 12 and 0.0 <= data["base_accuracy"] <= 1.0
    for name in ("random", "miner"):
        finals = data["samplers"][name]["final_accuracy"]
        assert len(finals) == 1 and 0.0 <= finals[0] <= 1.0
        curve = data["samplers"][name]["curves"][0]
        assert curve[0]["iteration"] == 0 and curve[-1]["iteration"] >= 1  # at least one fine-tune happened
        assert data["samplers"][name]["valid_samples"][0] >= 12
    assert data["samplers"]["random"]["gain_ratio_vs_random"] in (1.0, None)
    for f in ("learning_quick.md", "learning_curves.png", "learning_terms.png"):
        assert (tmp_path / f).stat().st_size > 0
    assert doc["samplers"]["miner"]["renders"][0] > doc["samplers"]["random"]["renders"][0] / 2


def test_samples_to_reach_ignores_the_base_point():
    pts = [{"iteration": 0, "valid_samples": 0, "test_accuracy": 0.9},
           {"iteration": 1, "valid_samples": 36, "test_accuracy": 0.5},
           {"iteration": 2, "valid_samples": 72, "test_accuracy": 0.7}]
    assert samples_to_reach(pts, 0.6) == 72
    assert samples_to_reach(pts, 0.95) is None


def test_readme_results_section_is_regenerated(tmp_path):
    (tmp_path / "learning.md").write_text("# Learning\n\n| a |\n\n![c](learning_curves.png)\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold\n{END}\nrest\n")
    assert update_readme(tmp_path, readme)
    text = readme.read_text()
    assert "old" not in text and "### Learning" in text and "(results/learning_curves.png)" in text
    assert text.startswith("intro\n") and text.endswith(f"{END}\nrest\n")
