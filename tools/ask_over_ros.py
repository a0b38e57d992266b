"""Ask the query server "where" over ROS with a plain rclpy client, on `rls3 captions` images (issue 27's check).

    .venv/bin/python tools/ask_over_ros.py [--n 100] [--size 224] [--seed 4040] [--out results/where_over_ros.json]

What a new user does: make a captioned dataset with ``rls3 captions`` (images + the oracle's
relations), start the ``spatial_query`` node (its defaults: the served model) in its own process on
an isolated loopback ROS domain, and ask every relation of every image as "where is <subject>
relative to <reference>?" through a plain ``rclpy`` service client (no project client class),
the image in the request and nothing else: no depth, no camera info, no scene state, as a robot
with an RGB camera only. The answered term sets are scored like ``rls3 bench where`` (exact term
set, per term, per axis), and the same questions asked of the model in this process
(``answer_query``) must give the same terms: the node adds transport, not a different answer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="captioned images (default 100)")
    p.add_argument("--size", type=int, default=224, help="image size (default 224, rls3 captions' default)")
    p.add_argument("--seed", type=int, default=4040, help="first scene seed of the dataset (default 4040)")
    p.add_argument("--out", default="", help="write the scores here as JSON (default: print only)")
    a = p.parse_args(argv)

    import rclpy
    from rls3_msgs.srv import SpatialQuery

    from rls3_ros.captions.dataset import read_dataset
    from rls3_ros.core.image_codec import numpy_to_image_msg
    from rls3_ros.ros.isolation import isolated_ros_env, ros_env_applied
    from rls3_ros.vlm.answers import QueryRequest, answer_query, load_model
    from rls3_ros.vlm.where_metric import score_answers

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ask_over_ros_") as tmp:
        ds = Path(tmp) / "captions"
        subprocess.run([sys.executable, "-m", "rls3_ros.cli", "captions", "--n", str(a.n), "--out", str(ds),
                        "--size", str(a.size), "--seed", str(a.seed), "--quiet"], check=True, cwd=ROOT)
        samples = read_dataset(ds)
        env = isolated_ros_env(Path(tmp))
        log = open(Path(tmp) / "spatial_query.log", "w")
        node_proc = subprocess.Popen([sys.executable, "-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args",
                                      "-p", "torch_threads:=1"], env=env, stdout=log, stderr=subprocess.STDOUT)
        pairs, disagree = [], 0
        model = load_model("grounded:serving")
        try:
            with ros_env_applied(env):
                ctx = rclpy.Context()
                rclpy.init(context=ctx)
                node = rclpy.create_node("ask_over_ros", context=ctx)
                cli = node.create_client(SpatialQuery, "/spatial_query/query")
                ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
                ex.add_node(node)

                def call(req):
                    fut = cli.call_async(req)
                    ex.spin_until_future_complete(fut, timeout_sec=60)
                    if not fut.done():
                        raise RuntimeError("no answer within 60 s")
                    return fut.result()

                deadline = time.monotonic() + 120
                while not cli.wait_for_service(timeout_sec=1.0):
                    if node_proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("spatial_query did not come up: " + (Path(tmp) / "spatial_query.log").read_text()[-2000:])
                for s in samples:
                    for r in s.relations:
                        req = SpatialQuery.Request(query_type="where", subject=r.subject_description,
                                                   reference=r.reference_description,
                                                   image=numpy_to_image_msg(s.image, "rgb8"))
                        resp = call(req)
                        while not resp.success and ("not active" in resp.message or "not ready" in resp.message) \
                                and time.monotonic() < deadline:
                            resp = call(req)  # the node is still configuring its model
                        if not resp.success:
                            raise RuntimeError(f"{s.sample_id}: {resp.message}")
                        direct = answer_query(model, s.image, QueryRequest("where", r.subject_description,
                                                                           r.reference_description))
                        disagree += int(list(direct.terms) != list(resp.terms))
                        pairs.append((list(r.terms), list(resp.terms)))
                node.destroy_node()
                rclpy.shutdown(context=ctx)
        finally:
            node_proc.terminate()
            node_proc.wait(timeout=30)
            log.close()
    sc = score_answers(pairs)
    res = {"command": "python tools/ask_over_ros.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "images": len(samples), "size": a.size, "dataset_seed": a.seed, "exact": sc["exact"], "n": sc["n"],
           "per_term": sc["per_term"], "per_axis": sc["per_axis"], "node_vs_direct_disagreements": disagree,
           "inputs": "image only (no depth, camera info or scene state): the text head's answers",
           "seconds": round(time.monotonic() - t0, 1), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(f"where over ROS, {res['images']} rls3 captions images at {a.size} px: exact {sc['exact']:.3f} "
          f"(n={sc['n']}); node vs direct call: {disagree} different answers; per term "
          + ", ".join(f"{t} {d['accuracy']:.2f}" for t, d in sc["per_term"].items()))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {a.out}")
    return 0 if disagree == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
