"""The promotion gate: the paired sign test, its decisions, and the scheduler serving only what passed it
(real MuJoCo renders, the caption oracle, a real torch/peft VLM)."""

from __future__ import annotations

import json
import math
import os

import pytest

from rls3_ros.loop.promotion import decide, sign_test_p

from test_rl_scheduler import parts  # noqa: F401 - the module fixture (renders, oracle, tiny VLM)


def _binom_tail(wins: int, n: int) -> float:
    # the same tail summed independently, from the pmf recursion
    pmf = [1.0]
    for _ in range(n):
        pmf = [0.5 * (a + b) for a, b in zip([0.0] + pmf, pmf + [0.0])]
    return sum(pmf[wins:])


@pytest.mark.parametrize("wins,losses", [(0, 0), (5, 0), (3, 3), (10, 2), (2, 10), (40, 20), (1, 0)])
def test_sign_test_matches_binomial_tail(wins, losses):
    n = wins + losses
    expected = 1.0 if n == 0 else _binom_tail(wins, n)
    assert math.isclose(sign_test_p(wins, losses), expected, rel_tol=1e-9)


def test_gate_promotes_only_a_significant_paired_gain():
    served = [True] * 50 + [False] * 50
    # 12 relations gained, 1 lost: significant
    better = list(served)
    for i in range(50, 62):
        better[i] = True
    better[0] = False
    d = decide(3, "/run/adapters/iter_003", "", served, better, alpha=0.05)
    assert d.promoted and d.wins == 12 and d.losses == 1 and d.p_value < 0.05
    assert d.candidate_accuracy > d.served_accuracy
    # a gain of 3 against 1: higher accuracy, not significant -> kept on disk, not served
    small = list(served)
    for i in range(50, 53):
        small[i] = True
    small[0] = False
    d2 = decide(4, "x", "", served, small, alpha=0.05)
    assert not d2.promoted and "not significant" in d2.reason and d2.candidate_accuracy > d2.served_accuracy
    # worse: never promoted, whatever alpha
    worse = [not c if i < 20 and c else c for i, c in enumerate(served)]
    d3 = decide(5, "x", "", served, worse, alpha=0.99)
    assert not d3.promoted and d3.losses == 20
    # the same accuracy reached with different relations is no gain
    swapped = served[10:] + served[:10]
    assert not decide(6, "x", "", served, swapped, alpha=0.99).promoted
    with pytest.raises(ValueError):
        decide(7, "x", "", served, served[:-1])


def test_loop_serves_only_adapters_that_passed_the_gate(parts, tmp_path):  # noqa: F811
    """A real loop with the gate (alpha 0.5, so both outcomes occur): every promotion won its paired
    test, served.json names the last promoted adapter, every other adapter stays on disk unnamed, and
    the served model's validation accuracy never went down."""
    from rls3_ros.loop.config import EnvConfig
    from rls3_ros.loop.env import RLS3Env
    from rls3_ros.loop.run_dir import RunDir, write_yaml
    from rls3_ros.loop.runner import (DEFAULT_CONFIG, InProcessEvaluator, InProcessTrainer, LockedScorer, LoopRunner,
                                      merge_config)
    from rls3_ros.loop.serving import ServedAdapterFile, read_served

    # validation = the replay pool, which every fine-tune trains on: the adapters gain there, so promotions occur
    loop = {"T": 4, "T0": 2, "E": 2, "eta": 1.0, "fine_tune_steps": 20, "replay_fraction": 0.8, "cumulative": True,
            "budget_valid_samples": 24, "patience": 0, "gate": True, "gate_alpha": 0.5}
    cfg = merge_config(DEFAULT_CONFIG, {"run": {"agent": "random", "seed": 0}, "loop": loop})
    run = RunDir(str(tmp_path / "run"))
    write_yaml(run.config_path, cfg)
    vlm = parts["load"]()
    lock = parts["lock"]
    env = RLS3Env.from_config(EnvConfig(max_relations=0, j2_clip=5.0), parts["src"], parts["oracle"].caption_scene, LockedScorer(vlm, lock),
                              T=4, T0=2, seed=0)
    logs = []
    runner = LoopRunner(cfg, run, [env], InProcessTrainer(vlm, run, lock),
                        InProcessEvaluator(vlm, {"test": parts["test"], "val": parts["replay"]}, lock), parts["replay"],
                        adapter_loader=vlm.load_adapter, progress=False, log=logs.append,
                        callbacks=[ServedAdapterFile(run.path, log=logs.append)])
    runner.run_loop()
    s = runner.sched
    tuned = [h for h in s.history if h.iteration > 0]
    assert len(tuned) >= 3 and all(h.gate for h in tuned), "every fine-tune went through the gate"
    # cumulative: each fine-tune trained on every earlier batch again
    assert [h.earlier_samples for h in tuned] == [sum(h2.batch_samples for h2 in tuned[:i]) for i in range(len(tuned))]
    served_acc = s.history[0].val_accuracy
    served_it = 0
    for h in tuned:
        g = h.gate
        assert g["n"] == len(s.history[0].splits["val"]["correct"])
        if g["promoted"]:
            assert g["wins"] > g["losses"] and g["p_value"] < 0.5
            assert h.val_accuracy >= served_acc - 1e-12, "a promotion never serves a lower validation accuracy"
            served_acc, served_it = h.val_accuracy, h.iteration
        else:
            assert not (g["wins"] > g["losses"] and g["p_value"] < 0.5)
        assert h.served_iteration == served_it
        assert os.path.isdir(h.adapter_path), "refused adapters stay on disk"
    rec = read_served(run.path)
    if served_it:
        assert rec["iteration"] == served_it and rec["adapter"] == run.adapter_path(served_it)
    else:
        assert rec is None
    # every decision is in the metrics file
    lines = [json.loads(x) for x in open(run.metrics_path) if x.strip()]
    gates = [x["gate"] for x in lines if x.get("type") == "iteration" and x.get("iteration", 0) > 0]
    assert [g["promoted"] for g in gates] == [h.gate["promoted"] for h in tuned]
    assert any(g["promoted"] for g in gates) and not all(g["promoted"] for g in gates), "both outcomes exercised"
