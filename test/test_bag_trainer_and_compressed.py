"""Train from a bag and query a compressed camera stream, in real processes over loopback DDS.

(a) ``vlm_trainer`` with ``bag:=...`` starts with the bag's valid, captioned samples in its
    bounded buffer and a FineTune goal trains on them (``samples_used`` = the bag's count);
    live samples join them in the same bounded buffer.
(b) an unusable bag (missing, corrupt, no such topic, no captioned sample, ``bag_topic``
    without ``bag``) stops ``vlm_trainer`` at start with one line and exit code 2, no traceback,
    before the model is loaded; a bag larger than ``buffer_size`` keeps its newest samples.
(c) a bag with a sensor_msgs/CompressedImage topic written by the rosbags writer (not ours) is
    replayed with ``rls3 replay``; ``spatial_query`` with ``image_transport:=compressed``
    answers about the frame at a stamp and the latest frame exactly as for the decoded image
    sent in the request, with the replayed header; a corrupt frame gets success=false and a
    reason, and the node stays up.
Model: the tiny real torch/peft model of ``vlm_test_model``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_harness import NodeProcess, poll_until, spin_until_future, startup_failure_problems

import vlm_test_model as tm
from rls3_ros.bags.dataset_export import export_samples_to_bag

pytestmark = pytest.mark.timeout(180)

TEST_DIR = Path(__file__).resolve().parent
REPO = TEST_DIR.parent
MODEL = "py:vlm_test_model:load"


def _node_env(ros_env: dict) -> dict:
    env = dict(ros_env)
    env["OMP_NUM_THREADS"] = "1"  # 2 shared cores: one torch thread per node process
    env["PYTHONPATH"] = os.pathsep.join([str(TEST_DIR), str(REPO), ros_env.get("PYTHONPATH", "")]).strip(os.pathsep)
    return env


def write_sample_bag(path: Path):
    """A bag of 12 valid captioned samples, 2 invalid ones and 1 valid one without relations
    (the last two kinds must not reach the buffer). Returns the captioned samples, in order."""
    captioned = [s for s in tm.make_samples(16, seed=5) if s.relations][:12]
    assert len(captioned) == 12
    extra = [dataclasses.replace(tm.make_samples(1, seed=9)[0], sample_id="invalid-a", valid=False, invalid_reason="overlap"),
             dataclasses.replace(tm.make_samples(1, seed=10)[0], sample_id="invalid-b", valid=False, invalid_reason="occluded"),
             dataclasses.replace(tm.make_samples(1, seed=11)[0], sample_id="uncaptioned", relations=[])]
    mixed = captioned[:4] + extra[:1] + captioned[4:8] + extra[1:] + captioned[8:]
    assert export_samples_to_bag(mixed, path) == 15
    return captioned


def _action_client(node, action: str):
    from rls3_ros.ros.rosutil import SpinSafeActionClient
    from rls3_msgs.action import FineTune

    ac = SpinSafeActionClient(node, FineTune, action)
    assert ac.wait_for_server(timeout_sec=30), f"no action server {action}"
    return ac


def _fine_tune(ac, iteration: int, steps: int = 5):
    from rls3_msgs.action import FineTune

    handle = spin_until_future(ac.send_goal_async(FineTune.Goal(iteration=iteration, steps=steps, use_buffer=True)), 30,
                               "goal acceptance")
    assert handle.accepted
    return spin_until_future(handle.get_result_async(), 60, "fine-tune result").result


# -- (a) vlm_trainer trains on a bag's samples ----------------------------------------------

def test_trainer_fills_its_buffer_from_a_bag_and_fine_tunes_on_it(tmp_path, ros_env, rclpy_node):
    from rls3_msgs.msg import Sample as SampleMsg

    from rls3_ros.bags.sample_reader import read_samples
    from rls3_ros.ros.conversions import sample_to_msg

    bag = tmp_path / "samples_bag"
    captioned = write_sample_bag(bag)
    assert len(read_samples(bag)) == 15  # the bag holds all of them; the node must filter
    env = _node_env(ros_env)
    trainer = NodeProcess(["-m", "rls3_ros.ros.nodes.vlm_trainer", "--ros-args", "-p", f"model:={MODEL}", "-p", f"bag:={bag}",
                           "-p", "default_steps:=5", "-p", "batch_size:=4", "-p", "train_instance:=copy",
                           "-p", "buffer_size:=14", "-p", f"adapter_dir:={tmp_path / 'adapters'}"], env, "vlm_trainer",
                          log_dir=tmp_path)
    with trainer:
        trainer.wait_for_output(r"vlm_trainer ready: .* buffered=12", 90)
        out = trainer.output()
        assert f"loaded 12 captioned samples from bag {str(bag)!r} (every rls3_msgs/Sample topic)" in out, out[-2000:]
        assert "1 without relations skipped" in out and "dropped" not in out

        # a goal trains on exactly the bag's captioned samples (nothing live was published)
        ac = _action_client(rclpy_node, "/vlm_trainer/fine_tune")
        res = _fine_tune(ac, 1)
        assert res.success, res.message
        assert res.samples_used == len(captioned) == 12
        assert Path(res.adapter_path, "adapter_config.json").is_file()
        bag_terms = {t for s in captioned for r in s.relations for t in r.terms}
        assert res.term_names and set(res.term_names) <= bag_terms

        # live samples join the bag's in the same bounded buffer: 12 + 4 > 14, the two oldest go
        pub = rclpy_node.create_publisher(SampleMsg, "samples", 100)
        poll_until(lambda: pub.get_subscription_count() > 0, 20, "trainer sample subscription")
        live = [s for s in tm.make_samples(8, seed=21) if s.relations][:4]
        for s in live:
            pub.publish(sample_to_msg(s))
        it = iter(range(2, 1000))
        res2 = poll_until(lambda: (lambda r: r if "buffer full" in trainer.output() and r.samples_used == 14 else None)(
            _fine_tune(ac, next(it))), 60, "a fine-tune on 10 bag + 4 live samples", interval=0.2)
        assert res2.success, res2.message
        trainer.wait_for_output(r"sample buffer full \(14\): dropping the oldest", 5)
        assert trainer.alive()
        ac.destroy()


# -- (b) unusable bags stop the trainer with one line --------------------------------------

def _run_trainer(args, env, timeout=120.0):
    p = subprocess.run([sys.executable, "-m", "rls3_ros.ros.nodes.vlm_trainer", "--ros-args", "-p", f"model:={MODEL}", *args],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def test_trainer_with_a_missing_or_corrupt_bag_exits_2_with_one_line(tmp_path, ros_env):
    good = tmp_path / "good_bag"
    export_samples_to_bag([s for s in tm.make_samples(3, seed=1) if s.relations], good)
    corrupt = tmp_path / "corrupt.mcap"
    corrupt.write_bytes(b"\x89MCAP0\r\n" + os.urandom(200))  # MCAP magic, then garbage
    empty = tmp_path / "uncaptioned_bag"
    export_samples_to_bag([dataclasses.replace(s, relations=[]) for s in tm.make_samples(2, seed=2)], empty)
    big = tmp_path / "big_bag"
    write_sample_bag(big)
    cases = [
        (["-p", f"bag:={tmp_path / 'no_such_bag'}"], f"cannot read samples from bag '{tmp_path / 'no_such_bag'}': no bag at"),
        (["-p", f"bag:={corrupt}"], "cannot open (truncated, corrupted or not a rosbag2 bag?)"),
        (["-p", f"bag:={good}", "-p", "bag_topic:=/not/recorded"], "has no topic /not/recorded (it has /rls3/samples)"),
        (["-p", f"bag:={empty}"], "holds no valid captioned samples (2 valid without relations)"),
        (["-p", "bag_topic:=/rls3/samples"], "bag_topic is set but bag is empty"),
        # the bag is read (bounded by buffer_size) before the model: a missing model after it is one line too
        (["-p", f"bag:={big}", "-p", "buffer_size:=5", "-p", f"model:=embedded:{tmp_path / 'no_model'}"], "cannot load model"),
    ]
    env = _node_env(ros_env)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda c: _run_trainer(c[0], env), cases))
    problems = []
    for (args, expected), (code, out) in zip(cases, results):
        if code != 2:
            problems.append(f"{args}: exit {code}, expected 2:\n{out[-1500:]}")
        problems += startup_failure_problems(str(args), code, out, expected)
        if "vlm_trainer ready" in out or "model 'py:" in out:
            problems.append(f"{args}: the model was loaded before the bag was checked:\n{out[-1500:]}")
    out = results[-1][1]
    assert (f"loaded 5 captioned samples from bag {str(big)!r} (every rls3_msgs/Sample topic)" in out
            and "1 without relations skipped; 7 oldest dropped (buffer_size 5)" in out), out[-1500:]
    assert out.index("loaded 5 captioned samples") < out.index("startup failed")
    assert not problems, "\n".join(problems)


# -- (c) spatial_query on a replayed CompressedImage stream ---------------------------------

T0 = 1_700_000_000_000_000_000
COMPRESSED_TOPIC = "/robot/camera/image_raw/compressed"


def write_compressed_bag(path: Path):
    """An MCAP bag written by the rosbags writer (Humble typestore): png, jpeg and png frames,
    a corrupt frame, then a last png frame. Returns [(stamp_ns, format, data bytes)]."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    CImg, Header, Time = (store.types[k] for k in ("sensor_msgs/msg/CompressedImage", "std_msgs/msg/Header",
                                                   "builtin_interfaces/msg/Time"))
    frames = []
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection(COMPRESSED_TOPIC, "sensor_msgs/msg/CompressedImage", typestore=store)
        for i in range(5):
            rgb = tm.make_image({"red square": (10 + 11 * i, 40 - 5 * i), "blue square": (32, 30)}, 64)
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            if i == 3:
                fmt, data = "png", b"\x89PNG\r\n\x1a\n" + b"\x00corrupt" * 8  # a png signature, then garbage
            elif i == 1:
                fmt, data = "jpeg", cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
            else:
                fmt, data = "bgr8; png compressed bgr8", cv2.imencode(".png", bgr)[1].tobytes()
            t = T0 + i * 100_000_000
            msg = CImg(header=Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="robot_camera_optical"),
                       format=fmt, data=np.frombuffer(data, np.uint8))
            w.write(conn, t, store.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
            frames.append((t, fmt, data, rgb))
    return frames


def test_query_node_answers_on_a_replayed_compressed_stream(tmp_path, ros_env, rclpy_node):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from rls3_ros.bags.bagio import BagReader
    from rls3_ros.ros.client import SpatialQueryClient
    from rls3_ros.ros.conversions import stamp_to_ns

    bag = tmp_path / "compressed_bag"
    frames = write_compressed_bag(bag)
    with BagReader(bag) as b:
        assert b.topics == {COMPRESSED_TOPIC: "sensor_msgs/msg/CompressedImage"}
    env = _node_env(ros_env)
    query = NodeProcess(["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", f"model:={MODEL}",
                         "-p", "image_transport:=compressed", "-p", "image_topic:=/camera/image_raw/compressed",
                         "-p", "image_qos:=reliable", "-p", "frame_tolerance:=0.01"], env, "spatial_query", log_dir=tmp_path)
    with query:
        query.wait_for_output("model ready", 90)
        assert "(compressed, reliable)" in query.output()
        client = SpatialQueryClient(rclpy_node)
        assert client.wait_for_service(20)
        replay = NodeProcess(["-m", "rls3_ros.cli", "replay", str(bag), "--remap", f"{COMPRESSED_TOPIC}:=/camera/image_raw/compressed",
                              "--rate", "5", "--wait-for-subscribers", "20"], env, "replay", log_dir=tmp_path)
        with replay:
            assert replay.wait(60) == 0, replay.output()

        def header(t):
            return Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9))

        # the latest frame (the last png), then frames at stamps (png and jpeg)
        t_last = frames[-1][0]
        latest = poll_until(lambda: (lambda a: a if a.success and stamp_to_ns(a.header.stamp) == t_last else None)(
            client.where_is("red square", "blue square", timeout=20)), 20, "an answer on the latest replayed frame")
        assert latest.header.frame_id == "robot_camera_optical"
        for k in (0, 1, 2, 4):
            t, fmt, data, rgb = frames[k]
            decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            if fmt != "jpeg":
                assert np.array_equal(decoded, rgb)  # png is lossless
            by_stamp = client.where_is("red square", "blue square", header=header(t + 3_000_000), timeout=20)
            direct = client.where_is("red square", "blue square", image=decoded, timeout=20)
            assert by_stamp.success and direct.success, (k, by_stamp.message, direct.message)
            assert stamp_to_ns(by_stamp.header.stamp) == t and by_stamp.header.frame_id == "robot_camera_optical"
            assert by_stamp.terms == direct.terms
            assert by_stamp.probabilities == pytest.approx(direct.probabilities, abs=1e-6)
            if k == 4:
                assert latest.probabilities == pytest.approx(direct.probabilities, abs=1e-6)
        chk = client.is_related("red square", "left", "blue square", header=header(frames[0][0]), timeout=20)
        assert chk.success and stamp_to_ns(chk.header.stamp) == frames[0][0], chk.message

        # the corrupt frame: refused with a reason; the node lives on
        bad = client.where_is("red square", "blue square", header=header(frames[3][0]), timeout=20)
        assert not bad.success and "bad compressed image" in bad.message and "png" in bad.message, bad.message
        assert stamp_to_ns(bad.header.stamp) == frames[3][0]
        assert query.alive()
        again = client.where_is("red square", "blue square", header=header(frames[2][0]), timeout=20)
        assert again.success and stamp_to_ns(again.header.stamp) == frames[2][0], again.message
        assert "Traceback" not in query.output()
