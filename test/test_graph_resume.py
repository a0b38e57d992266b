"""Resume of the training graph (``rls3 launch training --resume runs/<ts>``) and a node dying mid-run.

1. The graph runs the RLS3 loop (real processes, the tiny training graph); once fine-tune 1 is
   checkpointed, the ``vlm_trainer`` process is SIGKILLed in the middle of fine-tune 2. The
   launcher stops the run and names the node and its signal (exit 1). ``--resume`` on the same
   run directory then continues from the last complete checkpoint: the rl_sampler resumes at
   iteration 1 (no base evaluation again), the trainer starts on that checkpoint's adapter, the
   run's own settings come back from its config.yaml (a ``--set`` of the first launch is not
   repeated), metrics.jsonl keeps its lines up to the checkpoint, every iteration and episode is
   recorded once (none repeated, none lost) and the run finishes its budget (exit 0).
2. ``--resume`` on a directory without a checkpoint (and other unusable directories) is refused
   with a one-line reason and exit code 2, before any node starts or any directory is created.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import yaml

from reliability_common import node_env
from ros_harness import NodeProcess, deadline, poll_until
from tiny_training_graph import tiny_training_override

pytestmark = pytest.mark.timeout(240)
BUDGET = 18  # valid samples: T0=3 per episode, E=2 episodes per fine-tune -> at least 3 fine-tunes
STEPS = 40  # fine-tune steps (~1.5 s with the test VLM): long enough to kill one midway


def _latest(run_dir) -> str:
    try:
        return (run_dir / "checkpoints" / "LATEST").read_text().strip()
    except FileNotFoundError:
        return ""


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _pid(out: str, label: str) -> int:
    return int(re.findall(rf"\[launch\] started {re.escape(label)} \(pid (\d+)\)", out)[-1])


def _pids(out: str):
    return [int(m) for m in re.findall(r"\[launch\] started \S+ \(pid (\d+)\)", out)]


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie is gone for our purpose
    except OSError:
        return False


def test_graph_killed_mid_fine_tune_stops_with_the_reason_and_resumes_from_the_last_checkpoint(tmp_path):
    env = node_env(tmp_path)
    params = tmp_path / "override.yaml"
    params.write_text(tiny_training_override("sac", BUDGET, learning_starts=4))
    run_dir = tmp_path / "run"
    launch = ["-m", "rls3_ros.ros.launcher", "training", "--params-file", str(params)]

    # -- 1. the first launch; SIGKILL the vlm_trainer in the middle of fine-tune 2
    first = launch + ["--run-dir", str(run_dir), "--set", f"rl_sampler.fine_tune_steps={STEPS}", "--timeout", str(int(deadline(150)))]
    with NodeProcess(first, env, "launch_first", log_dir=tmp_path) as p:
        poll_until(lambda: _latest(run_dir) not in ("", "ckpt-000"), 150, "the checkpoint of fine-tune 1")
        p.wait_for_output(rf"\[vlm_trainer\].*fine-tune iteration 2: {STEPS} steps", 90)
        os.kill(_pid(p.output(), "vlm_trainer"), signal.SIGKILL)  # a child of the launcher this test started
        code = p.wait(timeout=60)
        out = p.output()
    assert code == 1, out[-4000:]
    assert "[launch] vlm_trainer died (killed by signal 9); stopping the graph. Last lines of vlm_trainer:" in out
    assert re.search(r"\[launch\]   \| .*fine-tune iteration 2: ", out)  # its last words, repeated by the launcher
    assert not re.search(r"\[vlm_trainer\].*fine-tune iteration 2 done", out)  # killed midway
    assert "[launch] rl_sampler finished" not in out
    poll_until(lambda: not any(_pid_alive(x) for x in _pids(out)), 15, "node processes to exit")
    assert _latest(run_dir) == "ckpt-001"  # the interrupted fine-tune left no checkpoint
    meta = json.loads((run_dir / "checkpoints" / "ckpt-001" / "meta.json").read_text())
    assert meta["iteration"] == 1 and os.path.basename(meta["adapter"]) == "iter_0001"
    kept = (run_dir / "metrics.jsonl").read_bytes()[: meta["metrics_size"]]
    recs = _records(run_dir)
    assert [r["iteration"] for r in recs if r["type"] == "iteration"] == [0, 1]
    assert max(r["episode"] for r in recs if r["type"] == "episode") >= 4  # episodes 3-4 ran after the checkpoint
    assert sorted(os.listdir(run_dir / "adapters")) == ["iter_0001"]  # nothing half-written

    # -- 2. --resume: same parameter file, no --set (the run's config.yaml brings fine_tune_steps back)
    with NodeProcess(launch + ["--resume", str(run_dir), "--timeout", str(int(deadline(150)))], env, "launch_resume", log_dir=tmp_path) as p:
        code = p.wait(timeout=170)
        out = p.output()
    assert code == 0, out[-4000:]
    assert f"[launch] resuming {run_dir} from ckpt-001 (iteration 1, adapter {meta['adapter']})" in out
    sampler_cmd = re.search(r"\[launch\] started rl_sampler \(pid \d+\): (.*)", out).group(1)
    assert f"-p run_dir:=\"{run_dir}\"" in sampler_cmd and "-p resume:=true" in sampler_cmd
    assert re.search(rf"\[vlm_trainer\].*loaded in .*\(adapter '{re.escape(meta['adapter'])}'", out)
    assert re.search(r"\[rl_sampler\].*resumed from \S*ckpt-001: iteration 1,", out)
    assert not re.search(r"\[rl_sampler\].*evaluating the base model", out)
    ft = [int(i) for i in re.findall(rf"\[vlm_trainer\].*fine-tune iteration (\d+): {STEPS} steps", out)]
    assert ft and ft[0] == 2 and ft == list(range(2, 2 + len(ft)))  # continues at 2; never 1 again
    assert re.search(r"\[rl_sampler\].*done \(budget\)", out)
    assert "[launch] rl_sampler finished (exit 0)" in out
    assert "Traceback" not in out

    data = (run_dir / "metrics.jsonl").read_bytes()
    assert data.startswith(kept)  # the lines up to the checkpoint are kept as they were
    recs = _records(run_dir)
    its = [r["iteration"] for r in recs if r["type"] == "iteration"]
    eps = [r for r in recs if r["type"] == "episode"]
    assert its == list(range(0, len(its))) and len(its) >= 4  # base + 3 fine-tunes, each once
    assert [r["episode"] for r in eps] == list(range(1, len(eps) + 1))  # each episode once, none lost
    assert sum(r["valid"] for r in eps) >= BUDGET
    assert recs[-1]["type"] == "stop" and recs[-1]["reason"] == "budget"
    assert sorted(os.listdir(run_dir / "adapters")) == [f"iter_{i:04d}" for i in range(1, len(its))]
    assert os.path.exists(run_dir / "report.md")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["loop"]["fine_tune_steps"] == STEPS and cfg["run"]["graph"]


def test_resume_without_a_checkpoint_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    env = node_env(tmp_path)
    run = tmp_path / "runs" / "no_ckpt"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("")
    proc = subprocess.run([sys.executable, "-m", "rls3_ros.ros.launcher", "training", "--resume", str(run)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rls3 launch: cannot resume: ") and "has no checkpoint" in lines[0]
    assert "[launch]" not in proc.stdout  # no node was started
    assert sorted(os.listdir(tmp_path / "runs")) == ["no_ckpt"] and sorted(os.listdir(run)) == ["checkpoints",
                                                                                                 "metrics.jsonl"]

    # other unusable directories, same contract (in-process)
    from rls3_ros.ros.launcher import cli_launch, resume_info

    monkeypatch.chdir(tmp_path)
    (run / "checkpoints" / "LATEST").write_text("ckpt-003\n")  # names a checkpoint that is not there
    ok = tmp_path / "ok"
    (ok / "checkpoints" / "ckpt-002").mkdir(parents=True)
    (ok / "checkpoints" / "LATEST").write_text("ckpt-002\n")
    (ok / "adapters" / "iter_0002").mkdir(parents=True)
    (ok / "checkpoints" / "ckpt-002" / "meta.json").write_text(json.dumps(
        {"iteration": 2, "adapter": "/moved/away/adapters/iter_0002", "metrics_size": 0}))
    cfg = {"run": {"agent": "ppo", "seed": 3, "graph": True, "n_envs": 2},
           "loop": {"E": 2, "eta": 0.5, "min_delta": 0.0}, "env": {"j2_per_step": True, "j2_metric": "error"},
           "agent": {"learning_starts": 16, "k": 4}, "eval": {"test_scenes": 60}}
    (ok / "config.yaml").write_text(yaml.safe_dump(cfg))
    inproc = tmp_path / "inproc"
    (inproc / "checkpoints" / "ckpt-000").mkdir(parents=True)
    (inproc / "checkpoints" / "LATEST").write_text("ckpt-000\n")
    (inproc / "checkpoints" / "ckpt-000" / "meta.json").write_text(json.dumps({"iteration": 0, "adapter": ""}))
    (inproc / "config.yaml").write_text(yaml.safe_dump({"run": {"agent": "sac", "backend": "mujoco"}}))
    capsys.readouterr()
    for argv, reason in (
        (["training", "--resume", str(run)], "has no checkpoint"),
        (["training", "--resume", str(tmp_path / "nowhere")], "is not a directory"),
        (["training", "--resume", str(inproc)], "`rls3 train --resume"),
        (["training", "--resume", str(ok), "--bridges", "1"], "was run with 2 sim_bridge(s)"),
        (["training", "--resume", str(ok), "--run-dir", str(run)], "not both"),
        (["query", "--resume", str(ok)], "training graph only"),
    ):
        assert cli_launch(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and reason in err[0], (argv, err)
    assert sorted(os.listdir(tmp_path / "runs")) == ["no_ckpt"]  # nothing created by a refusal
    # what a resume passes on: the run's settings as typed `-p` text, the adapter found in the moved run
    info = resume_info(str(ok))
    assert info.iteration == 2 and info.n_envs == 2
    assert info.adapter == str(ok / "adapters" / "iter_0002")
    assert info.sampler_params == {"agent": '"ppo"', "seed": "3", "E": "2", "eta": "0.5", "j2_metric": '"error"',
                                   "j2_per_step": "true", "learning_starts": "16", "miner_k": "4",
                                   "test_scenes": "60", "min_delta": "0.0"}  # min_delta: a node parameter now
