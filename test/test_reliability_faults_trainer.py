"""Trainer faults: SIGKILL mid fine-tune, mid adapter write and mid checkpoint write.

1. The ``vlm_trainer`` node is SIGKILLed while its FineTune action is streaming feedback: the
   adapter directory then holds only complete adapters (each loads with plain peft); a restarted
   trainer started on the last complete adapter (how ``rl_sampler`` resumes a graph run) serves
   exactly that adapter's scores and trains on.
2. The project's adapter writer (``AdapterHost.save``, real embedded VLM) is SIGKILLed mid write,
   for a new adapter and for an overwrite: the named adapter directories are always complete
   (the new one is absent, the overwritten one still holds the old weights).
3. The RLS3 loop (``LoopRunner`` + ``RunDir``, as in ``rls3 train``) is SIGKILLed mid fine-tune,
   mid adapter write and mid checkpoint write, and resumed after each kill: every resume starts
   from the last complete checkpoint, and the finished run equals an uninterrupted one (same
   episodes, scene seeds, valid samples; iterations and episodes recorded once each, none lost).

What is and is not persisted (documented here, tested above/below):
- persisted atomically: adapters (temp dir + rename), loop checkpoints (scheduler incl. counts and
  history, env episode counters + RNG state, agent; temp dir + rename, then ``LATEST`` replaced),
  ``metrics.jsonl`` (truncated back to the checkpoint on resume);
- not persisted: the ``vlm_trainer`` node's sample buffer (in memory; the graph's rl_sampler sends
  each fine-tune's samples in the goal, ``use_buffer`` false, so the buffer holds nothing the run
  needs) and the samples collected since the last checkpoint (a resumed run re-generates those
  episodes from the checkpointed RNG state: test 3 shows the result equals the uninterrupted run).
- leftovers after a kill: hidden temp directories (``.iter_NNN.tmp-*``, ``checkpoints/.ckpt-NNN.tmp-*``);
  every reader ignores them (no loader scans for hidden names) and the next checkpoint or resume
  of the run removes them (test_security_runs.py).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

import vlm_test_model as tm
from reliability_common import TEST_DIR, TEST_MODEL, apply_ros_env, node_env
from ros_harness import BackgroundSpinner, NodeProcess, poll_until, spin_until_future

pytestmark = pytest.mark.timeout(300)
FINE_TUNE = "/vlm_trainer/fine_tune"
SCORE = "/vlm_trainer/score_samples"


def _named_dirs(d: Path):
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.exists() else []


def _load_plain_peft_tiny(path: Path):
    from peft import PeftModel

    return PeftModel.from_pretrained(tm.build_base(), str(path))


# -- 1. the vlm_trainer node ------------------------------------------------------------------------
def test_trainer_node_killed_mid_fine_tune_leaves_complete_adapters_and_restarts_on_the_last(tmp_path, monkeypatch):
    from rls3_ros.ros.rosutil import SpinSafeActionClient
    from rls3_msgs.action import FineTune
    from rls3_msgs.srv import ScoreSamples

    from rls3_ros.ros.conversions import sample_to_msg

    env = node_env(tmp_path)
    apply_ros_env(env, monkeypatch)
    adapters = tmp_path / "adapters"
    samples = tm.make_samples(16, seed=5)
    goal_samples = [sample_to_msg(s) for s in samples]

    def trainer(name, adapter=""):
        return NodeProcess(["-m", "rls3_ros.ros.nodes.vlm_trainer", "--ros-args", "-p", f"model:={TEST_MODEL}",
                            "-p", f"adapter_dir:={adapters}"] + (["-p", f"adapter:={adapter}"] if adapter else []),
                           env, name, log_dir=tmp_path)

    spinner = BackgroundSpinner("trainer_fault_client")
    try:
        node = spinner.node
        with trainer("trainer1") as t1:
            t1.wait_for_output("vlm_trainer ready", 90)
            ac = SpinSafeActionClient(node, FineTune, FINE_TUNE)
            assert ac.wait_for_server(timeout_sec=30)
            h = spin_until_future(ac.send_goal_async(FineTune.Goal(iteration=1, steps=5, samples=goal_samples)), 30, "goal 1")
            res = spin_until_future(h.get_result_async(), 60, "result 1").result
            assert res.success, res.message
            first = Path(res.adapter_path)
            # a long fine-tune; SIGKILL once feedback is flowing
            fb = []
            h = spin_until_future(ac.send_goal_async(FineTune.Goal(iteration=2, steps=100000, samples=goal_samples),
                                                     feedback_callback=lambda f: fb.append(f.feedback)), 30, "goal 2")
            assert h.accepted
            poll_until(lambda: len(fb) >= 3, 60, "fine-tune feedback")
            t1.proc.send_signal(signal.SIGKILL)
            assert t1.proc.wait(timeout=10) == -signal.SIGKILL
            ac.destroy()
        assert fb[-1].total_steps == 100000 and fb[-1].step < 100000
        named = _named_dirs(adapters)
        assert named == [first], named  # the killed fine-tune left no (half-written) adapter
        for d in named:
            _load_plain_peft_tiny(d)
        # restart on the last complete adapter: it serves exactly that adapter
        local = tm.load()
        local.load_adapter(str(first))
        expect = [s.loss for s in local.score(samples[:6])]
        with trainer("trainer2", str(first)) as t2:
            t2.wait_for_output("vlm_trainer ready", 90)
            sc = node.create_client(ScoreSamples, SCORE)
            assert sc.wait_for_service(timeout_sec=30)
            r = spin_until_future(sc.call_async(ScoreSamples.Request(samples=goal_samples[:6])), 60, "score")
            assert r.success, r.message
            assert [s.loss for s in r.scores] == pytest.approx(expect, abs=1e-5)
            # and it trains on: the next adapter is complete and gets a fresh name
            ac = SpinSafeActionClient(node, FineTune, FINE_TUNE)
            assert ac.wait_for_server(timeout_sec=30)
            h = spin_until_future(ac.send_goal_async(FineTune.Goal(iteration=2, steps=5, samples=goal_samples)), 30, "goal 3")
            res = spin_until_future(h.get_result_async(), 60, "result 3").result
            assert res.success, res.message
            assert [p.name for p in _named_dirs(adapters)] == [first.name, "iter_0002"]
            _load_plain_peft_tiny(Path(res.adapter_path))
            # the sample buffer is not persisted (documented): nothing buffered after a restart
            h = spin_until_future(ac.send_goal_async(FineTune.Goal(iteration=3, steps=1, use_buffer=True)), 30, "goal 4")
            res = spin_until_future(h.get_result_async(), 60, "result 4").result
            assert not res.success and "buffer empty" in res.message
            ac.destroy()
            assert "Traceback" not in t2.output()
    finally:
        spinner.close()


# -- 2. the project's adapter writer (AdapterHost.save, embedded VLM) ----------------------------------
def _writer(env, directory: Path, value: float, pause: bool, log: Path):
    args = [str(TEST_DIR / "reliability_adapter_writer.py"), str(directory), str(value)] + (["--pause"] if pause else [])
    return NodeProcess(args, env, f"writer_{directory.name}_{value}", log_dir=log)


def _lora_b_values(path: Path):
    from peft.utils import load_peft_weights

    w = load_peft_weights(str(path))
    return {round(float(v.flatten()[0]), 6) for k, v in w.items() if "lora_B" in k}


def test_adapter_write_killed_midway_never_leaves_a_half_written_adapter(tmp_path):
    from peft import PeftModel

    from rls3_ros.vlm.answers import load_model

    env = node_env(tmp_path)
    adapters = tmp_path / "adapters"
    a1, a2 = adapters / "iter_001", adapters / "iter_002"
    with _writer(env, a1, 0.01, False, tmp_path) as w:
        assert w.wait(120) == 0, w.output()[-2000:]
    assert _lora_b_values(a1) == {0.01}
    kills = 0
    for target, value in ((a2, 0.02), (a1, 0.03)):  # a new adapter, then an overwrite of a complete one
        with _writer(env, target, value, True, tmp_path) as w:
            w.wait_for_output("PAUSE", 120)
            tmp_dirs = [p for p in adapters.iterdir() if p.name.startswith(".")]
            assert tmp_dirs, "the kill is meant to land while the adapter is in its temp directory"
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait(timeout=10)
            kills += 1
    assert [p.name for p in _named_dirs(adapters)] == ["iter_001"]
    assert _lora_b_values(a1) == {0.01}  # the overwrite did not happen: the old adapter is intact
    base = load_model("embedded:random").host.base
    PeftModel.from_pretrained(base, str(a1))  # plain peft
    assert kills == 2


# -- 3. the RLS3 loop: kill mid fine-tune / adapter write / checkpoint write, resume each time ---------
def _victim(env, run_dir: Path, log: Path, name: str, resume: bool, fault: str = ""):
    args = [str(TEST_DIR / "reliability_train_victim.py"), str(run_dir)]
    if resume:
        args.append("--resume")
    if fault:
        args += ["--fault", fault]
    return NodeProcess(args, env, name, log_dir=log)


def _latest(run_dir: Path) -> str:
    return (run_dir / "checkpoints" / "LATEST").read_text().strip()


def _episodes(run_dir: Path):
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return recs


def test_loop_killed_mid_fine_tune_adapter_and_checkpoint_write_resumes_from_last_complete(tmp_path):
    env = node_env(tmp_path)
    ref_dir, run = tmp_path / "reference", tmp_path / "run"
    with _victim(env, ref_dir, tmp_path, "reference", False) as ref:
        assert ref.wait(240) == 0, ref.output()[-3000:]
    ref_done = json.loads(ref.output().split("DONE ", 1)[1].splitlines()[0])

    steps = [  # (fault, the marker to kill at, checkpoint LATEST must name afterwards)
        ("fine_tune:2", "PAUSE fine_tune", "ckpt-001"),
        ("adapter:3", "PAUSE adapter", "ckpt-002"),
        ("checkpoint:4", "PAUSE checkpoint", "ckpt-003"),
    ]
    resumed_from = []
    for k, (fault, marker, latest) in enumerate(steps):
        with _victim(env, run, tmp_path, f"victim{k}", k > 0, fault) as v:
            v.wait_for_output(marker, 240)
            v.proc.send_signal(signal.SIGKILL)
            v.proc.wait(timeout=10)
            out = v.output()
        if k > 0:
            resumed_from.append(out.split("RESUMED ", 1)[1].split()[0])
        assert _latest(run) == latest, (fault, _latest(run))
        # every named adapter and checkpoint is complete
        for d in _named_dirs(run / "adapters"):
            _load_plain_peft_tiny(d)
        for d in _named_dirs(run / "checkpoints"):
            assert {"meta.json", "scheduler.json", "envs.json", "MANIFEST.json"} <= {p.name for p in d.iterdir()}, d
        assert not (run / "checkpoints" / f"ckpt-{int(fault.split(':')[1]):03d}").exists() or fault.startswith("adapter")
    with _victim(env, run, tmp_path, "final", True) as v:
        assert v.wait(240) == 0, v.output()[-3000:]
        out = v.output()
    resumed_from.append(out.split("RESUMED ", 1)[1].split()[0])
    assert [Path(p).name for p in resumed_from] == ["ckpt-001", "ckpt-002", "ckpt-003"]
    done = json.loads(out.split("DONE ", 1)[1].splitlines()[0])
    assert done == ref_done, (done, ref_done)

    recs, ref_recs = _episodes(run), _episodes(ref_dir)
    eps = [r for r in recs if r["type"] == "episode"]
    its = [r["iteration"] for r in recs if r["type"] == "iteration"]
    assert [r["episode"] for r in eps] == list(range(1, len(eps) + 1))  # each once, none missing
    assert its == list(range(0, done["iterations"] + 1))
    keys = ("episode", "scene_seed", "scene_type", "steps", "valid", "invalid")
    assert [tuple(r[k] for k in keys) for r in eps] == [
        tuple(r[k] for k in keys) for r in ref_recs if r["type"] == "episode"]
    assert sum(r["valid"] for r in eps) == done["valid_samples"]  # no recorded sample lost or counted twice
    for d in _named_dirs(run / "adapters"):
        _load_plain_peft_tiny(d)
    assert [p.name for p in _named_dirs(run / "adapters")] == [p.name for p in _named_dirs(ref_dir / "adapters")]
