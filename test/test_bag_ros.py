"""Record and replay across real processes over loopback DDS.

publisher process -> `rls3 record` process -> bag on disk -> `rls3 replay` process -> probe
process. The tests check behaviour (every message arrives, bytes and order as recorded, replay
paced by the bag's times rather than sent in a burst), never speed: the timing figures (publish
lateness, inter-arrival and span error) are measured by `rls3 bench bags` into
results/bags.json.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from mcap_ros2.reader import read_ros2_messages
from ros_harness import NodeProcess, poll_until

from rls3_ros.bags.bagio import BagReader
from rls3_ros.bags.convert import bagmsg_to_scene, stamp_to_ns
from rls3_ros.core.image_codec import image_msg_to_numpy
from rls3_ros.ros.stream_publisher import frame, frame_index

pytestmark = pytest.mark.timeout(120)

IMG = "sensor_msgs/msg/Image"
SCENE = "rls3_msgs/msg/SceneState"



def recorder(args, env, name="recorder"):
    return NodeProcess(["-m", "rls3_ros.ros.recorder", *args], env, name)


def publisher(prefix, count, rate, env, size=64, extra=()):
    return NodeProcess(["-m", "rls3_ros.ros.stream_publisher", "--prefix", prefix, "--count", str(count), "--rate", str(rate),
                        "--size", str(size), *extra], env, "publisher")


def probe(topics, out, count, env, timeout=60, count_topic=""):
    args = ["-m", "rls3_ros.ros.probe", "--out", str(out), "--count", str(count), "--timeout", str(timeout)]
    if count_topic:
        args += ["--count-topic", count_topic]
    for t in topics:
        args += ["--topic", t]
    return NodeProcess(args, env, "probe")


def replayer(args, env):
    return NodeProcess(["-m", "rls3_ros.ros.replayer", *args], env, "replayer")


def read_arrivals(path: Path):
    return json.loads(Path(path).read_text())["arrivals"]


def assert_paced(arrivals, bag_times, rate=1.0):
    """Replay follows the bag's clock: arrivals in bag order and spread over the bag's span (at
    least half of it; load can only delay a message, so only a late first message could shorten
    it) instead of all at once. How closely it follows is a benchmark figure, not a test."""
    arr = np.array([a[1] for a in arrivals], dtype=np.int64)
    bag = np.array(bag_times, dtype=np.int64)
    assert len(arr) == len(bag) and np.all(np.diff(arr) >= 0)
    assert (arr[-1] - arr[0]) >= 0.5 * (bag[-1] - bag[0]) / rate, (arr[-1] - arr[0], bag[-1] - bag[0])


def test_record_replay_round_trip_mcap(tmp_path, ros_env):
    """60 frames at 50 Hz (image + scene state) -> MCAP -> replay; nothing lost, bytes and timing kept."""
    n, bag = 60, tmp_path / "rt"
    with recorder(["--topics", "/rt/image_raw", "/rt/scene_state", "--out", str(bag)], ros_env) as rec:
        rec.wait_for_output(r"recording to")
        with publisher("/rt", n, 50, ros_env) as pub:
            rec.wait_for_output(r"recording /rt/scene_state \[rls3_msgs/msg/SceneState\] with QoS reliability=reliable", 30)
            pub.wait_for_output(r"STREAM DONE published=60", 60)
        assert (tmp_path / "rt.partial").exists() and not bag.exists()  # still writing: only the partial dir
        assert rec.stop() == 0, rec.output()  # SIGINT
    out = rec.output()
    assert "dropped=0" in out and "Traceback" not in out
    assert bag.is_dir() and not (tmp_path / "rt.partial").exists()
    assert sorted(p.name for p in bag.iterdir()) == ["metadata.yaml", "rt.mcap"]

    with BagReader(bag) as b:
        assert b.topic_counts() == {"/rt/image_raw": n, "/rt/scene_state": n}
        msgs = [(c.topic, t, raw) for c, t, raw in b.messages()]
        images = [b.deserialize(r, IMG) for tp, _, r in msgs if tp == "/rt/image_raw"]
        scenes = [bagmsg_to_scene(b.deserialize(r, SCENE)) for tp, _, r in msgs if tp == "/rt/scene_state"]
    assert [frame_index(image_msg_to_numpy(m)) for m in images] == list(range(n))  # none lost, in order
    assert all(np.array_equal(image_msg_to_numpy(m), frame(i, 64)) for i, m in enumerate(images))
    assert [s.seed for s in scenes] == list(range(n))
    assert [stamp_to_ns(m.header.stamp) for m in images] == [s.stamp_ns for s in scenes]  # headers kept

    # the MCAP reads with mcap-ros2-support (definitions embedded)
    other = list(read_ros2_messages(str(bag / "rt.mcap")))
    assert len(other) == 2 * n
    assert {m.schema.name for m in other} == {IMG, SCENE}
    assert [m.ros_msg.seed for m in other if m.channel.topic == "/rt/scene_state"] == list(range(n))

    # replay into a separate subscriber process
    arrivals_path = tmp_path / "arrivals.json"
    with probe([f"/rt/image_raw:{IMG}", f"/rt/scene_state:{SCENE}"], arrivals_path, 2 * n, ros_env) as pr:
        pr.wait_for_output("PROBE READY")
        with replayer([str(bag), "--wait-for-subscribers", "20"], ros_env) as rp:
            assert rp.wait(60) == 0, rp.output()
        assert pr.wait(30) == 0
    arrivals = read_arrivals(arrivals_path)
    assert len(arrivals) == 2 * n
    per_topic = {t: [a[3] for a in arrivals if a[0] == t] for t in ("/rt/image_raw", "/rt/scene_state")}
    assert per_topic["/rt/image_raw"] == [zlib.crc32(r) for tp, _, r in msgs if tp == "/rt/image_raw"]  # bytes as recorded
    assert per_topic["/rt/scene_state"] == [zlib.crc32(r) for tp, _, r in msgs if tp == "/rt/scene_state"]
    imgs_arr = [a for a in arrivals if a[0] == "/rt/image_raw"]
    assert_paced(imgs_arr, [t for tp, t, _ in msgs if tp == "/rt/image_raw"])  # bytes (header stamps) as recorded: crc above


def test_record_sqlite3_best_effort_max_messages(tmp_path, ros_env):
    """sqlite3 storage; QoS matched to a best-effort camera; stops by itself after N messages."""
    bag = tmp_path / "sq"
    with recorder(["--topics", "/be/image_raw", "--out", str(bag), "--storage", "sqlite3", "--max-messages", "40"], ros_env) as rec:
        rec.wait_for_output(r"recording to")
        with publisher("/be", 40, 40, ros_env, extra=("--no-scene", "--best-effort")):
            rec.wait_for_output(r"recording /be/image_raw \[sensor_msgs/msg/Image\] with QoS reliability=best_effort", 30)
            assert rec.wait(60) == 0, rec.output()
    assert "dropped=0" in rec.output()
    assert sorted(p.name for p in bag.iterdir()) == ["metadata.yaml", "sq.db3"]
    with BagReader(bag) as b:
        assert b.message_count == 40 and b.topics == {"/be/image_raw": IMG}
        idx = [frame_index(image_msg_to_numpy(b.deserialize(r, IMG))) for _c, _t, r in b.messages()]
        qos = b.connections[0].ext.offered_qos_profiles
    assert idx == list(range(40))
    assert qos and qos[0].reliability.name == "BEST_EFFORT"  # the publisher's QoS stored in metadata


def test_sigterm_mid_stream_leaves_a_complete_bag(tmp_path, ros_env):
    bag = tmp_path / "cut"
    with recorder(["--all", "--out", str(bag)], ros_env) as rec:
        rec.wait_for_output(r"recording to")
        with publisher("/cut", 2000, 100, ros_env, extra=("--no-scene",)):
            rec.wait_for_output(r"recording /cut/image_raw", 30)
            poll_until(lambda: (tmp_path / "cut.partial" / "cut" / "cut.mcap").exists(), 10, "partial mcap")
            rec.proc.terminate()  # SIGTERM while messages are flowing
            assert rec.wait(30) == 0, rec.output()
    assert not (tmp_path / "cut.partial").exists()
    with BagReader(bag) as b:
        n = b.topic_counts()["/cut/image_raw"]
        idx = [frame_index(image_msg_to_numpy(b.deserialize(r, IMG))) for c, _t, r in b.messages() if c.topic == "/cut/image_raw"]
    assert n >= 1 and idx == list(range(idx[0], idx[0] + n))  # contiguous: nothing dropped in between
    assert f"/cut/image_raw: {n}" in rec.output()


def test_foreign_bags_replay_with_filter_remap_rate_offset_and_clock(tmp_path, ros_env):
    from test_bag_io import write_mcap_ros2_foreign_bag, write_rosbags_foreign_bag

    # 1) a bare .mcap from mcap-ros2-support: 3 frames 100 ms apart; skip the first, rate 2, remap
    write_mcap_ros2_foreign_bag(tmp_path / "other.mcap")
    with BagReader(tmp_path / "other.mcap") as b:
        want = [(t, raw) for c, t, raw in b.messages() if c.topic == "/cam/image_raw"]
    out = tmp_path / "a1.json"
    with probe([f"/robot/image:{IMG}", "/clock:rosgraph_msgs/msg/Clock"], out, 2, ros_env, count_topic="/robot/image") as pr:
        pr.wait_for_output("PROBE READY")
        with replayer([str(tmp_path / "other.mcap"), "--topics", "/cam/image_raw", "--remap", "/cam/image_raw:=/robot/image",
                       "--rate", "2", "--start-offset", "0.05", "--clock", "50", "--wait-for-subscribers", "20"], ros_env) as rp:
            assert rp.wait(60) == 0, rp.output()
        assert pr.wait(30) == 0
    arr = read_arrivals(out)
    imgs = [a for a in arr if a[0] == "/robot/image"]
    assert [a[3] for a in imgs] == [zlib.crc32(r) for _t, r in want[1:]]  # offset skipped frame 0
    assert imgs[1][1] > imgs[0][1]  # in bag order (how close the gap is to 100 ms / rate 2: rls3 bench bags)
    clocks = [a for a in arr if a[0] == "/clock"]
    assert len(clocks) >= 3
    secs = [int.from_bytes(bytes.fromhex(a[4])[4:8], "little") + int.from_bytes(bytes.fromhex(a[4])[8:12], "little") / 1e9 for a in clocks]
    assert all(b >= a for a, b in zip(secs, secs[1:]))  # monotonic sim time
    assert want[1][0] / 1e9 - 0.06 <= secs[0] and secs[-1] <= want[-1][0] / 1e9 + 0.06

    # 2) a sqlite3 bag of another writer with a type outside the allowed interface packages: the
    # replay refuses it in one line (no code is loaded for a name from a bag); without that
    # topic (--topics) the rest replays
    write_rosbags_foreign_bag(tmp_path / "foreign", "sqlite3")
    with replayer([str(tmp_path / "foreign"), "--rate", "4"], ros_env) as rp:
        assert rp.wait(60) == 2, rp.output()
    errors = [line for line in rp.output().splitlines() if "error:" in line]
    assert len(errors) == 1 and "/robot/detections [acme_msgs/msg/Detection]" in errors[0] and "--topics" in errors[0]
    assert "publishing" not in rp.output() and "Traceback" not in rp.output()
    out2 = tmp_path / "a2.json"
    with probe([f"/robot/camera/image_raw:{IMG}", "/robot/camera/image_raw/compressed:sensor_msgs/msg/CompressedImage"], out2, 8, ros_env) as pr:
        pr.wait_for_output("PROBE READY")
        with replayer([str(tmp_path / "foreign"), "--rate", "4", "--wait-for-subscribers", "20",
                       "--topics", "/robot/camera/image_raw", "/robot/camera/image_raw/compressed"], ros_env) as rp:
            assert rp.wait(60) == 0, rp.output()
        assert pr.wait(30) == 0
    assert len(read_arrivals(out2)) == 8


def test_late_publisher_with_incompatible_qos_is_reported(tmp_path, ros_env):
    """A silent QoS mismatch is a known complaint: the recorder names the publisher it cannot hear."""
    with recorder(["--topics", "/mix/image_raw", "--out", str(tmp_path / "mix")], ros_env) as rec:
        with publisher("/mix", 400, 20, ros_env, extra=("--no-scene",)):
            rec.wait_for_output(r"recording /mix/image_raw \[sensor_msgs/msg/Image\] with QoS reliability=reliable", 30)
            with publisher("/mix", 400, 20, ros_env, extra=("--no-scene", "--best-effort", "--wait-subscribers", "0")):
                rec.wait_for_output(r"QoS MISMATCH on /mix/image_raw: new publisher /rls3_stream_publisher: it offers best_effort", 30)
        assert rec.stop() == 0
    with BagReader(tmp_path / "mix") as b:
        assert b.topic_counts()["/mix/image_raw"] >= 1


def test_latched_topic_is_recorded_late_and_replayed_latched(tmp_path, ros_env, rclpy_node):
    """The trainer's /adapter announcement is transient-local: a recorder started after it was
    published still gets it, and replay offers it transient-local again."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rls3_msgs.msg import AdapterInfo

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = rclpy_node.create_publisher(AdapterInfo, "/latched/adapter", latched)
    pub.publish(AdapterInfo(path="/tmp/adapters/it3", iteration=3, test_accuracy=0.75))
    bag = tmp_path / "latched"
    with recorder(["--topics", "/latched/adapter", "--out", str(bag), "--max-messages", "1"], ros_env) as rec:
        rec.wait_for_output(r"recording /latched/adapter \[rls3_msgs/msg/AdapterInfo\] with QoS reliability=reliable durability=transient_local", 30)
        assert rec.wait(30) == 0, rec.output()
    with BagReader(bag) as b:
        (c, _t, raw), = list(b.messages())
        m = b.deserialize(raw, c.msgtype)
        assert (m.path, m.iteration) == ("/tmp/adapters/it3", 3)
        assert c.ext.offered_qos_profiles[0].durability.name == "TRANSIENT_LOCAL"
    with replayer([str(bag)], ros_env) as rp:
        assert rp.wait(30) == 0
    assert "publishing /latched/adapter [rls3_msgs/msg/AdapterInfo] with QoS reliability=reliable durability=transient_local" in rp.output()


