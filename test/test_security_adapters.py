"""Issue 26 (items 1-3): nothing a remote ROS participant sends selects code or files, and no
adapter it names can crash, freeze or exhaust ``spatial_query`` / ``vlm_trainer``.

Real node processes (tiny real torch model, ``py:vlm_test_model:load`` given on the command line
as an operator would) over loopback DDS; real clients (parameter service, SetAdapter, FineTune
action, AdapterInfo publisher); real adapter directories on disk (``security_adapter_builders``).

- a runtime ``set_parameters`` of ``model = py:os:system:touch <marker>`` is refused (read-only),
  and neither a swap, a lifecycle re-activation nor a fine-tune goal runs it: no marker file,
  the node still answers;
- announcements accepted, then refused (another base, a missing path) leave the node alive and
  serving (rclpy's "Logger severity cannot be changed between calls" killed it);
- crafted adapters (huge rank, FIFO weights, no rls3_adapter.json, another base, outside the
  roots, symlink escapes, pickled weights, regex target modules, megatron_core import) are
  refused with reasons while a concurrent query stream keeps succeeding; missing and forbidden
  paths get the same message;
- a read that exceeds ``adapter_load_timeout`` (a 64 MiB weights file, 1 ms) answers
  set_adapter with a timeout reason, the old adapter stays, queries go on.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

import security_adapter_builders as B
import vlm_test_model as tm
from reliability_common import TEST_MODEL, apply_ros_env, node_env
from ros_harness import BackgroundSpinner, NodeProcess, call_service, poll_until, spin_until_future

pytestmark = pytest.mark.timeout(300)

SQ = "spatial_query"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Adapter roots with a good adapter, an outside directory, and one spatial_query process
    following the adapter topic; a background-spun client node."""
    root = tmp_path_factory.mktemp("security_adapters")
    roots, outside = root / "roots", root / "outside"
    roots.mkdir()
    outside.mkdir()
    good = B.good_adapter(roots / "good", seed=1)
    good2 = B.good_adapter(roots / "good2", seed=2)
    B.good_adapter(outside / "good", seed=3)
    env = node_env(root)
    mp = pytest.MonkeyPatch()
    apply_ros_env(env, mp)
    args = ["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", f"model:={TEST_MODEL}",
            "-p", "image_qos:=reliable", "-p", f"adapter_roots:={json.dumps([str(roots)])}"]
    with NodeProcess(args, env, SQ, log_dir=root) as proc:
        spinner = BackgroundSpinner("security_client")
        try:
            from rls3_ros.ros.client import SpatialQueryClient

            client = SpatialQueryClient(spinner.node, f"/{SQ}/query")
            proc.wait_for_output("model ready", 90)
            assert client.wait_for_service(30)
            yield type("World", (), dict(root=root, roots=roots, outside=outside, good=good, good2=good2, env=env,
                                         proc=proc, node=spinner.node, client=client))
        finally:
            spinner.close()
            mp.undo()


IMG = tm.make_samples(1, seed=9)[0].image


def _ask(w, timeout=20.0):
    return w.client.where_is("red square", "blue square", image=IMG, timeout=timeout)


def _set_adapter(w, path, name=SQ, timeout=60.0):
    from rls3_msgs.srv import SetAdapter

    return call_service(w.node, SetAdapter, f"/{name}/set_adapter", SetAdapter.Request(path=path), timeout=timeout)


def _set_param(node, service, name, value):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    req = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
        type=ParameterType.PARAMETER_STRING, string_value=value))])
    return call_service(node, SetParameters, service, req, timeout=30).results[0]


def _query_stream(w):
    """Start a thread asking queries until stopped; returns (stop event, answers, errors, thread)."""
    stop, answers, errors = threading.Event(), [], []

    def run():
        while not stop.is_set():
            try:
                answers.append(_ask(w, timeout=15))
            except Exception as e:  # noqa: BLE001 - a lost query: the test fails on it
                errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    poll_until(lambda: len(answers) >= 3, 30, "first streamed answers")
    return stop, answers, errors, t


