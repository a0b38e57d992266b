"""The query server's shipped default answers with the serving model (issue 17, item 6).

``rls3 launch query`` (config/query.yaml, nothing overridden) in a real process; a plain rclpy
client (a node, a ``SpatialQuery`` service client, hand-built ``sensor_msgs/Image`` messages; not
``rls3_ros.ros.client``) asks "where is A relative to B?" for every relation the caption oracle
states on held-out MuJoCo images (scene seeds of the pretraining held-out range, never trained
on). Its answers must be the serving model's (same terms as ``grounded:serving`` in-process),
clearly better than the weak training base on the same images, and consistent with the figures
stated in models/grounded_serving/README.md (results/where_accuracy.json, 900 held-out
relations): exact term sets within 0.2 of the stated rate, every depth and vertical term
answered right at least 30 % of the time (the weak base: never).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from ros_harness import BackgroundSpinner, NodeProcess, call_service
from rls3_ros.ros.isolation import isolated_ros_env

REPO = Path(__file__).resolve().parent.parent
STATED = REPO / "results" / "where_accuracy.json"
N_IMAGES = 40

pytestmark = pytest.mark.timeout(240)


def _image_msg(rgb: np.ndarray, sec: int):
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    msg = Image(header=Header(stamp=Time(sec=sec), frame_id="camera_optical"), height=rgb.shape[0],
                width=rgb.shape[1], encoding="rgb8", is_bigendian=0, step=rgb.shape[1] * 3)
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


def _score(pairs):
    """(truth terms, answered terms) pairs -> (exact rate, {term: (hits, n)})."""
    per = {}
    for truth, ans in pairs:
        for t in truth:
            h, n = per.get(t, (0, 0))
            per[t] = (h + int(t in ans), n + 1)
    return float(np.mean([set(t) == set(a) for t, a in pairs])), per


def test_plain_client_gets_the_serving_models_accuracy_from_rls3_launch_query(tmp_path):
    import torch
    from rls3_msgs.srv import SpatialQuery

    from rls3_ros.captions import terms as T
    from rls3_ros.vlm.answers import QueryRequest, answer_query, load_model
    from rls3_ros.vlm.pretrain import render_corpus

    torch.set_num_threads(1)
    samples = render_corpus(N_IMAGES, 7919, 160, "mujoco", moves_per_scene=2, desc="held-out test images")
    relations = [(i, r) for i, s in enumerate(samples) for r in s.relations]
    assert len(relations) >= 80

    env = isolated_ros_env(tmp_path)
    env["OMP_NUM_THREADS"] = "1"
    env["RLS3_MODEL_DIR"] = str(tmp_path / "no_cached_models")  # the models shipped in the repository
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        if k.startswith(("ROS_", "FASTDDS", "RMW_")) or k == "RLS3_MODEL_DIR":
            mp.setenv(k, v)
    answers = []
    try:
        with NodeProcess(["-m", "rls3_ros.ros.launcher", "query"], env, "launch_query", log_dir=tmp_path) as p:
            p.wait_for_output(r"\[spatial_query\].*model ready", timeout=120)
            spinner = BackgroundSpinner("plain_query_client")
            try:
                for k, (i, r) in enumerate(relations):
                    req = SpatialQuery.Request(query_type="where", subject=r.subject_description,
                                               reference=r.reference_description)
                    req.image = _image_msg(samples[i].image, 1000 + i)
                    resp = call_service(spinner.node, SpatialQuery, "/spatial_query/query", req, timeout=30)
                    assert resp.success, (r.caption, resp.message)
                    assert resp.header.stamp.sec == 1000 + i
                    answers.append(list(resp.terms))
            finally:
                spinner.close()
            log = p.output()
    finally:
        mp.undo()
    assert "model ready: model='grounded:serving'" in log, log[-2000:]

    truth = [list(r.terms) for _, r in relations]
    exact, per = _score(list(zip(truth, answers)))
    weak = load_model("grounded")
    weak_exact, weak_per = _score([(t, answer_query(weak, samples[i].image, QueryRequest(
        "where", r.subject_description, r.reference_description)).terms) for t, (i, r) in zip(truth, relations)])
    summary = (f"serving node: exact {exact:.2f} over {len(truth)} relations, per term "
               + ", ".join(f"{t} {h}/{n}" for t, (h, n) in sorted(per.items()))
               + f"; weak base: exact {weak_exact:.2f}, per term "
               + ", ".join(f"{t} {h}/{n}" for t, (h, n) in sorted(weak_per.items())))
    print(summary)

    stated = json.loads(STATED.read_text())["models"]["grounded:serving"]
    assert abs(exact - stated["exact"]) <= 0.2, summary
    assert exact >= weak_exact + 0.15, summary
    for group in (T.DEPTH_TERMS, T.VERTICAL_TERMS):  # the weak base answers none of these right
        hits = sum(per.get(t, (0, 0))[0] for t in group)
        n = sum(per.get(t, (0, 0))[1] for t in group)
        assert n >= 10 and hits / n >= 0.3, summary

    # the node serves exactly the serving model
    serving = load_model("grounded:serving")
    local = [answer_query(serving, samples[i].image, QueryRequest("where", r.subject_description,
                                                                   r.reference_description)).terms
             for i, r in relations]
    assert answers == local
