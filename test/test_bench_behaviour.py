"""``rls3 bench behaviour``: move-kind shift and the stack-vs-J2 signal, read from run directories."""

from __future__ import annotations

import json

import numpy as np

from rls3_ros.bench.sampler_behaviour import analyse, cli_bench_behaviour


def _write_run(path, episodes):
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as f:
        for i, e in enumerate(episodes, 1):
            f.write(json.dumps({"type": "episode", "episode": i, **e}) + "\n")
        f.write(json.dumps({"type": "stop", "reason": "budget"}) + "\n")


def test_behaviour_finds_a_stack_shift_and_the_reward_signal(tmp_path):
    rng = np.random.default_rng(0)
    runs = tmp_path / "runs"
    # a "sac" run that moves from no stacking to all stacking
    sac = [{"renders": 9, "valid": 4, "j2": 1.0, "iteration": i // 3,
            "move_kinds": {"stack": 0, "place": 8} if i < 10 else {"stack": 8}} for i in range(30)]
    _write_run(runs / "sac-seed0", sac)
    # a "random" run whose J2 rises with the number of stack moves (plus a per-iteration trend)
    rnd = []
    for i in range(60):
        k = int(rng.integers(0, 5))
        rnd.append({"renders": 9, "valid": 3, "iteration": i // 6, "j2": 2.0 - 0.1 * (i // 6) + 0.2 * k,
                    "move_kinds": {"stack": k, "place": 8 - k}})
    _write_run(runs / "random-seed0", rnd)
    doc = analyse(runs)
    s = doc["samplers"]["sac"]
    assert s["first"]["stack_share"] == 0.0 and s["last"]["stack_share"] == 1.0
    assert s["first"]["valid_per_render"] == 4 / 9
    r = doc["samplers"]["random"]
    assert 0.0 < r["first"]["stack_share"] < 1.0
    sig = doc["random_j2_residual_by_stack_moves"]
    res = [sig[k]["mean_residual_j2"] for k in sorted(sig)]
    assert res == sorted(res) and res[0] < 0 < res[-1]  # more stacking, more reward: the trend is removed


def test_cli_writes_files_and_refuses_missing_runs(tmp_path, capsys):
    assert cli_bench_behaviour(["--runs", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    _write_run(tmp_path / "runs" / "random-seed0", [{"renders": 2, "valid": 1, "j2": 1.0, "iteration": 0,
                                                     "move_kinds": {"place": 1}}] * 6)
    assert cli_bench_behaviour(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    for f in ("learning_behaviour.json", "learning_behaviour.md", "learning_behaviour.png"):
        assert (tmp_path / "out" / f).stat().st_size > 100