# -- item 1: no code from a runtime parameter ---------------------------------------------------------

def test_model_parameter_cannot_be_set_remotely_and_no_code_runs(world):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    w = world
    marker = w.root / "rce_marker"
    for name in ("model", "adapter", "adapter_roots", "max_adapter_rank"):
        value = f"py:os:system:touch {marker}" if name == "model" else str(w.root)
        r = _set_param(w.node, f"/{SQ}/set_parameters", name, value)
        assert not r.successful and "read-only" in r.reason, (name, r.reason)
    # what would run a model spec: a swap (reload builds a new instance from the spec) and re-activation
    r = _set_adapter(w, w.good)
    assert r.success, r.message
    for tid in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE):
        assert call_service(w.node, ChangeState, f"/{SQ}/change_state", ChangeState.Request(
            transition=Transition(id=tid)), timeout=30).success
    a = poll_until(lambda: (lambda x: x if x.success else None)(_ask(w)), 60, "answers after re-activation")
    assert a.success
    r = _set_adapter(w, "")
    assert r.success, r.message
    assert not marker.exists(), "the model spec set through set_parameters ran code"
    assert w.proc.alive()


def test_trainer_model_parameter_refused_and_a_fine_tune_goal_runs_no_code(tmp_path, monkeypatch):
    from rls3_ros.ros.rosutil import SpinSafeActionClient
    from rls3_msgs.action import FineTune
    from rls3_msgs.srv import ScoreSamples

    from rls3_ros.ros.conversions import sample_to_msg

    env = node_env(tmp_path)
    apply_ros_env(env, monkeypatch)
    marker = tmp_path / "rce_marker"
    adapters = tmp_path / "adapters"
    args = ["-m", "rls3_ros.ros.nodes.vlm_trainer", "--ros-args", "-p", f"model:={TEST_MODEL}",
            "-p", f"adapter_dir:={adapters}", "-p", "train_instance:=reload", "-p", "batch_size:=4"]
    with NodeProcess(args, env, "vlm_trainer", log_dir=tmp_path) as proc:
        spinner = BackgroundSpinner("security_trainer_client")
        try:
            proc.wait_for_output("vlm_trainer ready", 90)
            node = spinner.node
            r = _set_param(node, "/vlm_trainer/set_parameters", "model", f"py:os:system:touch {marker}")
            assert not r.successful and "read-only" in r.reason, r.reason
            samples = tm.make_samples(4, seed=4)
            ac = SpinSafeActionClient(node, FineTune, "/vlm_trainer/fine_tune")
            assert ac.wait_for_server(timeout_sec=30)
            goal = FineTune.Goal(iteration=1, steps=3, use_buffer=False, samples=[sample_to_msg(s) for s in samples])
            handle = spin_until_future(ac.send_goal_async(goal), 30, "goal acceptance")
            assert handle.accepted
            res = spin_until_future(handle.get_result_async(), 120, "fine-tune result").result
            assert res.success, res.message  # the goal built a training instance (reload) from the start-up spec
            assert not marker.exists(), "the model spec set through set_parameters ran code"
            meta = json.loads((Path(res.adapter_path) / "rls3_adapter.json").read_text())
            assert meta["base_fingerprint"] and meta["family"] == "contrastive"
            sr = call_service(node, ScoreSamples, "/vlm_trainer/score_samples",
                              ScoreSamples.Request(samples=[sample_to_msg(samples[0])]), timeout=30)
            assert sr.success, sr.message
            assert proc.alive()
        finally:
            spinner.close()


# -- item 2: accepted then refused announcements -------------------------------------------------------

