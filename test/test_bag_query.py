"""Query on a replayed camera stream: a robot bag from another rosbag2 writer (bgr8 frames,
another distro's typestore) is replayed with a remap into the spatial_query node, which
answers about the frame at a given stamp and about the latest frame exactly as it answers
for the same image sent in the request. Model: the tiny real model of ``vlm_test_model``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from ros_harness import NodeProcess

import vlm_test_model as tm
from rls3_ros.bags.images import iter_images

pytestmark = pytest.mark.timeout(120)

TEST_DIR = Path(__file__).resolve().parent
MODEL = "py:vlm_test_model:load"


def write_robot_bag(path: Path, n: int = 5):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    Image, Header, Time = (store.types[k] for k in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    frames = []
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as w:
        conn = w.add_connection("/robot/camera/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for i in range(n):
            # red moves from left of blue to right of it
            rgb = tm.make_image({"red square": (10 + 11 * i, 32), "blue square": (32, 20 + 6 * i)}, 64)
            t = 1_600_000_000_000_000_000 + i * 100_000_000
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            msg = Image(header=Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="robot_camera"), height=64, width=64,
                        encoding="bgr8", is_bigendian=0, step=64 * 3, data=bgr.reshape(-1))
            w.write(conn, t, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
            frames.append((t, rgb))
    return frames


def test_query_node_answers_on_a_replayed_robot_bag(tmp_path, ros_env, rclpy_node):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from rls3_ros.ros.client import SpatialQueryClient
    from rls3_ros.ros.conversions import stamp_to_ns

    frames = write_robot_bag(tmp_path / "robot")
    assert [np.array_equal(f.rgb, rgb) for f, (_t, rgb) in zip(iter_images(tmp_path / "robot"), frames)] == [True] * len(frames)
    env = dict(ros_env, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(TEST_DIR), str(TEST_DIR.parent), ros_env.get("PYTHONPATH", "")]))
    query = NodeProcess(["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", f"model:={MODEL}", "-p", "image_topic:=/image_raw",
                         "-p", "image_qos:=sensor_data", "-p", "frame_tolerance:=0.01"], env, "spatial_query")
    with query:
        query.wait_for_output("model ready", 90)
        client = SpatialQueryClient(rclpy_node)
        assert client.wait_for_service(20)
        replay = NodeProcess(["-m", "rls3_ros.ros.replayer", str(tmp_path / "robot"), "--remap", "/robot/camera/image_raw:=/image_raw",
                              "--rate", "5", "--wait-for-subscribers", "20"], env, "replayer")
        with replay:
            assert replay.wait(60) == 0, replay.output()
        assert "reliability=reliable" in replay.output()

        def header(t):
            return Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9))

        for k in (1, 3):
            t, rgb = frames[k]
            by_stamp = client.where_is("red square", "blue square", header=header(t + 2_000_000), timeout=20)
            direct = client.where_is("red square", "blue square", image=rgb, timeout=20)
            assert by_stamp.success and direct.success, (by_stamp.message, direct.message)
            assert stamp_to_ns(by_stamp.header.stamp) == t and by_stamp.header.frame_id == "robot_camera"  # the replayed header
            assert by_stamp.terms == direct.terms
            assert by_stamp.probabilities == pytest.approx(direct.probabilities, abs=1e-6)
        latest = client.where_is("red square", "blue square", timeout=20)
        assert latest.success and stamp_to_ns(latest.header.stamp) == frames[-1][0]
        miss = client.where_is("red square", "blue square", header=header(frames[0][0] - 10**9), timeout=20)
        assert not miss.success and "no frame" in miss.message
