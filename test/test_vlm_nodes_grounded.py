"""The VLM nodes with the project's default model (``model: grounded``, the base committed in
models/grounded/) on real MuJoCo renders, each node in its own process:

- ``spatial_query`` answers where-queries from another process on images in the request with
  the numbers and terms of the same model called in-process (``rls3_ros.vlm.grounded.load()``);
- ``vlm_trainer`` fine-tunes it through the FineTune action (feedback, adapter path), the adapter
  loads with plain ``peft.PeftModel.from_pretrained(GroundedRelationModel(cfg), dir)`` and changes
  the scores, and the trainer then scores with it;
- ``spatial_query`` follows the trainer's ``adapter`` announcement while a client keeps querying:
  no query fails, answers before the switch are the base's, after it the adapted model's.

The base is snapshotted at the start (``RLS3_MODEL_DIR`` -> a copy of models/grounded, which
``model: grounded`` resolves first), so nodes and in-process references use the same weights
even if models/grounded is replaced while the test runs. Nothing here depends on the base's
accuracy. (The broad node behaviour is tested faster with the tiny model in test_vlm_nodes.py.)"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ros_harness import BackgroundSpinner, NodeProcess, call_service, poll_until, spin_until_future
from rls3_ros.ros.isolation import isolated_ros_env

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "models" / "grounded"
MODEL_FILES = ("config.json", "model.safetensors")
STEPS = 20
TOL = 1e-5  # float32 on the wire; same weights, same image bytes on both sides


def _snapshot_base(dest: Path) -> Path:
    """Copy the committed base into ``dest`` (retried: models/grounded may be swapped meanwhile)."""
    from rls3_ros.vlm import grounded as G

    def copy():
        try:
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            for f in MODEL_FILES:
                shutil.copy2(COMMITTED / f, dest / f)
            G.load_grounded_dir(dest)  # a complete, loadable pair (not half of an old and a new base)
            return dest
        except (OSError, ValueError, RuntimeError):
            return None

    return poll_until(copy, 30, f"a loadable copy of {COMMITTED}", interval=0.5)


@pytest.fixture(scope="module")
def renders():
    """A few captioned MuJoCo renders (the pretraining corpus' renderer; seed not in its corpus)."""
    from rls3_ros.vlm.grounded_pretrain import _render

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = _render(6, seed=17, image_size=128, backend="mujoco", moves=2, desc="grounded node test renders")
    finally:
        torch.set_num_threads(n)
    assert len(s) == 6 and all(x.relations for x in s)
    return s


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """vlm_trainer + spatial_query with ``model:=grounded`` (each its own process), an in-process
    client node, and the in-process reference model (same snapshot), all in one isolated domain."""
    root = tmp_path_factory.mktemp("grounded_nodes")
    model_root = root / "models"
    snapshot = _snapshot_base(model_root / "grounded")
    env = isolated_ros_env(root)
    env["OMP_NUM_THREADS"] = "1"  # 2 shared cores: one torch thread per node process
    env["RLS3_MODEL_DIR"] = str(model_root)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        if k.startswith(("ROS_", "FASTDDS", "RMW_")) or k == "RLS3_MODEL_DIR":
            mp.setenv(k, v)
    adapters = root / "adapters"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with NodeProcess(["-m", "rls3_ros.ros.nodes.vlm_trainer", "--ros-args", "-p", "model:=grounded", "-p", "announce:=every",
                          "-p", f"adapter_dir:={adapters}", "-p", "torch_threads:=1"], env, "vlm_trainer",
                         log_dir=root) as trainer, \
                NodeProcess(["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", "model:=grounded",
                             "-p", "torch_threads:=1", "-p", f"adapter_roots:=[{str(adapters)!r}]"],
                            env, "spatial_query", log_dir=root) as query:
            spinner = BackgroundSpinner("grounded_nodes_test_client")
            try:
                from rls3_ros.ros.client import SpatialQueryClient
                from rls3_ros.vlm import grounded as G

                local = G.load()  # what `model: grounded` resolves to, in this process
                assert local.base_spec == f"py:rls3_ros.vlm.grounded:load:{snapshot}", local.base_spec
                trainer.wait_for_output("vlm_trainer ready", 120)
                query.wait_for_output("model ready: model='grounded'", 120)
                client = SpatialQueryClient(spinner.node)
                assert client.wait_for_service(20)
                yield SimpleNamespace(root=root, snapshot=snapshot, adapters=adapters, trainer=trainer, query=query,
                                      node=spinner.node, client=client, local=local)
            finally:
                spinner.close()
    finally:
        torch.set_num_threads(threads)
        mp.undo()


def _decided(probs) -> bool:
    """Every axis of the grounded head has a class (a term or 'none') with probability >= 0.5 and
    the per-axis choice is a relation the oracle can state: then the node's terms (per axis, the
    term with p >= 0.5) and the model's most probable caption (where_caption) are the same set."""
    from rls3_ros.captions import terms as T
    from rls3_ros.vlm import queries as Q

    chosen = []
    for axis in (T.VERTICAL_TERMS, T.DEPTH_TERMS, T.LATERAL_TERMS):
        ps = {t: probs[t] for t in axis}
        none = 1.0 - sum(ps.values())
        best = max(ps, key=ps.get)
        if max(ps[best], none) < 0.5:
            return False
        if ps[best] > none:
            chosen.append(best)
    return bool(chosen) and tuple(T.canonical_terms(chosen)) in set(Q.candidate_term_sets())


def test_query_node_answers_like_the_grounded_model_in_process(graph, renders):
    from rls3_ros.captions import terms as T
    from rls3_ros.vlm.answers import predicted_terms
    from rls3_ros.vlm import grounded as G

    local = {"": graph.local}
    asked = decided = 0
    for s in renders[:4]:
        for r in s.relations:
            a = graph.client.where_is(r.subject_description, r.reference_description, image=s.image, timeout=30)
            assert a.success, a.message
            if a.adapter not in local:  # only if the fine-tune test ran first
                local[a.adapter] = G.load()
                local[a.adapter].load_adapter(a.adapter)
            m = local[a.adapter]
            probs = m.where(s.image, r.subject_description, r.reference_description)
            assert set(a.probabilities) == set(probs)
            assert a.probabilities == pytest.approx(probs, abs=TOL)
            terms = predicted_terms(probs)
            assert a.terms == terms, (a.terms, probs)
            assert a.answer == T.make_caption(r.subject_description, terms, r.reference_description)
            assert a.confidence == pytest.approx(min(probs[t] for t in terms), abs=TOL)
            if _decided(probs):
                _, best, _ = m.where_caption(s.image, r.subject_description, r.reference_description)
                assert a.terms == best, (a.terms, best, probs)
                decided += 1
            asked += 1
    assert asked >= 4
    assert decided >= 1, "no answer where every axis was decided: where_caption was never compared"


def test_trainer_fine_tunes_grounded_and_query_node_follows_under_a_query_stream(graph, renders):
    from peft import PeftModel
    from rls3_ros.ros.rosutil import SpinSafeActionClient
    from rls3_msgs.action import FineTune
    from rls3_msgs.srv import ScoreSamples
    from safetensors.torch import load_file

    from rls3_ros.ros.conversions import msg_to_sample, sample_to_msg
    from rls3_ros.vlm import grounded as G

    node, client = graph.node, graph.client
    msgs = [sample_to_msg(s) for s in renders]
    wire = [msg_to_sample(m) for m in msgs]  # what the trainer sees

    def score():
        r = call_service(node, ScoreSamples, "/vlm_trainer/score_samples", ScoreSamples.Request(samples=msgs), timeout=60)
        assert r.success and len(r.scores) == sum(len(s.relations) for s in renders), r.message
        return [x.loss for x in r.scores]

    base_local = [x.loss for x in graph.local.score(wire)]
    assert score() == pytest.approx(base_local, abs=1e-4)  # the trainer serves the same base

    # a client keeps asking the query node while the trainer fine-tunes and announces
    s0, r0 = renders[0], renders[0].relations[0]
    answers, errors = [], []
    stop = threading.Event()

    def stream():
        while not stop.is_set():
            try:
                answers.append(client.where_is(r0.subject_description, r0.reference_description, image=s0.image,
                                               timeout=30))
            except Exception as e:  # noqa: BLE001 - a lost query
                errors.append(e)

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    ac = SpinSafeActionClient(node, FineTune, "/vlm_trainer/fine_tune")
    try:
        poll_until(lambda: len(answers) >= 3, 60, "first streamed answers")
        assert ac.wait_for_server(timeout_sec=20)
        feedback = []
        goal = FineTune.Goal(iteration=1, steps=STEPS, use_buffer=False, samples=msgs)
        h = spin_until_future(ac.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback)),
                              20, "goal acceptance")
        assert h.accepted
        res = spin_until_future(h.get_result_async(), 120, "fine-tune result").result
        assert res.success, res.message
        path = res.adapter_path
        assert Path(path).parent == graph.adapters and Path(path).name.startswith("iter_0001")
        assert res.samples_used == len(renders) and math.isfinite(res.final_loss)
        poll_until(lambda: len(feedback) >= STEPS, 20, "all feedback")
        assert [f.step for f in feedback] == list(range(1, STEPS + 1))
        assert all(f.total_steps == STEPS and math.isfinite(f.loss) for f in feedback)
        meta = json.loads((Path(path) / G.ADAPTER_META).read_text())
        assert meta["family"] == "grounded" and meta["base"] == f"py:rls3_ros.vlm.grounded:load:{graph.snapshot}"

        # the query node follows the announcement; the stream goes on meanwhile
        poll_until(lambda: sum(a.adapter == path for a in answers) >= 3, 60,
                   "query node to follow the announced adapter under the stream")
    finally:
        stop.set()
        t.join(timeout=40)
        ac.destroy()
    assert not t.is_alive()
    assert not errors, errors[:3]
    failed = [a.message for a in answers if not a.success]
    assert not failed, failed[:3]
    seq = [a.adapter for a in answers]
    assert set(seq) == {"", path}, set(seq)
    assert "" not in seq[seq.index(path):], "an answer from the base after the switch"
    graph.query.wait_for_output(re.escape(f"adapter switched: '' -> '{path}'"), 10)

    # answers before the switch are the base's, after it the adapted model's (computed here)
    tuned = G.load()
    tuned.load_adapter(path)
    args = (s0.image, r0.subject_description, r0.reference_description)
    p_base, p_tuned = graph.local.where(*args), tuned.where(*args)
    for a in answers:
        assert a.probabilities == pytest.approx(p_tuned if a.adapter else p_base, abs=TOL)
    tuned_local = [x.loss for x in tuned.score(wire)]
    assert max(abs(x - y) for x, y in zip(tuned_local, base_local)) > 1e-4, "the adapter did not change the scores"
    assert score() == pytest.approx(tuned_local, abs=1e-4)  # the trainer now serves the tuned model

    # plain peft: the adapter loads onto GroundedRelationModel(cfg) with the base weights
    cfg = G.GroundedConfig.from_dict(json.loads((graph.snapshot / "config.json").read_text()))
    weights = load_file(str(graph.snapshot / "model.safetensors"))

    def plain_base():
        m = G.GroundedRelationModel(cfg)
        m.load_state_dict(weights, strict=True)
        return m.eval()

    plain = PeftModel.from_pretrained(plain_base(), path).eval()
    assert [n for n, _ in plain.named_parameters() if "lora_" in n]
    feats = graph.local.features([x.image for x in renders]).float()
    pairs = [(i, r.subject_description.lower(), r.reference_description.lower())
             for i, x in enumerate(renders) for r in x.relations]
    inputs = (feats, torch.tensor([p[0] for p in pairs]), [p[1] for p in pairs], [p[2] for p in pairs])
    with torch.no_grad():
        lg_base = plain_base()(*inputs)[0]
        lg_plain = plain(*inputs)[0]
        lg_tuned = tuned.base(*inputs)[0]
    assert torch.allclose(lg_plain, lg_tuned, atol=1e-5)  # plain peft = the project's adapter loading
    assert (lg_plain - lg_base).abs().max() > 1e-3, "the adapter does not change the base's outputs"
    lp_base = G.axis_log_probs(lg_base)
    lp_plain = G.axis_log_probs(lg_plain)
    assert not np.allclose(lp_base.numpy(), lp_plain.numpy(), atol=1e-4)
    assert graph.trainer.alive() and graph.query.alive()