def test_replay_loops_until_stopped_and_record_stops_after_duration(tmp_path, ros_env):
    from test_bag_io import make_samples

    from rls3_ros.bags.dataset_export import export_samples_to_bag

    export_samples_to_bag(make_samples(3), tmp_path / "ds")  # 3 samples, 16.7 ms apart
    out = tmp_path / "loop.json"
    with recorder(["--topics", "/nobody", "--out", str(tmp_path / "empty"), "--duration", "1.5"], ros_env) as rec:
        with probe(["/rls3/samples:rls3_msgs/msg/Sample"], out, 8, ros_env) as pr:
            pr.wait_for_output("PROBE READY")
            with replayer([str(tmp_path / "ds"), "--loop", "--rate", "0.5", "--wait-for-subscribers", "20"], ros_env) as rp:
                assert pr.wait(30) == 0
                assert rp.alive()  # still looping
                assert rp.stop() == 0  # SIGINT: clean exit
            assert "replay interrupted" in rp.output()
        assert rec.wait(30) == 0, rec.output()  # --duration ended it
    ids = [bytes.fromhex(a[4]) for a in read_arrivals(out)]
    assert len(ids) == 8 and ids[0] == ids[3] == ids[6]  # the bag started over
    with BagReader(tmp_path / "empty") as b:  # nothing published: an empty but complete bag
        assert b.message_count == 0


def test_rls3_replay_remap_uses_the_current_ros_syntax(tmp_path, ros_env):
    """`rls3 replay --remap` on a bag written by the rosbags library: the frames arrive under the new
    name and rcl prints no deprecated-remap-syntax warning (our options never reach rcl as argv)."""
    from test_bag_io import write_rosbags_foreign_bag

    write_rosbags_foreign_bag(tmp_path / "foreign", "mcap")
    out = tmp_path / "remapped.json"
    with probe([f"/camera/image_raw:{IMG}"], out, 4, ros_env) as pr:
        pr.wait_for_output("PROBE READY")
        with NodeProcess(["-m", "rls3_ros.cli", "replay", str(tmp_path / "foreign"), "--topics", "/robot/camera/image_raw",
                          "--remap", "/robot/camera/image_raw:=/camera/image_raw", "--rate", "4",
                          "--wait-for-subscribers", "20"], ros_env, "replayer") as rp:
            assert rp.wait(60) == 0, rp.output()
        assert pr.wait(30) == 0
    log = rp.output()
    assert "publishing /robot/camera/image_raw as /camera/image_raw" in log, log
    assert "deprecated" not in log.lower(), log
    assert len(read_arrivals(out)) == 4
