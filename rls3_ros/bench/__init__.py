"""Benchmarks: ``rls3 bench <name>`` (``rls3 bench --help`` lists them) -> results/<name>.json, .md, plots.

Speed and accuracy targets live here, not in timed tests: each benchmark prints its numbers
and writes them to files under ``results/``.
"""

from __future__ import annotations

import importlib
import sys
from typing import List

BENCHMARKS = {
    "learning": ("rls3_ros.bench.learning", "cli_bench_learning", "RL-selected vs random data: accuracy per sampler"),
    "behaviour": ("rls3_ros.bench.sampler_behaviour", "cli_bench_behaviour",
                  "what each sampler did in a learning benchmark's runs, and the reward signal it had"),
    "speed": ("rls3_ros.bench.speed", "cli_bench_speed", "samples/s in-process vs ROS, bridge scaling, query latency"),
    "load": ("rls3_ros.bench.load", "cli_bench_load", "8 clients x 1,000 queries with an adapter swap"),
    "query": ("rls3_ros.bench.query", "cli_query_bench", "query latency: node vs direct model call"),
    "soak": ("rls3_ros.bench.soak", "cli_bench_soak", "sim_bridge RSS over 1,000 resets/moves"),
    "grounding": ("rls3_ros.bench.grounding", "cli_bench_grounding",
                  "object locations: pointing accuracy and box IoU vs the oracle's boxes, base vs tuned"),
    "where": ("rls3_ros.bench.where", "cli_bench_where", "open 'where' answers of the models vs the caption oracle"),
    "served": ("rls3_ros.bench.served", "cli_bench_served",
               "the served model as a robot uses it: where, boxes, 3-D points from depth, per image size vs issue 27's goals"),
    "sim": ("rls3_ros.bench.sim", "cli_bench_sim", "MuJoCo frames/s and moves/s, raw vs through sim_bridge"),
    "bags": ("rls3_ros.bench.bags", "cli_bench_bags", "bag record throughput and replay timing error"),
}


def cli_bench(argv: List[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        lines = ["usage: rls3 bench <name> [--quick] [options]", "", "benchmarks:"]
        lines += [f"  {n:<10} {h}" for n, (_, _, h) in BENCHMARKS.items()]
        print("\n".join(lines), file=sys.stdout if argv[:1] in ([], ["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    module, func, _ = BENCHMARKS[argv[0]]
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
