"""The VLM nodes with the project's embedded model (frozen EfficientNet-Lite0 + MiniLM, fusion
model in a small configuration saved to disk so both processes share one base): the trainer
scores and fine-tunes through the action, the adapter loads with plain peft onto the base,
and the query node follows the announcement and answers with it. (The broad node behaviour
is tested faster with the tiny model in test_vlm_nodes.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ros_harness import BackgroundSpinner, NodeProcess, call_service, poll_until, spin_until_future
from rls3_ros.ros.isolation import isolated_ros_env

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parent.parent
SMALL = dict(image_size=64, hidden_size=32, num_heads=2, num_layers=1, intermediate_size=64)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from rls3_ros.vlm.embedded import SpatialMatchConfig, SpatialMatchModel

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("embedded_base") / "base"
    SpatialMatchModel(SpatialMatchConfig(**SMALL)).save_pretrained(str(d))
    return d


def test_embedded_model_through_trainer_and_query_nodes(base_dir, tmp_path):
    from peft import PeftModel
    from rls3_ros.ros.rosutil import SpinSafeActionClient
    from rls3_msgs.action import FineTune
    from rls3_msgs.srv import ScoreSamples

    from rls3_ros.ros.client import SpatialQueryClient
    from rls3_ros.ros.conversions import sample_to_msg
    from rls3_ros.vlm.embedded import SpatialMatchModel
    from rls3_ros.vlm.standin import make_samples

    env = isolated_ros_env(tmp_path)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        if k.startswith(("ROS_", "FASTDDS", "RMW_")):
            mp.setenv(k, v)
    spec = f"embedded:{base_dir}"
    samples = make_samples(12, seed=4, image_size=64)
    s = samples[0]
    rel = s.relations[0]
    adapters = tmp_path / "adapters"
    try:
        with NodeProcess(["-m", "rls3_ros.ros.nodes.vlm_trainer", "--ros-args", "-p", f"model:={spec}", "-p", "announce:=every",
                          "-p", f"adapter_dir:={adapters}", "-p", "torch_threads:=1"], env, "trainer", log_dir=tmp_path) as tr, \
                NodeProcess(["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", f"model:={spec}",
                             "-p", "torch_threads:=1", "-p", f"adapter_roots:=[{str(adapters)!r}]"],
                            env, "query", log_dir=tmp_path) as q:
            spinner = BackgroundSpinner("embedded_test_client")
            try:
                node = spinner.node
                tr.wait_for_output("vlm_trainer ready", 120)
                q.wait_for_output("model ready", 120)
                client = SpatialQueryClient(node)
                assert client.wait_for_service(20)
                before = client.where_is(rel.subject_description, rel.reference_description, image=s.image, timeout=30)
                assert before.success and before.adapter == "", before.message
                assert abs(sum(before.probabilities[t] for t in ("left", "right")) - 1.0) < 1.5  # marginals in [0, 2]

                r = call_service(node, ScoreSamples, "/vlm_trainer/score_samples",
                                 ScoreSamples.Request(samples=[sample_to_msg(x) for x in samples[:4]]), timeout=60)
                assert r.success and len(r.scores) == sum(len(x.relations) for x in samples[:4]), r.message
                assert all(0.0 <= x.confidence <= 1.0 and x.loss >= 0.0 for x in r.scores)

                ac = SpinSafeActionClient(node, FineTune, "/vlm_trainer/fine_tune")
                assert ac.wait_for_server(timeout_sec=20)
                feedback = []
                goal = FineTune.Goal(iteration=1, steps=12, samples=[sample_to_msg(x) for x in samples])
                h = spin_until_future(ac.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback)),
                                      20, "goal")
                res = spin_until_future(h.get_result_async(), 120, "fine-tune").result
                assert res.success, res.message
                assert [f.step for f in feedback] == list(range(1, 13))
                assert (Path(res.adapter_path) / "adapter_config.json").is_file()

                # plain peft onto the saved base
                base = SpatialMatchModel.from_pretrained(str(base_dir))
                tuned = PeftModel.from_pretrained(base, res.adapter_path)
                lora = [n for n, _ in tuned.named_parameters() if "lora_" in n]
                assert lora

                def switched():
                    a = client.where_is(rel.subject_description, rel.reference_description, image=s.image, timeout=30)
                    return a if a.success and a.adapter == res.adapter_path else None

                after = poll_until(switched, 60, "query node to follow the announced adapter")
                # the node's answers are the model's: base before, base + adapter after (computed here)
                from rls3_ros.vlm.factory import load_vlm

                args = (s.image, rel.subject_description, rel.reference_description)
                local_base = load_vlm(spec).where(*args)
                local_tuned = load_vlm(spec, adapter=res.adapter_path).where(*args)
                assert before.probabilities == pytest.approx(local_base, abs=1e-6)
                assert after.probabilities == pytest.approx(local_tuned, abs=1e-6)
                diff = max(abs(local_tuned[t] - local_base[t]) for t in local_base)
                assert diff > 1e-6, "the adapter did not change the answer"
                w = client.what_is("left", rel.reference_description,
                                   [o.description for o in s.scene.objects if o.description != rel.reference_description],
                                   image=s.image, timeout=30)
                assert w.success and w.ranked and np.all(np.diff([x for _, x in w.ranked]) <= 1e-9), w.message
                ac.destroy()
            finally:
                spinner.close()
    finally:
        mp.undo()
