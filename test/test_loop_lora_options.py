"""The loop's LoRA rank and alpha (run.lora_rank / run.lora_alpha) reach the model, and the adapter a
higher-rank run saves is one the query server's checks accept for the served base."""

import json
import os

from rls3_ros.bench.learning import bench_config
from rls3_ros.loop.config import RunConfig, as_train_config
from rls3_ros.loop.config_files import load_train_config
from rls3_ros.loop.runner import vlm_options
from rls3_ros.vlm.adapter_trust import AdapterPolicy, base_identity, load_checked
from rls3_ros.vlm.answers import load_model


def test_unset_lora_keys_leave_the_family_defaults_and_both_benchmark_regimes_unchanged():
    shipped = as_train_config(load_train_config())
    assert vlm_options(shipped.run) == {"lora": {"learning_rate": shipped.run.lora_learning_rate}}
    assert vlm_options(RunConfig()) == {}
    for regime in ("scratch", "served"):
        cfg = bench_config("random", 0, 40, True, regime=regime)
        assert "lora_rank" not in cfg["run"] and "lora_alpha" not in cfg["run"]


def test_a_rank_128_adapter_is_saved_with_its_rank_and_loads_through_the_query_servers_checks(tmp_path):
    run = RunConfig(lora_learning_rate=3e-4, lora_rank=128, lora_alpha=128)
    assert vlm_options(run) == {"lora": {"learning_rate": 3e-4, "r": 128, "alpha": 128}}
    tuned = load_model("grounded:serving", options=vlm_options(run))
    tuned.ensure_adapter()
    saved = tuned.save_adapter(str(tmp_path / "iter_001"))
    with open(os.path.join(saved, "adapter_config.json")) as f:
        conf = json.load(f)
    assert conf["r"] == 128 and conf["lora_alpha"] == 128
    served = load_model("grounded:serving")  # the query server's model: default options
    load_checked(served, saved, AdapterPolicy.for_roots([str(tmp_path)]), base_identity(served))
    assert served.host.model.peft_config["default"].r == 128
