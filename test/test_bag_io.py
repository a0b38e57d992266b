"""Bags without a ROS graph: typestore, sample export/read, foreign bags, damaged bags.

Real bags on disk, written by rosbags (MCAP and sqlite3) and by mcap-ros2-support.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rls3_ros.bags.bagio import AtomicBagWriter, BagError, BagReader
from rls3_ros.bags.convert import SAMPLE_TYPE, bagmsg_to_sample, sample_to_bagmsg
from rls3_ros.bags.dataset_export import DEFAULT_TOPIC, export_samples_to_bag
from rls3_ros.bags.images import image_at, image_topics, iter_images
from rls3_ros.ros.replayer import cli_replay
from rls3_ros.bags.sample_reader import iter_samples, read_samples, sample_topics
from rls3_ros.bags.typestore import base_typestore, newest_ros2_store, rls3_msg_dir
from rls3_ros.core.scene import CameraModel, ObjectState, Sample, SceneState, SpatialRelation

REPO = Path(__file__).resolve().parents[1]


def f32(x: float) -> float:
    return float(np.float32(x))


def make_samples(n: int = 6, size: int = 48, seed: int = 0):
    """Varied captioned samples; float32 message fields hold float32-exact values."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cam = CameraModel.look_at((0.1 * i, -2.0, 1.5), (0.0, 0.0, 0.8), size, size, 55.0 + i)
        objs = [
            ObjectState(
                f"obj_{k}", ["mug", "lamp", "book"][k % 3], f"object {k} of sample {i} – «ü»",
                tuple(rng.normal(size=3)), orientation=(0.0, 0.0, float(np.sin(0.1 * k)), float(np.cos(0.1 * k))),
                size=tuple(rng.uniform(0.05, 0.5, 3)), bbox=(k, 2 * k, k + 10, 2 * k + 12),
                visible=bool(k % 2 == 0), visible_fraction=f32(rng.uniform()), active=k < 2, supported_by="table_0" if k else "",
            )
            for k in range(1 + i % 4)
        ]
        scene = SceneState(f"kitchen-{i}", "kitchen", 100 + i, cam, objs, [f"c{i}"], backend="mujoco", stamp_ns=1_700_000_000_000_000_000 + i * 16_666_667)
        rels = [
            SpatialRelation("obj_0", o.id, "a", o.description, ["left", "above"][: 1 + k % 2], f32(rng.uniform(-3, 3)), f32(rng.uniform(-1, 1)), f32(rng.uniform(0, 2)),
                            f"The a is left of {o.description}.", [f"neg {k}"])
            for k, o in enumerate(objs[1:])
        ]
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        out.append(Sample(f"run-e{i // 3}-s{i}", img, scene, rels, valid=i % 5 != 4, invalid_reason="" if i % 5 != 4 else "overlap", episode=i // 3, step=i % 3))
    return out


def assert_same_sample(a: Sample, b: Sample) -> None:
    assert a.sample_id == b.sample_id and a.valid == b.valid and a.invalid_reason == b.invalid_reason
    assert (a.episode, a.step) == (b.episode, b.step)
    assert np.array_equal(a.image, b.image) and a.image.dtype == b.image.dtype
    assert a.scene == b.scene
    assert a.relations == b.relations


# ------------------------------------------------------------------ typestore
def test_typestore_knows_kilted_and_rls3_with_ros_hashes():
    assert newest_ros2_store().value == "ros2_kilted"
    store = base_typestore()
    msg_dir = rls3_msg_dir()
    for f in sorted(msg_dir.glob("*.msg")):
        name = f"rls3_msgs/msg/{f.stem}"
        assert name in store.fielddefs
        # the hash the ROS build computed (installed .json) equals the one rosbags embeds
        js = f.with_suffix(".json")
        if js.exists():
            want = json.loads(js.read_text())["type_hashes"][0]
            assert want["type_name"] == name
            assert store.hash_rihs01(name) == want["hash_string"]
    # the standard types the project records: same hashes as the installed ROS packages
    share = Path(sys.prefix) / "share"
    for name in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
                 "rosgraph_msgs/msg/Clock", "geometry_msgs/msg/Pose", "std_msgs/msg/Header"):
        pkg, _, typ = name.split("/")
        js = share / pkg / "msg" / f"{typ}.json"
        assert js.exists(), js
        assert store.hash_rihs01(name) == json.loads(js.read_text())["type_hashes"][0]["hash_string"], name


# ------------------------------------------------------------------ samples
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_exported_samples_read_back_equal(tmp_path, storage):
    samples = make_samples(7)
    out = tmp_path / f"ds_{storage}"
    assert export_samples_to_bag(samples, out, storage=storage) == 7
    assert (out / "metadata.yaml").exists() and not (tmp_path / f"ds_{storage}.partial").exists()
    assert sample_topics(out) == [DEFAULT_TOPIC]
    back = read_samples(out)
    assert len(back) == len(samples)
    for a, b in zip(samples, back):
        assert_same_sample(a, b)
    assert [s.sample_id for s in iter_samples(out, only_valid=True)] == [s.sample_id for s in samples if s.valid]
    assert len(read_samples(out, limit=3)) == 3


def test_exported_mcap_reads_with_mcap_ros2(tmp_path):
    from mcap_ros2.reader import read_ros2_messages

    samples = make_samples(3)
    export_samples_to_bag(samples, tmp_path / "ds")
    msgs = list(read_ros2_messages(str(tmp_path / "ds" / "ds.mcap")))
    assert [m.schema.name for m in msgs] == [SAMPLE_TYPE] * 3
    assert [m.ros_msg.sample_id for m in msgs] == [s.sample_id for s in samples]
    m0 = msgs[0].ros_msg
    assert (m0.image.width, m0.image.height, m0.image.encoding) == (48, 48, "rgb8")
    assert bytes(m0.image.data) == samples[0].image.tobytes()
    assert m0.scene.objects[0].id == "obj_0"


def test_bag_samples_match_the_rclpy_node_conversions(tmp_path):
    """Bytes are interchangeable with the node layer: rclpy reads what we export and vice versa."""
    from rclpy.serialization import deserialize_message, serialize_message
    from rls3_msgs.msg import Sample as SampleMsg

    from rls3_ros.ros.conversions import msg_to_sample, sample_to_msg

    store = base_typestore()
    for s in make_samples(4, seed=3):
        ours = bytes(store.serialize_cdr(sample_to_bagmsg(store, s), SAMPLE_TYPE))
        theirs = serialize_message(sample_to_msg(s))
        # same bytes up to CDR alignment padding (rclpy leaves it uninitialised)
        assert bytes(store.serialize_cdr(store.deserialize_cdr(theirs, SAMPLE_TYPE), SAMPLE_TYPE)) == ours
        assert_same_sample(msg_to_sample(deserialize_message(ours, SampleMsg)), s)
        assert_same_sample(bagmsg_to_sample(store.deserialize_cdr(theirs, SAMPLE_TYPE)), s)


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_f32 = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(_text, min_size=1, max_size=4, unique=True), terms=st.lists(_text, max_size=3), ang=_f32, vf=_f32,
       stamp=st.integers(0, (2**31 - 1) * 10**9 + 999_999_999), h=st.integers(1, 5), w=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_converter_round_trip_property(ids, terms, ang, vf, stamp, h, w, seed):
    store = base_typestore() if not hasattr(test_converter_round_trip_property, "_store") else test_converter_round_trip_property._store
    test_converter_round_trip_property._store = store
    rng = np.random.default_rng(seed)
    cam = CameraModel((0.0, 1.0, 2.0), (0.0, 0.0, 0.0, 1.0), w, h, 10.0, 11.0, w / 2, h / 2)
    objs = [ObjectState(i, i, i, tuple(rng.normal(size=3)), bbox=(1, 2, 3, 5), visible_fraction=vf) for i in ids]
    rel = SpatialRelation(ids[0], ids[-1], "s", "r", terms, ang, -ang, abs(ang), "c", list(terms))
    s = Sample("x", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), SceneState("s", "t", 1, cam, objs, list(ids), stamp_ns=stamp), [rel])
    back = bagmsg_to_sample(store.deserialize_cdr(store.serialize_cdr(sample_to_bagmsg(store, s), SAMPLE_TYPE), SAMPLE_TYPE))
    assert_same_sample(back, s)


