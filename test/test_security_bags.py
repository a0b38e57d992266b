"""Bags and the graph are untrusted input (issue 26, item 6 and the recorder parts of 2 and 5).

Real bags on disk, `rls3` in real processes over loopback DDS:
- a bag's message type name never selects a module to import (`this/msg/Zen` printed the Zen
  of Python), its payload is checked against its declared type before anything is published,
  and a topic is not replayed onto a project topic of another type;
- `rls3 record` survives a topic with a reliable and a best-effort publisher (a logging call
  site used at two severities raised ValueError) and records both;
- `rls3 record` hitting a file size limit (EFBIG) keeps what it wrote, readable.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_harness import NodeProcess, poll_until
from mcap.records import Chunk as McapChunk
from mcap.records import Message as McapMessage
from mcap.stream_reader import StreamReader, breakup_chunk
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from rls3_ros.bags.bagio import BagReader
from rls3_ros.core.image_codec import image_msg_to_numpy
from rls3_ros.ros.stream_publisher import frame_index

pytestmark = pytest.mark.timeout(180)

PROGRAMS = Path(__file__).resolve().parent / "programs"
ZEN = "Beautiful is better than ugly"
IMG = "sensor_msgs/msg/Image"


def _string_cdr(text: str) -> bytes:
    store = get_typestore(Stores.ROS2_KILTED)
    return bytes(store.serialize_cdr(store.types["std_msgs/msg/String"](data=text), "std_msgs/msg/String"))


def write_typed_bag(path: Path, topic: str, msgtype: str, payloads, definition: str = "string data\n", storage: str = "mcap") -> None:
    """A rosbag2 bag with one topic declared as ``msgtype`` (defined by ``definition`` when the
    store does not know it) holding ``payloads`` (raw CDR) 10 ms apart."""
    store = get_typestore(Stores.ROS2_KILTED)
    if msgtype not in store.fielddefs:
        store.register(get_types_from_msg(definition, msgtype))
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as w:
        c = w.add_connection(topic, msgtype, typestore=store)
        for i, raw in enumerate(payloads):
            w.write(c, 1_700_000_000_000_000_000 + i * 10_000_000, raw)


def rls3(args, env, timeout=120):
    """`rls3 ARGS` in a real process: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "rls3_ros.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def assert_one_line_refusal(code: int, out: str, err: str, command: str, *needles: str) -> str:
    """Exit 2, no traceback, exactly one error line (warnings about the bag may come before it)."""
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"rls3 {command}: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ------------------------------------------------------------------ type names select no code
@pytest.mark.parametrize("msgtype", ["this/msg/Zen", "os/msg/System"])
def test_replay_refuses_a_type_outside_the_allowed_packages_without_importing_it(tmp_path, ros_env, msgtype):
    """`import this` prints the Zen of Python (`import antigravity` would open a web browser): a
    name from a bag must not select a module. One line, exit 2, nothing printed by an import."""
    bag = tmp_path / "zen"
    write_typed_bag(bag, "/chatter", msgtype, [_string_cdr("hi")] * 3)
    code, out, err = rls3(["replay", str(bag)], ros_env)
    assert_one_line_refusal(code, out, err, "replay", "/chatter", msgtype, "not in an allowed interface package")
    assert ZEN not in out + err and "Zen of Python" not in out + err
    assert "publishing" not in out + err
    # the same bag with that topic as another type's definition is still inspectable
    code, out, err = rls3(["bag", "info", str(bag)], ros_env)
    assert code == 0 and ZEN not in out + err and f"[{msgtype}]" in out


def test_replay_refuses_names_that_are_not_ros_type_names(tmp_path, ros_env):
    """`os/msg/system` (lower-case type) and the like are not ROS 2 type names at all: an MCAP's
    schema name is free text, so the bag is written by the mcap library itself."""
    from mcap.writer import Writer as McapWriter

    path = tmp_path / "odd.mcap"
    with open(path, "wb") as f:
        w = McapWriter(f)
        w.start(profile="ros2", library="test")
        for i, name in enumerate(["os/msg/system", "../../etc/msg/Passwd", "std_msgs/msg/String\x1b[2J"]):
            schema = w.register_schema(name=name, encoding="ros2msg", data=b"string data\n")
            ch = w.register_channel(topic=f"/odd{i}", message_encoding="cdr", schema_id=schema)
            w.add_message(channel_id=ch, log_time=1000 + i, publish_time=1000 + i, data=_string_cdr("x"))
        w.finish()
    code, out, err = rls3(["replay", str(path)], ros_env)
    line = assert_one_line_refusal(code, out, err, "replay", "'os/msg/system' is not a ROS 2 message type name")
    assert "\x1b" not in line  # a control character from the file is escaped, not sent to the terminal
    code, out, err = rls3(["bag", "info", str(path)], ros_env)
    assert "\x1b" not in out + err and "Traceback" not in out + err


