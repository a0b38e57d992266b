"""What does each stage cost? ``rls3 bench speed [--quick]``.

1. sample generation (render + validity + caption) in-process vs through the ROS graph
   (sim_bridge + caption_oracle processes), and with 1, 2 and 4 parallel sim_bridges;
2. query latency: a direct in-process model call vs the spatial_query node from another
   process (p50/p99), and p99 with 8 concurrent client processes (with an adapter swap);
3. fine-tuning throughput of the embedded VLM (relations/s through the LoRA training step), and
   the vlm_trainer node's ScoreSamples latency idle and while it runs a fine-tune
   (``rls3_ros.bench.trainer_score``);
4. the whole in-process training loop (random and SAC): valid samples/s and the time split per
   stage (simulator, captions, VLM scoring, fine-tuning, evaluation, agent).

Writes ``results/speed.json`` (stable keys: ``samples_per_s_inprocess``, ``samples_per_s_ros``,
``query_direct_p50_ms``, ``query_p50_ms``, ``query_p99_ms``, ``query_p99_ms_8_clients``,
``bridges_samples_per_s``, ``loop_samples_per_s``, ``loop_time_split``, ``loop_sim_split``), ``results/speed.md`` and ``results/speed_bridges.png``.
Measurements run one after the other so they do not share the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from rls3_ros.vlm.factory import DEFAULT_MODEL


def bench_fine_tune(image_size: int, n_samples: int, steps: int, seed: int = 0) -> Dict[str, float]:
    """Relations/s through the default model's LoRA fine-tuning on real captioned renders."""
    import torch

    from rls3_ros.bench.trainer_score import captioned_renders
    from rls3_ros.vlm.answers import load_model

    samples = captioned_renders(image_size, n_samples, seed, prefix="ft")
    torch.set_num_threads(2)
    vlm = load_model(DEFAULT_MODEL)
    n_rel = sum(len(x.relations) for x in samples)
    vlm.fine_tune(samples, 1)  # warm-up (feature cache, LoRA injection)
    t = time.perf_counter()
    res = vlm.fine_tune(samples, steps)
    dt = time.perf_counter() - t
    lora = getattr(getattr(vlm, "host", None), "lora", None) or getattr(vlm, "lora", None)
    batch = getattr(lora, "batch_size", None)
    t = time.perf_counter()
    vlm.score(samples)
    score_dt = time.perf_counter() - t
    out = {"steps": steps, "seconds": dt, "steps_per_s": steps / dt, "relations_in_batch_pool": n_rel,
           "score_relations_per_s": n_rel / score_dt, "final_loss": float(res.final_loss)}
    if batch:
        out["batch_size"] = int(batch)
        out["relations_per_s"] = steps * min(int(batch), n_rel) / dt
    return out


def bench_loop(agent: str, n_samples: int, log=print, sets=()) -> Dict[str, Any]:
    """The whole in-process RLS3 loop (``rls3 train``'s) for ``n_samples`` valid samples: samples/s
    over the loop's own time and its time split per stage (plus what a background fine-tune spent in
    its thread).

    Every run starts from the same feature cache: the fixed sets' (test, val, replay) features cached
    before the loop's clock starts, none of any earlier run's renders (runs with the same seed render
    the same first scenes, and a later row would otherwise find their features cached)."""
    from rls3_ros.loop.config_files import apply_sets, load_train_config
    from rls3_ros.loop.run_dir import RunDir, write_yaml
    from rls3_ros.loop.runner import build_inprocess
    from rls3_ros.vlm.feature_cache import FeatureCache

    cfg = apply_sets(load_train_config(), [f"run.agent={agent}", f"loop.budget_valid_samples={n_samples}",
                                           "loop.patience=0", *sets])
    with tempfile.TemporaryDirectory(prefix="rls3-speed-loop-") as tmp:
        run = RunDir(tmp)
        write_yaml(run.config_path, cfg)
        runner = build_inprocess(cfg, run, progress=False, log=lambda m: None)
        try:
            fixed = [s for split in runner.splits.values() for s in split] + list(runner.sched.replay_pool)
            feats = getattr(runner.vlm, "features", None)
            if isinstance(feats, FeatureCache) and fixed:
                feats([s.image for s in fixed])
            keep = {id(c): c.keys() for c in FeatureCache.all_shared()}
            try:
                out = runner.run_loop()
            finally:
                for c in FeatureCache.all_shared():
                    c.retain(keep.get(id(c), set()))
        finally:
            runner.close()
            for src in runner.sources:
                src.close()
    split = out["time_split"]
    return {"agent": agent, "valid_samples": out["valid_samples"], "renders": out["renders"],
            "loop_s": out["session_s"], "samples_per_s": out["valid_samples"] / out["session_s"],
            "renders_per_s": out["renders"] / out["session_s"], "time_split": split,
            "background_split": out.get("background_split", {}), "sim_split": out.get("sim_split", {}),
            "overlap_fine_tune": bool(cfg["run"]["overlap_fine_tune"]), "final_accuracy": out["final_accuracy"]}


