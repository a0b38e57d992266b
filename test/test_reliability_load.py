"""The load benchmark's quick variant as a test: 8 client processes x 50 queries against one
spatial_query node with a SetAdapter hot swap in the middle lose and fail nothing (latency is
reported by the benchmark, ``rls3 bench load``, not asserted here)."""

from __future__ import annotations

import json
import os

import pytest
import torch

import vlm_test_model as tm
from reliability_common import TEST_DIR, TEST_MODEL

pytestmark = pytest.mark.timeout(240)


def test_quick_load_with_adapter_swap_loses_and_fails_nothing(tmp_path, monkeypatch):
    from rls3_ros.bench.load import run_load

    torch.manual_seed(0)
    m = tm.TinySpatialVLM(net=tm.build_base(0), seed=1)  # the served base: an adapter only loads on its own
    m.fine_tune(tm.make_samples(16, seed=2), 5)
    adapter = m.save_adapter(str(tmp_path / "swap_adapter"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TEST_DIR), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "load_quick.json"
    res = run_load(n_clients=8, n_queries=50, model=TEST_MODEL, adapter=adapter, out=str(out),
                   workdir=str(tmp_path / "work"))
    assert json.loads(out.read_text())["answered"] == res["answered"]
    assert res["answered"] == 400 and res["failed"] == 0 and res["lost"] == 0, res["failed_examples"]
    assert res["swap"]["success"], res["swap"]
    assert 0 < res["swap"]["at_answered"] < 400
    # the swap really happened under load: queries before it used the base, after it the adapter
    assert res["adapter_before_swap"] == [""] and res["adapter_after_swap"] == [adapter]
    assert res["node_alive_at_end"]
    # outside the swap's window: every query answered before it began or sent after it ended
    outside, during = res["latency_outside_swap"], res["latency_during_swap"]
    assert 0 < outside["n"] <= 400 - during.get("n", 0)
    assert outside["max_ms"] <= res["latency"]["max_ms"] and outside["p50_ms"] > 0
    print(f"\nquick load: p50 {res['latency']['p50_ms']} ms, p99 {res['latency']['p99_ms']} ms, "
          f"{res['throughput_qps']} q/s")
