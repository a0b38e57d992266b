"""Soak of a real ``sim_bridge`` process (issue 17, item 5): its resident memory stays bounded
over many resets (a new MuJoCo room each: model, textures, renderer) and moves.

Before the fix the bridge's RSS grew 319 -> ~700 MB within the first 120 calls and kept
creeping (glibc kept the freed models in fragmented per-thread arenas). The test runs
``RLS3_SOAK_OPS`` calls (default 600: 150 resets + 450 moves at 64 px, ~70 s on 2 shared
cores); ``rls3 bench soak`` runs the full 1,000 and writes results/soak_sim_bridge.json.
Bounds: RSS never exceeds its value after the startup scene by more than 150 MB (before the fix:
+540 MB over 1,000 calls), grows by at most 80 MB after a warm-up of 10 % of the calls, and the
mean RSS of the last quarter of the calls is at most 25 MB above that of the second quarter.
"""

from __future__ import annotations

import os

import pytest

from reliability_common import write_results

pytestmark = pytest.mark.timeout(300)

OPS = int(os.environ.get("RLS3_SOAK_OPS", "600"))
MAX_TOTAL_MB = 150.0
MAX_GROWTH_MB = 80.0
MAX_TREND_MB = 25.0


def test_sim_bridge_rss_stays_bounded_over_resets_and_moves(tmp_path):
    from rls3_ros.bench.soak import run_soak

    res = run_soak(ops=OPS, image_size=64, reset_every=4, workdir=str(tmp_path))
    write_results("soak_sim_bridge_test.json", "sim_bridge", res)
    assert res["failed"] == 0, res["failures"]
    assert res["calls"]["reset"] == OPS // 4 and res["calls"]["valid_moves"] > 0
    series = res["rss_series_mb"]
    assert res["rss_mb_max"] - res["rss_mb_start"] <= MAX_TOTAL_MB, series
    assert res["growth_after_warmup_mb"] <= MAX_GROWTH_MB, series
    assert res["last_minus_second_quarter_mb"] <= MAX_TREND_MB, series