def test_announcements_accepted_then_refused_leave_the_node_serving(world):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rls3_msgs.msg import AdapterInfo

    w = world
    other = B.crafted("other_base", w.good, w.roots, w.outside)
    pub = w.node.create_publisher(AdapterInfo, "adapter", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
        history=HistoryPolicy.KEEP_LAST))
    try:
        poll_until(lambda: pub.get_subscription_count() > 0, 30, "spatial_query's adapter subscription")
        pub.publish(AdapterInfo(path=w.good2, iteration=11))
        poll_until(lambda: (lambda a: a.success and a.adapter == w.good2)(_ask(w)), 60, "announced adapter served")
        # a path that does not exist (refused before too: the second log call site severity crashed
        # the node), then the adapter of a trainer of another base
        for it, path in ((12, str(w.roots / "gone")), (13, other)):
            pub.publish(AdapterInfo(path=path, iteration=it))
            w.proc.wait_for_output(rf"announced adapter \(iteration {it}\) not loaded", 60)
        out = w.proc.output()
        assert "trained on another base" in out and "Logger severity" not in out
        assert w.proc.alive()
        a = _ask(w)
        assert a.success and a.adapter == w.good2
    finally:
        w.node.destroy_publisher(pub)
        assert _set_adapter(w, "").success


# -- item 3: crafted adapters, bounded loading ---------------------------------------------------------

def test_crafted_adapters_are_refused_with_reasons_while_queries_go_on(world):
    w = world
    assert _set_adapter(w, w.good).success
    stop, answers, errors, t = _query_stream(w)
    refusals = {}
    try:
        # the FIFO first: it froze every thread of the node before (safetensors holds the GIL)
        kinds = ["fifo_weights"] + [k for k in B.REASONS if k != "fifo_weights"]
        for kind in kinds:
            path = B.crafted(kind, w.good, w.roots, w.outside)
            n = len(answers)
            r = _set_adapter(w, path, timeout=60)
            assert r is not None and not r.success, (kind, r.message if r else None)
            assert B.REASONS[kind] in r.message, (kind, r.message)
            assert r.active_adapter == w.good, (kind, r.active_adapter)
            assert len(r.message.splitlines()) == 1
            refusals[kind] = r.message.replace(repr(path), "<path>")
            poll_until(lambda: len(answers) >= n + 2, 30, f"queries answered after the {kind} refusal")
    finally:
        stop.set()
        t.join(timeout=30)
    assert not errors, errors[:3]
    failed = [a.message for a in answers if not a.success]
    assert not failed, failed[:3]
    assert all(a.adapter == w.good for a in answers)
    # the refusal does not tell whether a path exists: missing and forbidden read the same
    same = {refusals[k] for k in ("outside_roots", "missing_outside", "missing_inside", "symlink_escape")}
    assert len(same) == 1, same
    assert w.proc.alive()
    r = _set_adapter(w, w.good2)  # a good adapter still loads
    assert r.success and r.active_adapter == w.good2, r.message
    assert _set_adapter(w, "").success


def test_an_adapter_read_beyond_its_timeout_answers_with_the_reason_and_queries_go_on(world):
    """A 64 MiB weights file (sparse: no disk used) takes longer to read than a 1 ms
    ``adapter_load_timeout``: set_adapter answers with the timeout reason, nothing is swapped in."""
    w = world
    slow = B.copy_of(w.good, w.roots / "slow_read")
    os.remove(slow / B.WEIGHTS)
    with open(slow / B.WEIGHTS, "wb") as f:
        f.truncate(64 << 20)
    name = "sq_timeout"
    args = ["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-r", f"__node:={name}",
            "-p", f"model:={TEST_MODEL}", "-p", "follow_adapter_topic:=false",
            "-p", f"adapter_roots:={json.dumps([str(w.roots)])}", "-p", "adapter_load_timeout:=0.001"]
    with NodeProcess(args, w.env, name, log_dir=w.root) as proc:
        proc.wait_for_output("model ready", 90)
        from rls3_ros.ros.client import SpatialQueryClient

        client = SpatialQueryClient(w.node, f"/{name}/query")
        assert client.wait_for_service(30)
        r = _set_adapter(w, str(slow), name=name)
        assert not r.success and "did not finish within" in r.message and "adapter_load_timeout" in r.message, r.message
        assert r.active_adapter == ""
        a = client.where_is("red square", "blue square", image=IMG, timeout=20)
        assert a.success and a.adapter == "", a.message
        assert proc.alive()