# The physics reference: a fixed scene (the loop's solver options, eight boxes resting on a plane,
# ~32 contacts) that no change of the project's scenes moves, unlike a loop scene would.
REFERENCE_MJCF = """<mujoco model="speed_reference">
  <option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="2"/>
  <default><geom friction="0.9 0.02 0.002" solref="0.004 1" solimp="0.95 0.99 0.001" density="400" condim="4"/></default>
  <worldbody>
    <geom type="plane" size="5 5 0.1"/>
""" + "".join(f'    <body pos="{0.3 * (i % 4)} {0.3 * (i // 4)} 0.05"><freejoint/><geom type="box" size="0.05 0.04 0.05"/></body>\n'
              for i in range(8)) + """  </worldbody>
</mujoco>"""


def host_reference(repeats: int = 30) -> Dict[str, float]:
    """Median times of three fixed pieces of the loop's work on this machine, one thread each, so loop
    numbers from machines of the same size but unequal speed can be compared: one SAC gradient step
    (SB3 MlpPolicy [64, 64], batch 256, the loop's observation and action sizes), one MuJoCo physics
    step of a fixed scene (``REFERENCE_MJCF``), and the frozen image encoder on one 160 px image."""
    import gymnasium as gym
    import mujoco
    import torch
    from stable_baselines3 import SAC

    from rls3_ros.loop.sac_update import SACUpdate
    from rls3_ros.vlm.feature_cache import encoder_input
    from rls3_ros.vlm import efficientnet_lite

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: Dict[str, float] = {}

    def median_ms(fn, n=repeats):
        fn()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return float(np.median(ts) * 1e3)

    try:
        class _Env(gym.Env):
            observation_space = gym.spaces.Box(-10, 10, (94,), np.float32)
            action_space = gym.spaces.Box(-1, 1, (6,), np.float32)

            def reset(self, seed=None, options=None):
                return np.zeros(94, np.float32), {}

            def step(self, a):
                return np.random.rand(94).astype(np.float32), 0.0, False, False, {}

        sac = SAC("MlpPolicy", _Env(), batch_size=256, learning_starts=0, ent_coef="auto_0.05", seed=0, verbose=0,
                  policy_kwargs={"net_arch": [64, 64], "optimizer_kwargs": {"fused": True}})
        sac.learn(300)
        update = SACUpdate(sac)
        out["sac_gradient_step_ms"] = median_ms(lambda: update(1, 256))
        m = mujoco.MjModel.from_xml_string(REFERENCE_MJCF)
        d = mujoco.MjData(m)
        mujoco.mj_step(m, d, nstep=500)  # the boxes come to rest: a steady contact load
        out["mujoco_step_us"] = median_ms(lambda: mujoco.mj_step(m, d, nstep=100)) * 10.0
        net = efficientnet_lite.fold_batch_norms(efficientnet_lite.load_pretrained())
        x = encoder_input([np.full((160, 160, 3), 128, np.uint8)], 160)
        with torch.inference_mode():
            out["encoder_image_ms"] = median_ms(lambda: net.features(x, "stride16"), n=max(5, repeats // 3))
    finally:
        torch.set_num_threads(threads)
    return out


def plot_bridges(doc: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = doc["bridges_samples_per_s"]
    xs = sorted(int(k) for k in b)
    cpus = int(doc["host"]["cpus"] or 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [b[str(x)] for x in xs], "o-", label="through ROS (N sim_bridges)")
    ax.axhline(doc["samples_per_s_inprocess"], color="grey", ls=":", label="in-process, 1 backend")
    goal = [x for x in xs if x <= cpus]
    if "1" in b and len(goal) > 1:
        ax.plot(goal, [0.8 * x * b["1"] for x in goal], "--", color="tab:green", label="goal: 0.8 N x one bridge")
    one = doc.get("ros", {}).get("1", {}).get("cpu_ms_per_sample")
    if one and sum(one.values()) > 0:
        ax.axhline(1e3 * cpus / sum(one.values()), color="tab:red", ls="-.", lw=1,
                   label=f"CPU ceiling of {cpus} cores (1-bridge CPU per sample)")
    ax.set_ylim(bottom=0)
    ax.set_xticks(xs)
    ax.set_xlabel("parallel sim_bridge processes")
    ax.set_ylabel("samples/s (render + validity + caption)")
    ax.set_title(f"Sample generation on {doc['host']['cpus']} CPU cores")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reference_line(ref: Dict[str, float]) -> List[str]:
    """The machine's reference timings (``host_reference``) as a sentence, or nothing."""
    if not ref:
        return []
    return [f"This machine's speed (one thread; lower is faster): a SAC gradient step {ref['sac_gradient_step_ms']:.1f} ms, "
            f"a MuJoCo physics step {ref['mujoco_step_us']:.0f} µs, the image encoder {ref['encoder_image_ms']:.1f} ms "
            "per image.", ""]


def ros_cpu_text(r: Dict[str, Any], cpus: int, one_bridge: Optional[float]) -> str:
    """Where a ROS generation run's CPU went per sample, how busy the cores were, and the ceiling that
    CPU sets: ``cpus`` cores can do at most ``1000 * cpus / (ms per sample)`` samples/s, whatever the
    number of bridges (the client and the caption_oracle need their share of the cores too)."""
    ms = r["cpu_ms_per_sample"]
    total = sum(ms.values())
    ceiling = 1e3 * cpus / total if total else float("nan")
    vs = f" = {ceiling / one_bridge:.2f} x one bridge" if one_bridge else ""
    return (", ".join(f"{name} {v:.1f} ms" for name, v in ms.items()) + f"; cores busy {r['cores_busy']:.2f} of {cpus}; "
            f"the CPU ceiling on {cpus} cores {ceiling:.0f} samples/s{vs}")


def write_markdown(doc: Dict[str, Any], path: Path) -> None:
    from rls3_ros.loop.report import sim_split_text

    b = doc["bridges_samples_per_s"]
    lines = ["# Speed benchmark", "",
             f"Machine: {doc['host']['cpus']} CPUs ({doc['host']['machine']}), image {doc['image_size']}², "
             f"load average at start {doc['host']['loadavg_start']:.1f}. {'(quick run)' if doc['quick'] else ''}", "",
             *reference_line(doc["host"].get("reference") or {}),
             "| what | value |", "| --- | --- |",
             f"| samples/s in-process (render + validity + caption) | {doc['samples_per_s_inprocess']:.1f} |",
             f"| samples/s through the ROS graph (1 sim_bridge + caption_oracle) | {doc['samples_per_s_ros']:.1f} |",
             f"| ROS / in-process | {doc['ros_over_inprocess']:.2f} |"]
    lines += [f"| samples/s with {k} sim_bridge(s) | {v:.1f} |" for k, v in sorted(b.items(), key=lambda kv: int(kv[0]))]
    cpus = int(doc["host"]["cpus"] or 1)
    for k, r in sorted(doc.get("ros", {}).items(), key=lambda kv: int(kv[0])):
        if "cpu_ms_per_sample" in r:
            lines.append(f"| CPU per sample, {k} sim_bridge(s) | {ros_cpu_text(r, cpus, b.get('1'))} |")
    if any(int(k) > cpus for k in b):
        lines.append(f"| bridges beyond the core count | processes share cores: N bridges on {cpus} cores cannot exceed "
                     f"{cpus} x one bridge, and the client and caption_oracle take CPU from them too |")
    for agent, lp in doc.get("loop", {}).items():
        ts = lp["time_split"]
        tot = sum(ts.values()) or 1.0
        acc = f", test accuracy at the end {lp['final_accuracy']:.3f}" if "final_accuracy" in lp else ""
        lines.append(f"| training loop in-process ({agent}): valid samples/s, renders/s{', accuracy' if acc else ''} | "
                     f"{lp['samples_per_s']:.1f}, {lp['renders_per_s']:.1f}{acc} |")
        lines.append(f"| loop time split ({agent}) | " + ", ".join(f"{k} {100 * v / tot:.0f} %" for k, v in ts.items())
                     + (" (fine_tune = waiting for it; in the background thread: fine-tune {fine_tune:.1f} s, "
                        "eval {eval:.1f} s)".format(**lp["background_split"]) if lp.get("overlap_fine_tune") else "")
                     + " |")
        if lp.get("sim_split"):
            lines.append(f"| simulator's own work ({agent}) | {sim_split_text(lp['sim_split'])} |")
    lines += [f"| query p50, direct model call | {doc['query_direct_p50_ms']:.1f} ms |",
              f"| query p50 / p99 through spatial_query (1 client) | {doc['query_p50_ms']:.1f} / {doc['query_p99_ms']:.1f} ms |",
              *([f"| ROS round trip of the same request to a service that answers at once (p50) | "
                 f"{doc['query_round_trip_floor_ms']:.1f} ms |"] if "query_round_trip_floor_ms" in doc else []),
              f"| query p50 / p99 with 8 client processes (adapter swap mid-run) | {doc['query_p50_ms_8_clients']:.1f} / {doc['query_p99_ms_8_clients']:.1f} ms |",
              *([f"| query p50 / p99 with 8 client processes, outside the swap's window | "
                 f"{doc['load']['latency_outside_swap']['p50_ms']:.1f} / {doc['load']['latency_outside_swap']['p99_ms']:.1f} ms |"]
                if doc.get("load", {}).get("latency_outside_swap", {}).get("n") else []),
              f"| queries failed / lost with 8 clients | {doc['load']['failed']} / {doc['load']['lost']} |"]
    ft = doc["fine_tune"]
    if "relations_per_s" in ft:
        lines.append(f"| fine-tuning, relations/s (LoRA, batch {ft['batch_size']}) | {ft['relations_per_s']:.1f} |")
    lines.append(f"| fine-tuning, optimiser steps/s | {ft['steps_per_s']:.2f} |")
    lines.append(f"| scoring (reward), relations/s | {ft['score_relations_per_s']:.1f} |")
    sd = doc.get("score_during_fine_tune")
    if sd:
        lines.append(f"| vlm_trainer ScoreSamples (1 sample) p50 / max, idle; while it fine-tunes | "
                     f"{sd['idle']['p50_ms']:.1f} / {sd['idle']['max_ms']:.1f} ms; "
                     f"{sd['during_fine_tune']['p50_ms']:.1f} / {sd['during_fine_tune']['max_ms']:.1f} ms |")
    lines += ["", "![bridges](speed_bridges.png)", ""]
    path.write_text("\n".join(lines))


def run_speed(quick: bool, out_dir: Path, image_size: int = 224, log=print) -> Dict[str, Any]:
    from rls3_ros.bench.generation import bench_inprocess, bench_ros
    from rls3_ros.bench.load import adapter_for_swap, run_load
    from rls3_ros.bench.query import run_bench

    out_dir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    n = 30 if quick else 150
    doc: Dict[str, Any] = {"quick": quick, "image_size": image_size}
    log("[bench speed] this machine's speed: reference timings")
    reference = host_reference(10 if quick else 30)
    log("[bench speed] " + ", ".join(f"{k} {v:.2f}" for k, v in reference.items()))
    log(f"[bench speed] generation in-process: {n} samples")
    doc["inprocess"] = bench_inprocess(n, image_size)
    bridges = (1, 2) if quick else (1, 2, 4)
    doc["ros"] = {}
    for k in bridges:
        log(f"[bench speed] generation through ROS: {k} sim_bridge(s)")
        with tempfile.TemporaryDirectory(prefix="rls3-speed-") as tmp:
            doc["ros"][str(k)] = bench_ros(max(n // k, 8), image_size, k, workdir=Path(tmp))
    doc["samples_per_s_inprocess"] = doc["inprocess"]["samples_per_s"]
    doc["samples_per_s_ros"] = doc["ros"]["1"]["samples_per_s"]
    doc["ros_over_inprocess"] = doc["samples_per_s_ros"] / doc["samples_per_s_inprocess"]
    doc["bridges_samples_per_s"] = {k: v["samples_per_s"] for k, v in doc["ros"].items()}
    doc["loop"] = {}
    for agent in ("random", "sac"):
        for bg in (False, True):  # the paper's loop, and fine-tuning in the background (run.overlap_fine_tune)
            name = f"{agent}, background fine-tune" if bg else agent
            log(f"[bench speed] the in-process training loop ({name}, {40 if quick else 200} valid samples)")
            doc["loop"][name] = bench_loop(agent, 40 if quick else 200, sets=[f"run.overlap_fine_tune={str(bg).lower()}"])
    from rls3_ros.loop.config_files import load_train_config

    rc = load_train_config()["run"]
    main_name = f"{rc['agent']}, background fine-tune" if rc["overlap_fine_tune"] else rc["agent"]
    main = doc["loop"].get(main_name) or doc["loop"]["sac"]
    doc["loop_agent"] = main["agent"]
    doc["loop_overlap_fine_tune"] = main["overlap_fine_tune"]
    doc["loop_samples_per_s"] = main["samples_per_s"]
    doc["loop_time_split"] = main["time_split"]
    doc["loop_sim_split"] = main.get("sim_split", {})

    nq = 40 if quick else 200
    log(f"[bench speed] query latency: {nq} direct calls and {nq} through the node, interleaved rounds")
    with tempfile.TemporaryDirectory(prefix="rls3-speedq-") as tmp:
        q = run_bench(DEFAULT_MODEL, "", nq, 5, 128, 4 if quick else 10, Path(tmp), 1)
    direct = q["direct"]
    via = q.get("node_request_image") or next(v for k, v in q.items() if k != "direct")
    doc["query"] = q
    doc["query_direct_p50_ms"] = direct["p50_ms"]
    doc["query_p50_ms"] = via["p50_ms"]
    doc["query_p99_ms"] = via["p99_ms"]
    doc["query_round_trip_floor_ms"] = q["noop_round_trip"]["p50_ms"]
    nl = 25 if quick else 125
    log(f"[bench speed] 8 client processes x {nl} queries with an adapter swap")
    with tempfile.TemporaryDirectory(prefix="rls3-speedl-") as tmp:
        adapter = adapter_for_swap(Path(tmp))
        load = run_load(8, nl, DEFAULT_MODEL, adapter, out=None, image_size=128, workdir=str(Path(tmp) / "work"),
                        log=lambda m: None)
    doc["load"] = {k: load[k] for k in ("answered", "failed", "lost", "latency", "latency_outside_swap",
                                        "latency_during_swap", "throughput_qps") if k in load}
    doc["query_p50_ms_8_clients"] = load["latency"]["p50_ms"]
    doc["query_p99_ms_8_clients"] = load["latency"]["p99_ms"]
    if load.get("latency_outside_swap", {}).get("n"):
        doc["query_p99_ms_8_clients_outside_swap"] = load["latency_outside_swap"]["p99_ms"]
    log("[bench speed] fine-tuning throughput")
    doc["fine_tune"] = bench_fine_tune(160, 24 if quick else 64, 5 if quick else 20)
    log("[bench speed] the vlm_trainer's scoring, idle and while it fine-tunes")
    from rls3_ros.bench.trainer_score import bench_score_during_fine_tune, captioned_renders

    with tempfile.TemporaryDirectory(prefix="rls3-speeds-") as tmp:
        doc["score_during_fine_tune"] = bench_score_during_fine_tune(DEFAULT_MODEL, captioned_renders(160, 8), 10 if quick else 40,
                                                                     Path(tmp))
    doc["host"] = {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                   "loadavg_start": load0, "loadavg_end": os.getloadavg()[0], "reference": reference}
    doc["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc["command"] = "rls3 bench speed" + (" --quick" if quick else "")
    name = "speed_quick" if quick else "speed"
    (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2, default=float) + "\n")
    write_markdown(doc, out_dir / f"{name}.md")
    plot_bridges(doc, out_dir / "speed_bridges.png")
    return doc  # writes results/ only (docs/results.md lists the files)


def cli_bench_speed(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="rls3 bench speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer samples/queries (plumbing check, ~3 min)")
    p.add_argument("--out", default="results")
    p.add_argument("--image-size", type=int, default=224)
    a = p.parse_args(argv)
    doc = run_speed(a.quick, Path(a.out), a.image_size)
    print(Path(a.out, "speed_quick.md" if a.quick else "speed.md").read_text())
    return 0