# ------------------------------------------------------------------ payload vs declared type
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_mismatched_payload_is_refused_by_bag_info_and_replay(tmp_path, ros_env, storage):
    """A bag declaring sensor_msgs/Image on the camera topic whose messages are std_msgs/String."""
    bag = tmp_path / "liar"
    write_typed_bag(bag, "/camera/image_raw", IMG, [_string_cdr(f"not an image {i}") for i in range(3)], storage=storage)
    code, out, err = rls3(["bag", "info", str(bag)], ros_env)
    assert_one_line_refusal(code, out, err, "bag", "/camera/image_raw", "does not decode as sensor_msgs/msg/Image")
    assert "NOT DECODABLE" in out  # the table says which topic

    out_path = tmp_path / "arrivals.json"
    with NodeProcess(["-m", "rls3_ros.ros.probe", "--out", str(out_path), "--count", "1", "--timeout", "60",
                      "--topic", f"/camera/image_raw:{IMG}"], ros_env, "probe") as pr:
        pr.wait_for_output("PROBE READY")
        code, out, err = rls3(["replay", str(bag), "--wait-for-subscribers", "5"], ros_env)
        assert_one_line_refusal(code, out, err, "replay", "/camera/image_raw", "does not decode as sensor_msgs/msg/Image",
                                "nothing published")
        assert "publishing" not in err
    assert "received=0" in pr.output()


def test_replay_withholds_a_later_message_that_does_not_decode(tmp_path, ros_env):
    """First message fine, a later one is not an Image: the good ones are published, the bad one
    never is, and the run ends with exit 2 naming the count."""
    store = get_typestore(Stores.ROS2_KILTED)
    Img, Hdr, Time = (store.types[n] for n in (IMG, "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    good = [bytes(store.serialize_cdr(Img(header=Hdr(stamp=Time(sec=i, nanosec=0), frame_id="cam"), height=2, width=2, encoding="rgb8",
                                          is_bigendian=0, step=6, data=np.full(12, i, np.uint8)), IMG)) for i in range(3)]
    bag = tmp_path / "mixed"
    write_typed_bag(bag, "/camera/image_raw", IMG, [good[0], good[1], _string_cdr("a string in the middle"), good[2]])
    out_path = tmp_path / "arrivals.json"
    with NodeProcess(["-m", "rls3_ros.ros.probe", "--out", str(out_path), "--count", "3", "--timeout", "60",
                      "--topic", f"/camera/image_raw:{IMG}"], ros_env, "probe") as pr:
        pr.wait_for_output("PROBE READY")
        code, out, err = rls3(["replay", str(bag), "--wait-for-subscribers", "20"], ros_env)
        assert pr.wait(30) == 0
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "withheld 1 message(s)" in errors[0], err
    assert "replayed 3 messages" in out
    import json
    import zlib

    assert [a[3] for a in json.loads(out_path.read_text())["arrivals"]] == [zlib.crc32(g) for g in good]


# ------------------------------------------------------------------ topic types
def test_wrong_type_remapped_onto_the_camera_topic_is_refused(tmp_path, ros_env):
    bag = tmp_path / "chatter"
    write_typed_bag(bag, "/chatter", "std_msgs/msg/String", [_string_cdr("hello")] * 3)
    for target in ("/camera/image_raw", "/robot/camera_info", "/scene_state"):
        code, out, err = rls3(["replay", str(bag), "--remap", f"/chatter:={target}"], ros_env)
        assert_one_line_refusal(code, out, err, "replay", target, "remapped from /chatter", "not std_msgs/msg/String")
        assert "publishing" not in err
    # an Image topic onto the camera topic is what remapping is for
    img_bag = tmp_path / "img"
    store = get_typestore(Stores.ROS2_KILTED)
    raw = bytes(store.serialize_cdr(store.types[IMG](header=store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c"), height=1, width=1, encoding="rgb8",
        is_bigendian=0, step=3, data=np.zeros(3, np.uint8)), IMG))
    write_typed_bag(img_bag, "/robot/front/image", IMG, [raw] * 2)
    code, out, err = rls3(["replay", str(img_bag), "--remap", "/robot/front/image:=/camera/image_raw", "--rate", "10"], ros_env)
    assert code == 0, err
    assert "publishing /robot/front/image as /camera/image_raw" in err


