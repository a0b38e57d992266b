"""The training graph across real processes: ``rls3 launch training`` (rls3_ros.ros.launcher) starts
sim_bridge(s), caption_oracle, vlm_trainer and rl_sampler from config/training.yaml; the
RLS3 loop runs over services and the fine-tune action with a tiny budget."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest

from ros_harness import NodeProcess, deadline, poll_until
from tiny_training_graph import tiny_training_override

TEST_DIR = Path(__file__).resolve().parent

def _env(ros_env, tmp_path):
    env = dict(ros_env)
    env["PYTHONPATH"] = os.pathsep.join([str(TEST_DIR), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    env["RLS3_CACHE"] = str(tmp_path / "cache")
    return env


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_training_graph_runs_the_loop_over_ros(ros_env, tmp_path):
    params = tmp_path / "override.yaml"
    params.write_text(tiny_training_override("sac", 12, learning_starts=4))
    run_dir = tmp_path / "run"
    args = ["-m", "rls3_ros.ros.launcher", "training", "--bridges", "2", "--params-file", str(params),
            "--run-dir", str(run_dir), "--timeout", str(int(deadline(150)))]
    with NodeProcess(args, _env(ros_env, tmp_path), "launch_training") as p:
        code = p.wait(timeout=170)
        out = p.output()
    assert code == 0, out[-4000:]
    # every node ran as its own process, logs prefixed by node (namespaced bridges)
    for label in ("sim0/sim_bridge", "sim1/sim_bridge", "caption_oracle", "vlm_trainer", "rl_sampler"):
        assert re.search(rf"^\[{re.escape(label)}\] ", out, re.M), f"no output from {label}"
    assert "[launch] rl_sampler finished (exit 0)" in out
    assert re.search(r"\[rl_sampler\].*graph ready: 2 sim_bridge", out)
    assert re.search(r"\[rl_sampler\].*done \(budget\)", out)
    # the loop ran through the vlm_trainer's fine-tune action and wrote the run directory
    from rls3_ros.loop.run_dir import RunDir

    run = RunDir(str(run_dir))
    its = [m for m in run.read_metrics() if m["type"] == "iteration"]
    eps = [m for m in run.read_metrics() if m["type"] == "episode"]
    assert len(its) >= 2 and its[0]["iteration"] == 0
    assert eps and sum(e["valid"] for e in eps) >= 12
    assert {e["env"] for e in eps} == {"ros0e0", "ros0e1"}  # episodes from both bridges (vectorised env)
    for it in its[1:]:
        assert it["adapter_path"].startswith(str(run_dir / "adapters"))
        assert os.path.exists(os.path.join(it["adapter_path"], "adapter_config.json"))
    assert os.path.exists(run.report_path) and os.path.exists(run.plot_path)
    assert run.latest_checkpoint()
    # every node process is gone
    pids = [int(m) for m in re.findall(r"\[launch\] started \S+ \(pid (\d+)\)", out)]
    assert len(pids) == 5
    poll_until(lambda: not any(_pid_alive(x) for x in pids), 15, "node processes to exit")


def test_a_node_that_dies_stops_the_graph_with_its_reason(ros_env, tmp_path):
    params = tmp_path / "override.yaml"
    params.write_text(tiny_training_override("random", 12, learning_starts=4))
    args = ["-m", "rls3_ros.ros.launcher", "training", "--params-file", str(params), "--run-dir",
            str(tmp_path / "run"), "--set", "rl_sampler.T0=99", "--timeout", str(int(deadline(60)))]
    with NodeProcess(args, _env(ros_env, tmp_path), "launch_bad") as p:
        code = p.wait(timeout=90)
        out = p.output()
    assert code == 2, out[-3000:]
    assert "[launch] rl_sampler died (exit code 2)" in out
    assert "T0 must be in [1, T]" in out  # the node's own reason, repeated by the launcher
    pids = [int(m) for m in re.findall(r"\[launch\] started \S+ \(pid (\d+)\)", out)]
    poll_until(lambda: not any(_pid_alive(x) for x in pids), 15, "node processes to exit")


def test_ctrl_c_stops_every_node(ros_env, tmp_path):
    params = tmp_path / "override.yaml"
    params.write_text(tiny_training_override("random", 100000, learning_starts=4))
    args = ["-m", "rls3_ros.ros.launcher", "training", "--params-file", str(params), "--run-dir",
            str(tmp_path / "run")]
    with NodeProcess(args, _env(ros_env, tmp_path), "launch_sigint") as p:
        p.wait_for_output(r"\[rl_sampler\].*evaluating the base model", timeout=90)
        out = p.output()
        pids = [int(m) for m in re.findall(r"\[launch\] started \S+ \(pid (\d+)\)", out)]
        assert len(pids) == 4 and all(_pid_alive(x) for x in pids)
        p.proc.send_signal(signal.SIGINT)
        code = p.wait(timeout=40)
        out = p.output()
    assert code == 130, out[-3000:]
    assert "interrupted: stopping every node" in out
    poll_until(lambda: not any(_pid_alive(x) for x in pids), 15, "node processes to exit")


def test_launch_files_are_valid_python():
    import ast

    root = TEST_DIR.parent / "launch"
    for name in ("training.launch.py", "query.launch.py"):
        tree = ast.parse((root / name).read_text())
        fns = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "generate_launch_description" in fns


def test_launcher_refuses_bad_arguments(capsys, tmp_path, monkeypatch):
    from rls3_ros.ros.launcher import cli_launch, graph_nodes

    monkeypatch.chdir(tmp_path)
    assert cli_launch(["training", "--set", "nobody.x=1"]) == 2
    assert "no node 'nobody'" in capsys.readouterr().err
    assert cli_launch(["training", "--bridges", "0"]) == 2
    assert not (tmp_path / "runs").exists()  # refused arguments leave no run directory behind
    assert cli_launch(["training", "--params-file", "/nonexistent.yaml"]) == 2
    with pytest.raises(SystemExit):
        cli_launch(["bogus"])
    specs = graph_nodes("training", bridges=3, run_dir="/r")
    assert [s.label for s in specs] == ["sim0/sim_bridge", "sim1/sim_bridge", "sim2/sim_bridge", "caption_oracle",
                                        "vlm_trainer", "rl_sampler"]
    assert specs[-1].params["bridge_namespaces"] == ["sim0", "sim1", "sim2"]
    assert [s.label for s in graph_nodes("query", with_sim=True)] == ["sim_bridge", "spatial_query"]


def test_the_teacher_runs_over_the_graph_and_learns_from_its_evaluations(ros_env, tmp_path):
    """The learning-progress teacher is a sampler like the others: same env, scheduler and nodes;
    the graph evaluates the validation set (balanced + tail generator) after every fine-tune for it."""
    params = tmp_path / "override.yaml"
    params.write_text(tiny_training_override("teacher", 18, val_scenes=2, val_per_term=5, val_tail_scenes=2))
    run_dir = tmp_path / "run"
    args = ["-m", "rls3_ros.ros.launcher", "training", "--params-file", str(params), "--run-dir", str(run_dir),
            "--timeout", str(int(deadline(150)))]
    with NodeProcess(args, _env(ros_env, tmp_path), "launch_teacher") as p:
        code = p.wait(timeout=170)
        out = p.output()
    assert code == 0, out[-4000:]
    assert re.search(r"\[rl_sampler\].*agent teacher", out)
    from rls3_ros.loop.run_dir import RunDir

    run = RunDir(str(run_dir))
    its = [m for m in run.read_metrics() if m["type"] == "iteration"]
    assert len(its) >= 3
    for it in its:  # the validation split, per term combination, after every fine-tune (and for the base)
        assert it["splits"]["val"]["n"] > 0 and it["splits"]["val"]["per_combo_loss"]
    ck = run.latest_checkpoint()
    import json as _json

    policy = _json.loads(Path(ck, "agent", "mode_policy.json").read_text())
    assert abs(sum(policy.values()) - 1.0) < 1e-6 and len(policy) == 5
