"""One graph spec (rls3_ros/ros/graph_spec.py) behind both `rls3 launch` and launch/*.launch.py.

`launch`/`launch_ros` are not installable here, so the launch files are checked as far as this
machine allows: they build every node from the spec (AST), and what a launch_ros Node gets from
the spec is the same process `rls3 launch` starts (executable, node name, namespace, parameters,
remappings, respawn). Then the training graph runs pushed into a namespace with two bridges over
loopback DDS and produces samples."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from rls3_ros.ros import graph_spec as G
from rls3_ros.ros.launcher import node_command, resume_info

from ros_harness import NodeProcess, deadline
from tiny_training_graph import tiny_training_override

ROOT = Path(__file__).resolve().parents[1]
TEST_DIR = Path(__file__).resolve().parent


def _entry_points():
    """console script -> module, from setup.py (what `ros2 launch` runs for an executable)."""
    text = (ROOT / "setup.py").read_text()
    return dict(re.findall(r'"(\w+) = ([\w.]+):main"', text))


def _from_command(cmd):
    """A `rls3 launch` command line as (module, namespace, params files, overrides, remaps)."""
    assert cmd[1] == "-m" and cmd[3] == "--ros-args"
    files, params, remaps, ns = [], {}, [], "/"
    it = iter(cmd[4:])
    for flag in it:
        val = next(it)
        if flag == "--params-file":
            files.append(val)
        elif flag == "-p":
            k, v = val.split(":=", 1)
            params[k] = yaml.safe_load(v)
        elif flag == "-r" and val.startswith("__ns:="):
            ns = val.split(":=", 1)[1]
        else:
            remaps.append(tuple(val.split(":=", 1)))
    return cmd[2], ns, files, params, remaps


def _from_launch(kw):
    """launch_ros Node kwargs as the same tuple (a dict entry of ``parameters`` is written after the files)."""
    files = [p for p in kw["parameters"] if isinstance(p, str)]
    params = {}
    for p in kw["parameters"]:
        if isinstance(p, dict):
            params.update(p)
    return _entry_points()[kw["executable"]], kw["namespace"], files, params, [tuple(r) for r in kw["remappings"]]


def _resumable(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "ckpt-001").mkdir(parents=True)
    (run / "checkpoints" / "LATEST").write_text("ckpt-001")
    (run / "adapters" / "iter_001").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-001" / "meta.json").write_text(json.dumps(
        {"iteration": 1, "adapter": str(run / "adapters" / "iter_001")}))
    (run / "config.yaml").write_text(yaml.safe_dump({
        "run": {"agent": "miner", "seed": 3, "graph": True, "n_envs": 2},
        "loop": {"T": 5, "T0": 4, "seed": 3}, "agent": {"k": 7}, "eval": {"extra_splits": ["val"], "val_scenes": 9}}))
    return resume_info(str(run))


def test_launch_files_build_every_node_from_the_spec():
    for name, builder in (("training.launch.py", "training_graph"), ("query.launch.py", "query_graph")):
        tree = ast.parse((ROOT / "launch" / name).read_text())
        names = [getattr(c.func, "id", getattr(c.func, "attr", "")) for c in ast.walk(tree) if isinstance(c, ast.Call)]
        assert builder in names and "apply_node_sets" in names and "launch_actions" in names, name
        assert "Node" not in names and "PushRosNamespace" not in names, name  # nodes and namespace: the spec's
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "rls3_ros.ros.graph_spec"]
        assert imports, name
    # the launch actions: one launch_ros Node per spec, from launch_node_kwargs only
    tree = ast.parse(Path(G.__file__).read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "launch_actions")
    nodes = [c for c in ast.walk(fn) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "Node"]
    assert len(nodes) == 1 and not nodes[0].args and len(nodes[0].keywords) == 1
    kw = nodes[0].keywords[0]
    assert kw.arg is None and getattr(kw.value.func, "id", "") == "launch_node_kwargs"


@pytest.mark.parametrize("variant", [
    dict(graph="training"),
    dict(graph="training", bridges=3, namespace="team1", image_topic="/camera/image_raw", agent="ppo",
         respawn_bridges=True, run_dir="/tmp/r", sets=["rl_sampler.budget_valid_samples=50", "sim1/sim_bridge.seed=7"]),
    dict(graph="training", resume=True, namespace="/a/b/"),
    dict(graph="query", with_sim=True, namespace="robot", adapter="/ad", image_topic="cam", scene_topic="scene"),
])
def test_the_launch_file_nodes_are_the_processes_rls3_launch_starts(variant, tmp_path):
    variant = dict(variant)
    graph, sets = variant.pop("graph"), [G.parse_set(s) for s in variant.pop("sets", [])]
    if variant.get("resume"):
        variant["resume"] = _resumable(tmp_path)
    specs = G.graph_nodes(graph, **variant)
    G.apply_node_sets(specs, sets)
    files = ["/cfg/base.yaml", "/cfg/extra.yaml"]
    mods = set(_entry_points().values())
    for spec in specs:
        launched, started = _from_launch(G.launch_node_kwargs(spec, files)), _from_command(node_command(spec, files))
        assert launched == started, spec.label
        assert spec.module in mods
        assert G.launch_node_kwargs(spec, files)["respawn"] == spec.respawn
    labels = [s.label for s in specs]
    if variant.get("namespace") == "team1":
        assert labels[:3] == ["team1/sim0/sim_bridge", "team1/sim1/sim_bridge", "team1/sim2/sim_bridge"]
        sampler = specs[-1]
        assert sampler.params["bridge_namespaces"] == ["sim0", "sim1", "sim2"]  # relative to team1
        assert sampler.params["bridge_lost"] == "wait" and sampler.params["agent"] == "ppo"
        assert sampler.params["budget_valid_samples"] == 50 and specs[1].params["seed"] == 7
        assert specs[0].remappings == [("image_raw", "/camera/image_raw")]
    if variant.get("resume"):
        sampler = specs[-1]
        assert labels[:2] == ["a/b/sim0/sim_bridge", "a/b/sim1/sim_bridge"]  # the run's bridge count
        assert sampler.params["resume"] is True and sampler.params["miner_k"] == 7 and sampler.params["T0"] == 4
        assert sampler.params["extra_splits"] == ["val"] and sampler.params["seed"] == 3


def test_the_training_graph_works_pushed_into_a_namespace_with_two_bridges(ros_env, tmp_path):
    params = tmp_path / "override.yaml"
    params.write_text(tiny_training_override("random", 6))
    run_dir = tmp_path / "run"
    env = dict(ros_env)
    env["PYTHONPATH"] = os.pathsep.join([str(TEST_DIR), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    env["RLS3_CACHE"] = str(tmp_path / "cache")
    args = ["-m", "rls3_ros.ros.launcher", "training", "--namespace", "team1", "--bridges", "2",
            "--params-file", str(params), "--run-dir", str(run_dir), "--timeout", str(int(deadline(150)))]
    with NodeProcess(args, env, "launch_ns") as p:
        code = p.wait(timeout=170)
        out = p.output()
    assert code == 0, out[-4000:]
    for label in ("team1/sim0/sim_bridge", "team1/sim1/sim_bridge", "team1/caption_oracle", "team1/vlm_trainer",
                  "team1/rl_sampler"):
        assert re.search(rf"^\[{re.escape(label)}\] ", out, re.M), f"no output from {label}"
    assert re.search(r"\[team1/rl_sampler\].*graph ready: 2 sim_bridge", out)
    from rls3_ros.sim.raster_threads import shared_raster_threads

    for i in (0, 1):  # the bridges share the cores' raster threads (the graph's parameter reached them)
        assert re.search(rf"\[team1/sim{i}/sim_bridge\].*llvmpipe raster threads: {shared_raster_threads(2)}$", out, re.M)
    from rls3_ros.loop.run_dir import RunDir

    episodes = [m for m in RunDir(str(run_dir)).read_metrics() if m["type"] == "episode"]
    assert sum(int(m["valid"]) for m in episodes) >= 6, episodes[:2]
