"""Graph faults: a sim_bridge SIGKILLed while the rl_sampler runs the RLS3 loop over the graph.

``rls3 launch training --respawn-bridges`` restarts the dead bridge and gives the rl_sampler
``bridge_lost:=wait``: the sampler reports the lost bridge, waits for it, rebuilds the episode's
scene on the new process, counts the lost move as invalid and the run goes on to its budget
(exit 0). Without ``--respawn-bridges`` (default ``bridge_lost:=fail``) a dying node stops the
graph with its reason: tested in test_graph_training.py.
"""

from __future__ import annotations

import os
import re
import signal

import pytest

from reliability_common import node_env
from ros_harness import NodeProcess, deadline, poll_until
from tiny_training_graph import tiny_training_override

pytestmark = pytest.mark.timeout(300)

def _episodes(run_dir):
    import json

    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    recs = []
    for line in path.read_text().splitlines():
        try:
            recs.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return [r for r in recs if r.get("type") == "episode"]


def _bridge_pid(out: str) -> int:
    return int(re.findall(r"\[launch\] started sim_bridge \(pid (\d+)\)", out)[-1])


def test_killed_sim_bridge_is_reported_respawned_and_the_run_goes_on(tmp_path):
    env = node_env(tmp_path)
    params = tmp_path / "override.yaml"
    # service_timeout is how long the sampler's call to the killed bridge waits for its lost answer (the
    # loss is found by it), but it bounds every other call too: a fine-tune goal took > 8 s to be
    # accepted on a busy machine (load 8 on 2 cores; idle < 0.5 s). Scaled like every test deadline.
    params.write_text(tiny_training_override("random", 21, service_timeout=deadline(8.0), bridge_wait=deadline(120.0)))
    run_dir = tmp_path / "run"
    args = ["-m", "rls3_ros.ros.launcher", "training", "--params-file", str(params), "--run-dir", str(run_dir),
            "--respawn-bridges", "--timeout", str(int(deadline(250)))]
    with NodeProcess(args, env, "launch_respawn", log_dir=tmp_path) as p:
        p.wait_for_output(r"\[rl_sampler\].*fine-tune 1:", 150)  # the loop is running over the graph
        # kill right after an episode that does not end a fine-tuning round (E=2: an odd one), so the
        # sampler's very next call goes to the bridge (not a fine-tune/eval long enough to hide the loss)
        seen = len(_episodes(run_dir))
        poll_until(lambda: any(e["episode"] % 2 == 1 for e in _episodes(run_dir)[seen:]), 120, "an odd episode")
        first = _bridge_pid(p.output())
        os.kill(first, signal.SIGKILL)  # a child of the launcher this test started, by its pid
        p.wait_for_output(r"\[launch\] sim_bridge died \(killed by signal 9\); respawning it", 30)
        poll_until(lambda: _bridge_pid(p.output()) != first, 30, "a new sim_bridge process")
        p.wait_for_output(r"\[rl_sampler\].*sim_bridge\[/\] lost \(", 8.0 + 60)  # after service_timeout
        p.wait_for_output(r"\[rl_sampler\].*sim_bridge\[/\] is back after", 90)
        code = p.wait(timeout=240)
        out = p.output()
    assert code == 0, out[-4000:]
    assert re.search(r"\[rl_sampler\].*done \(budget\)", out), out[-3000:]
    assert "[launch] rl_sampler finished (exit 0)" in out
    assert "Traceback" not in out
    from rls3_ros.loop.run_dir import RunDir

    metrics = RunDir(str(run_dir)).read_metrics()
    eps = [m for m in metrics if m["type"] == "episode"]
    assert [m["episode"] for m in eps] == list(range(1, len(eps) + 1))
    assert sum(m["valid"] for m in eps) >= 21
    # episodes ran after the loss (the run went on) and the fine-tunes went on too
    its = [m for m in metrics if m["type"] == "iteration"]
    assert len(its) >= 3