def test_replay_onto_a_topic_the_graph_uses_with_another_type_is_refused(tmp_path, ros_env):
    """A topic name the project has no rule for: the graph tells. A probe subscribes
    /robot/frames as sensor_msgs/Image; a String topic remapped there would never be received."""
    bag = tmp_path / "chatter"
    write_typed_bag(bag, "/chatter", "std_msgs/msg/String", [_string_cdr("hello")] * 3)
    with NodeProcess(["-m", "rls3_ros.ros.probe", "--out", str(tmp_path / "a.json"), "--count", "1", "--timeout", "60",
                      "--topic", f"/robot/frames:{IMG}"], ros_env, "probe") as pr:
        pr.wait_for_output("PROBE READY")
        code, out, err = rls3(["replay", str(bag), "--remap", "/chatter:=/robot/frames", "--wait-for-subscribers", "30"], ros_env)
    line = [x for x in err.splitlines() if "error:" in x]
    assert code == 2 and len(line) == 1 and "Traceback" not in err, err
    assert "/robot/frames is used with sensor_msgs/msg/Image on the graph, not std_msgs/msg/String" in line[0]
    assert "replaying" not in err


# ------------------------------------------------------------------ recorder
def test_record_survives_a_reliable_and_a_best_effort_publisher_on_one_topic(tmp_path, ros_env):
    """One process publishes /mix/chatter twice (reliable and best-effort) and /mix/plain: the
    recorder logs the mixed topic as a warning and the plain one as info, from what was one
    logging call site (rclpy: "Logger severity cannot be changed between calls"), and records
    the messages of both publishers (a best-effort subscription matches both)."""
    bag = tmp_path / "mixed"
    with NodeProcess([str(PROGRAMS / "mixed_qos_publisher.py"), "--topic", "/mix/chatter", "--plain", "/mix/plain",
                      "--count", "40"], ros_env, "mixed_publisher") as pub:
        pub.wait_for_output("PUBLISHERS READY")
        with NodeProcess(["-m", "rls3_ros.cli", "record", "--topics", "/mix/chatter", "/mix/plain", "--out", str(bag)],
                         ros_env, "recorder") as rec:
            rec.wait_for_output(r"recording /mix/chatter \[std_msgs/msg/String\] with QoS reliability=best_effort.*MIXED QoS", 60)
            rec.wait_for_output(r"recording /mix/plain \[std_msgs/msg/String\] with QoS reliability=reliable", 60)
            pub.wait_for_output(r"PUBLISHED 40", 60)
            assert rec.alive(), rec.output()
            assert rec.stop() == 0, rec.output()
    out = rec.output()
    assert "Traceback" not in out and "Logger severity" not in out
    store = get_typestore(Stores.ROS2_KILTED)
    with BagReader(bag) as b:
        texts = [(c.topic, store.deserialize_cdr(raw, "std_msgs/msg/String").data) for c, _t, raw in b.messages()]
    kinds = {t.split()[0] for topic, t in texts if topic == "/mix/chatter"}
    assert kinds == {"reliable", "best_effort"}, texts[:10]
    assert [t for topic, t in texts if topic == "/mix/plain"] == [f"plain {i}" for i in range(40)]  # reliable: all, in order


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_record_hitting_a_file_size_limit_keeps_a_readable_partial_bag(tmp_path, ros_env, storage):
    """RLIMIT_FSIZE in the recorder's process makes the bag's file hit EFBIG after ~3 MB of
    96x96 frames: one line, exit 2, and the frames written before it stay in a complete bag that
    rosbags opens (MCAP: the chunk being written dropped, the file cut after the last complete
    chunk, summary and metadata.yaml written in the room that left; sqlite3: its periodic
    commits, then its metadata row). Before: the whole partial bag was deleted."""
    limit = 3 * 1024 * 1024

    def file_size_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    bag = tmp_path / "full"
    with NodeProcess(["-m", "rls3_ros.cli", "record", "--topics", "/full/image_raw", "--out", str(bag), "--storage", storage],
                     ros_env, "recorder", preexec_fn=file_size_limit) as rec:
        rec.wait_for_output("recording to")
        with NodeProcess(["-m", "rls3_ros.ros.stream_publisher", "--prefix", "/full", "--count", "5000", "--rate", "40",
                          "--size", "96", "--no-scene"], ros_env, "publisher"):
            poll_until(lambda: not rec.alive(), 150, "the recorder to stop at the file size limit", interval=0.2)
    out = rec.output()
    assert rec.proc.returncode == 2, out
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in out, out
    assert "EFBIG" in errors[0] or "SQLITE_" in errors[0], errors[0]
    assert "kept the" in errors[0] and "(a complete bag)" in errors[0]  # room was left for summary and metadata.yaml
    assert not (tmp_path / "full.partial").exists() and (bag / "metadata.yaml").exists()
    files = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    assert len(files) == 1 and files[0].stat().st_size <= limit
    with Reader(files[0]) as r:  # rosbags itself, on the storage file
        n = r.message_count
        store = get_typestore(Stores.ROS2_KILTED)
        idx = [frame_index(image_msg_to_numpy(store.deserialize_cdr(raw, IMG))) for _c, _t, raw in r.messages()]
    assert n > 0 and len(idx) == n
    assert idx == list(range(idx[0], idx[0] + n))  # what was kept is contiguous
    assert f"kept the {n} message(s)" in errors[0]
    with BagReader(bag) as b:  # and the project's reader, on the directory
        assert b.topic_counts() == {"/full/image_raw": n}
    with Reader(bag) as r:  # and rosbags on the directory: metadata.yaml agrees with the data
        assert r.message_count == n and len(list(r.messages())) == n