# ------------------------------------------------------------------ foreign bags
def _foreign_images(n=4, h=20, w=30):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def write_rosbags_foreign_bag(path: Path, storage: str = "sqlite3") -> list:
    """A bag as another rosbag2 writer makes it: padded bgr8 Image, jpeg/png CompressedImage and
    a custom type the project has never heard of (only its embedded definition)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)  # a different distro's store
    custom_def = "std_msgs/Header header\nstring label\nfloat32 score\nint32[] ids\n"
    store.register(get_types_from_msg(custom_def, "acme_msgs/msg/Detection"))
    Image, CImg = store.types["sensor_msgs/msg/Image"], store.types["sensor_msgs/msg/CompressedImage"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    Det = store.types["acme_msgs/msg/Detection"]
    imgs = _foreign_images()
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    with Writer(path, version=8, storage_plugin=plugin) as wr:
        ci = wr.add_connection("/robot/camera/image_raw", "sensor_msgs/msg/Image", typestore=store)
        cc = wr.add_connection("/robot/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage", typestore=store)
        cd = wr.add_connection("/robot/detections", "acme_msgs/msg/Detection", typestore=store)
        for i, rgb in enumerate(imgs):
            t = 1_600_000_000_000_000_000 + i * 50_000_000
            hdr = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="cam")
            bgr = rgb[..., ::-1]
            padded = np.zeros((rgb.shape[0], rgb.shape[1] * 3 + 6), np.uint8)  # step > width*3
            padded[:, : rgb.shape[1] * 3] = bgr.reshape(rgb.shape[0], -1)
            wr.write(ci, t, store.serialize_cdr(Image(header=hdr, height=rgb.shape[0], width=rgb.shape[1], encoding="bgr8",
                                                        is_bigendian=0, step=padded.shape[1], data=padded.reshape(-1)), "sensor_msgs/msg/Image"))
            ok, png = cv2.imencode(".png", bgr)
            wr.write(cc, t + 1, store.serialize_cdr(CImg(header=hdr, format="bgr8; png compressed bgr8", data=png.reshape(-1)), "sensor_msgs/msg/CompressedImage"))
            wr.write(cd, t + 2, store.serialize_cdr(Det(header=hdr, label=f"mug{i}", score=0.5 * i, ids=np.arange(i, dtype=np.int32)), "acme_msgs/msg/Detection"))
    return imgs


def write_mcap_ros2_foreign_bag(path: Path) -> list:
    """A bare .mcap written by mcap-ros2-support's writer (no metadata.yaml)."""
    from mcap_ros2.writer import Writer as McapRos2Writer

    store = base_typestore()
    yy, xx = np.mgrid[0:16, 0:24]
    imgs = [np.stack([xx * 8 + i, yy * 12, (xx + yy) * 5], axis=2).astype(np.uint8) for i in range(3)]  # smooth: jpeg-friendly
    with open(path, "wb") as f:
        w = McapRos2Writer(f)
        s_img = w.register_msgdef("sensor_msgs/msg/Image", store.generate_msgdef("sensor_msgs/msg/Image", ros_version=2)[0])
        s_cmp = w.register_msgdef("sensor_msgs/msg/CompressedImage", store.generate_msgdef("sensor_msgs/msg/CompressedImage", ros_version=2)[0])
        for i, rgb in enumerate(imgs):
            t = 1_650_000_000_000_000_000 + i * 100_000_000
            hdr = {"stamp": {"sec": t // 10**9, "nanosec": t % 10**9}, "frame_id": "camera"}
            w.write_message("/cam/image_raw", s_img, {"header": hdr, "height": rgb.shape[0], "width": rgb.shape[1], "encoding": "rgb8",
                                                      "is_bigendian": 0, "step": rgb.shape[1] * 3, "data": rgb.tobytes()}, log_time=t, publish_time=t)
            ok, jpg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
            w.write_message("/cam/image_raw/compressed", s_cmp, {"header": hdr, "format": "jpeg", "data": jpg.tobytes()}, log_time=t + 1, publish_time=t + 1)
        w.finish()
    return imgs


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_rosbags_foreign_bag_decodes_and_registers_unknown_types(tmp_path, storage):
    imgs = write_rosbags_foreign_bag(tmp_path / "foreign", storage)
    assert image_topics(tmp_path / "foreign") == ["/robot/camera/image_raw", "/robot/camera/image_raw/compressed"]
    raw = list(iter_images(tmp_path / "foreign", "/robot/camera/image_raw"))
    png = list(iter_images(tmp_path / "foreign", "/robot/camera/image_raw/compressed"))
    assert len(raw) == len(png) == len(imgs)
    for f, g, want in zip(raw, png, imgs):
        assert np.array_equal(f.rgb, want) and np.array_equal(g.rgb, want)  # bgr8 + padding, png lossless
        assert f.frame_id == "cam" and f.stamp_ns == f.bag_time_ns
    frame = image_at(tmp_path / "foreign", "/robot/camera/image_raw", raw[2].stamp_ns + 3)
    assert frame.stamp_ns == raw[2].stamp_ns and np.array_equal(frame.rgb, imgs[2])
    with BagReader(tmp_path / "foreign") as bag:
        assert bag.can_decode("acme_msgs/msg/Detection")  # only known from the bag itself
        dets = [bag.deserialize(r, c.msgtype) for c, _t, r in bag.messages(bag.connections_for(["/robot/detections"]))]
    assert [d.label for d in dets] == [f"mug{i}" for i in range(len(imgs))]
    assert [list(d.ids) for d in dets] == [list(range(i)) for i in range(len(imgs))]


def test_mcap_ros2_written_bag_decodes(tmp_path):
    imgs = write_mcap_ros2_foreign_bag(tmp_path / "other.mcap")
    raw = list(iter_images(tmp_path / "other.mcap", "/cam/image_raw"))
    jpg = list(iter_images(tmp_path / "other.mcap", "/cam/image_raw/compressed"))
    assert [np.array_equal(f.rgb, w) for f, w in zip(raw, imgs)] == [True] * len(imgs)
    for f, w in zip(jpg, imgs):  # jpeg: lossy, but close
        assert f.rgb.shape == w.shape and np.abs(f.rgb.astype(int) - w).mean() < 4
    # a directory holding only that .mcap opens too
    (tmp_path / "d").mkdir()
    shutil.copy(tmp_path / "other.mcap", tmp_path / "d" / "other.mcap")
    assert len(list(iter_images(tmp_path / "d", "/cam/image_raw"))) == len(imgs)


# ------------------------------------------------------------------ damaged bags / errors
def _damage(src: Path, dst: Path, mode: str) -> None:
    shutil.copytree(src, dst)
    f = next(p for p in dst.iterdir() if p.suffix in (".mcap", ".db3"))
    data = bytearray(f.read_bytes())
    if mode == "truncated":
        data = data[: len(data) * 2 // 3]
    elif mode == "corrupted":  # garble the storage's structure near the start
        for k in range(8, 8 + 64):
            data[k] ^= 0xFF
    f.write_bytes(bytes(data))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("mode", ["truncated", "corrupted"])
def test_damaged_bag_gives_bag_error(tmp_path, storage, mode):
    export_samples_to_bag(make_samples(5), tmp_path / "ok", storage=storage)
    _damage(tmp_path / "ok", tmp_path / "bad", mode)
    with pytest.raises(BagError) as err:
        read_samples(tmp_path / "bad")
    assert "bad" in str(err.value) and "\n" not in str(err.value) and len(str(err.value)) < 500


def test_missing_and_unfinished_bags(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        read_samples(tmp_path / "nope")
    (tmp_path / "run.partial" / "run").mkdir(parents=True)
    with pytest.raises(BagError, match="unfinished recording"):
        read_samples(tmp_path / "run.partial")
    export_samples_to_bag(make_samples(1), tmp_path / "ds")
    with pytest.raises(BagError, match="exists already"):
        export_samples_to_bag(make_samples(1), tmp_path / "ds")
    with pytest.raises(BagError, match="no topic /x"):
        read_samples(tmp_path / "ds", topic="/x")


def test_failed_export_leaves_nothing(tmp_path):
    bad = make_samples(3)
    bad[2] = dataclasses.replace(bad[2], image=np.zeros((4, 4), np.uint8))  # not (H, W, 3)
    with pytest.raises(BagError):
        export_samples_to_bag(bad, tmp_path / "ds")
    assert sorted(os.listdir(tmp_path)) == []


def test_atomic_writer_abort_and_close(tmp_path):
    w = AtomicBagWriter(tmp_path / "b", storage="sqlite3").open()
    w.add_topic("/t", "std_msgs/msg/String")
    w.write("/t", 5, w.typestore.serialize_cdr(w.typestore.types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String"))
    assert (tmp_path / "b.partial").is_dir() and not (tmp_path / "b").exists()
    w.abort()
    assert os.listdir(tmp_path) == []
    with AtomicBagWriter(tmp_path / "b") as w:
        w.add_topic("/t", "std_msgs/msg/String")
    with BagReader(tmp_path / "b") as bag:
        assert bag.topics == {"/t": "std_msgs/msg/String"} and bag.message_count == 0


@pytest.mark.parametrize("mode", ["missing", "truncated", "corrupted"])
def test_cli_reports_damaged_bag_without_traceback(tmp_path, mode, capsys):
    export_samples_to_bag(make_samples(4), tmp_path / "ok")
    target = tmp_path / "bad"
    if mode != "missing":
        _damage(tmp_path / "ok", target, mode)
    assert cli_replay([str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rls3 replay: error: ") and "Traceback" not in err and str(target) in err


def test_cli_in_a_real_process_exits_nonzero_without_traceback(tmp_path, ros_env):
    export_samples_to_bag(make_samples(4), tmp_path / "ok", storage="sqlite3")
    _damage(tmp_path / "ok", tmp_path / "bad", "truncated")
    for args in (["-m", "rls3_ros.ros.replayer", str(tmp_path / "bad")], ["-m", "rls3_ros.ros.replayer", str(tmp_path / "none")],
                 ["-m", "rls3_ros.ros.recorder", "--topics", "/a", "--out", str(tmp_path / "ok")]):
        p = subprocess.run([sys.executable, *args], env=ros_env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr + p.stdout and "error:" in p.stderr


def test_bag_cli_exports_a_caption_dataset_and_reports(tmp_path, capsys):
    from rls3_ros.cli.bag import cli_bag
    from rls3_ros.captions.dataset import read_dataset, write_dataset

    write_dataset(make_samples(5), tmp_path / "ds", write_segmentation=False)
    assert cli_bag(["export", str(tmp_path / "ds"), "--out", str(tmp_path / "ds_bag")]) == 0
    for a, b in zip(read_dataset(tmp_path / "ds"), read_samples(tmp_path / "ds_bag")):
        assert_same_sample(a, b)
    assert cli_bag(["info", str(tmp_path / "ds_bag")]) == 0
    assert "/rls3/samples  [rls3_msgs/msg/Sample]  5 msgs  decodable" in capsys.readouterr().out
    assert cli_bag(["samples", str(tmp_path / "ds_bag"), "--only-valid"]) == 0
    assert capsys.readouterr().out.startswith("4 samples (0 invalid)")
    assert cli_bag(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "not a caption dataset" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_no_bag_module_loads_rclpy_or_the_ros_layer():
    """Every module under rls3_ros/bags (found on disk, so a new one is covered), imported one
    after another in a fresh interpreter: none loads rclpy, rls3_ros.ros.nodes or rls3_ros.ros."""
    import rls3_ros.bags

    bag_dir = Path(rls3_ros.bags.__file__).parent
    modules = ["rls3_ros.bags"] + sorted(f"rls3_ros.bags.{f.stem}" for f in bag_dir.glob("*.py") if f.stem != "__init__")
    assert {"rls3_ros.bags.bagio", "rls3_ros.bags.convert"} <= set(modules)
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "    bad = sorted(m for m in sys.modules if m.split('.')[0] == 'rclpy' or m.startswith(('rls3_ros.ros.nodes', 'rls3_ros.ros')))\n"
            "    assert not bad, f'importing {name} loaded {bad[:5]}'\n"
            "print('checked', len(" + repr(modules) + "))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == f"checked {len(modules)}"


def test_episodes_from_a_bag(tmp_path):
    from rls3_ros.bags.sample_reader import iter_episodes

    samples = make_samples(8)  # episodes 0,0,0,1,1,1,2,2; sample 4 invalid
    export_samples_to_bag(samples, tmp_path / "run")
    eps = [(e, [s.sample_id for s in batch]) for e, batch in iter_episodes(tmp_path / "run")]
    assert eps == [(0, ["run-e0-s0", "run-e0-s1", "run-e0-s2"]), (1, ["run-e1-s3", "run-e1-s5"]), (2, ["run-e2-s6", "run-e2-s7"])]


def test_writer_queue_is_bounded_and_drains_in_order():
    import threading

    from rls3_ros.ros.recorder import ByteBoundedQueue

    q = ByteBoundedQueue(max_bytes=100, max_items=3)
    assert q.put("a", 60) and not q.put("b", 50)  # over the byte budget: refused (a drop), never blocks
    assert q.put("c", 40) and q.put("d", 0) and not q.put("e", 0)  # item cap
    assert q.put("topic", 0, force=True)  # control items always fit
    got = [q.get(0.01) for _ in range(4)]
    assert got == ["a", "c", "d", "topic"] and q.get(0.01) is None
    assert q.high_water_bytes == 100
    t = threading.Timer(0.05, q.close)
    t.start()
    with pytest.raises(EOFError):
        while True:
            q.get(0.5)