def _chunk_starts(mcap: Path):
    data = mcap.read_bytes()
    pos, starts = 8, []
    while pos + 9 <= len(data) and data[pos] != 0x0F:  # up to DataEnd
        if data[pos] == 0x06:
            starts.append(pos)
        pos += 9 + int.from_bytes(data[pos + 1:pos + 9], "little")
    return starts


@pytest.mark.parametrize("room, complete", [(5000, True), (100, False)])
def test_bag_writer_at_a_file_size_limit_keeps_complete_chunks(tmp_path, room, complete):
    """The writer in its own process, its third 1 MB chunk hitting RLIMIT_FSIZE: the two chunks
    before it stay. With room left for the summary (5000 bytes) the bag is complete (summary and
    metadata.yaml); with 100 bytes only the DataEnd record and footer fit: a summary-less MCAP
    that readers scan. Either way rosbags reads exactly those two chunks' messages, in order."""
    program = [sys.executable, str(PROGRAMS / "bag_writer_at_limit.py")]
    full = tmp_path / "full"
    p = subprocess.run([*program, str(full), "--count", "4000"], capture_output=True, text=True, timeout=120)
    assert p.stdout.startswith("CLOSED"), p.stdout + p.stderr
    starts = _chunk_starts(full / "full.mcap")
    assert len(starts) == 4
    with open(full / "full.mcap", "rb") as f:  # messages per chunk, read by the mcap library
        per_chunk = [sum(isinstance(r, McapMessage) for r in breakup_chunk(rec))
                     for rec in StreamReader(f, emit_chunks=True).records if isinstance(rec, McapChunk)]
    with Reader(full) as r:
        times = [t for _c, t, _raw in r.messages()]
    bag = tmp_path / "cut"
    p = subprocess.run([*program, str(bag), "--count", "4000", "--limit", str(starts[2] + room)], capture_output=True, text=True,
                       timeout=120)
    assert p.stdout.startswith("FAILED") and "Traceback" not in p.stderr, p.stdout + p.stderr
    assert "EFBIG" in p.stdout and "kept the" in p.stdout
    assert ("(a complete bag)" in p.stdout) == complete, p.stdout
    assert (bag / "metadata.yaml").exists() == complete
    mcap = bag / "cut.mcap"
    assert mcap.stat().st_size <= starts[2] + room
    store = get_typestore(Stores.ROS2_KILTED)
    with Reader(mcap) as r:
        texts = [store.deserialize_cdr(raw, "std_msgs/msg/String").data for _c, _t, raw in r.messages()]
        kept_times = [t for _c, t, _raw in r.messages()]
    n = len(texts)
    assert n == per_chunk[0] + per_chunk[1]  # the two complete chunks, nothing of the third
    assert [int(t[:8]) for t in texts] == list(range(n)) and kept_times == times[:n]
    assert f"kept the {n} message(s)" in p.stdout
    with BagReader(bag) as b:
        assert b.message_count == n
