"""Fuzz the bag entry points with corrupted and malformed bags (issue 26, item 6).

From valid bags (an MCAP and a sqlite3 rosbag2 directory written by rosbags, a bare MCAP
written by the mcap library) a fixed seed makes ``RLS3_FUZZ_BAGS`` (default 200) bad ones:
the storage file truncated, bytes flipped (anywhere, or in its structure near the start),
a block zeroed, metadata.yaml damaged, type names that are no ROS name or name a module
(``this/msg/Zen``, ``os/msg/system``, paths, control characters, 1000 characters), broken or
hostile message definitions (garbage, truncated, self-referencing, unknown field types, huge
fixed arrays, a known type redefined), and payloads that are not their declared type (another
type, random bytes, empty, only the CDR header).

Each bag goes through the same code as ``rls3 bag info``, ``rls3 bag samples`` and
``rls3 replay`` (their CLI functions, in this process, output captured at the file-descriptor
level): every run must end as "ok" (exit 0) or "refused" (exit 2 with exactly one
``rls3 ...: error:`` line), never "crashed" (a traceback, another exit code, an exception
escaping). Counts per mutation and outcome are printed and written to
results/fuzz_counts.json ("bags").
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from reliability_common import write_results
from rls3_ros.bags.typestore import base_typestore

pytestmark = pytest.mark.timeout(900)

N_BAGS = int(os.environ.get("RLS3_FUZZ_BAGS", "200"))
SEED = int(os.environ.get("RLS3_FUZZ_SEED", "20260126"))
IMG = "sensor_msgs/msg/Image"
STR = "std_msgs/msg/String"

BAD_NAMES = [
    "this/msg/Zen", "os/msg/system", "os/msg/System", "antigravity/msg/Fly", "", "x", "a/b", "../../etc/msg/Passwd",
    "/abs/msg/Path", "std_msgs/msg/String\n", "std_msgs/msg/String\x1b[2J", "sensor_msgs/msg/Image\x00",
    "std_msgs.msg/String", "std_msgs/msg/str", "ünïcode/msg/Typ", "a" * 1000, "std_msgs/msg/" + "S" * 300,
    "std_msgs/srv/String", "rls3_msgs/msg/Nope", "__import__('os')/msg/X", "std_msgs/msg/String'); import os; ('",
]
BAD_DEFS = [
    b"", b"\xff\xfe garbage \x00\x01", b"string", b"string data\nint32", b"this is not a definition at all",
    b"MSG: a/msg/A\na/msg/A child\n", b"a/msg/A child\n================================================================================\nMSG: a/msg/A\na/msg/A child\n",
    b"nope_msgs/msg/Missing field\n", b"uint8[99999999999] huge\n", b"string[99999999] many\n",
    b"int32 a\n" * 5000, b"float64[] xs\nstring[<=3] s\n", b"string data\nuint8 CONST=300\n",
    b"string data\nstring CONST='); import os; os.system('echo PWNED') #\n",
]


# ------------------------------------------------------------------ valid bags to start from
def _payloads(store, n=3):
    Img, Hdr, Time = (store.types[t] for t in (IMG, "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    imgs = [bytes(store.serialize_cdr(Img(header=Hdr(stamp=Time(sec=i, nanosec=0), frame_id="cam"), height=4, width=4,
                                          encoding="rgb8", is_bigendian=0, step=12, data=np.full(48, i, np.uint8)), IMG))
            for i in range(n)]
    strs = [bytes(store.serialize_cdr(store.types[STR](data=f"hello {i}"), STR)) for i in range(n)]
    return imgs, strs


def _rosbag2_bag(path: Path, storage: str) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from rls3_ros.bags.convert import SAMPLE_TYPE, sample_to_bagmsg
    from test_bag_io import make_samples

    store = base_typestore()
    imgs, strs = _payloads(store)
    samples = [bytes(store.serialize_cdr(sample_to_bagmsg(store, s), SAMPLE_TYPE)) for s in make_samples(2, size=8)]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as w:
        ci = w.add_connection("/camera/image_raw", IMG, typestore=store)
        cs = w.add_connection("/chatter", STR, typestore=store)
        cx = w.add_connection("/rls3/samples", SAMPLE_TYPE, typestore=store)
        t0 = 1_700_000_000_000_000_000
        for i in range(3):
            w.write(ci, t0 + i * 1_000_000, imgs[i])
            w.write(cs, t0 + i * 1_000_000 + 1, strs[i])
        for i, raw in enumerate(samples):
            w.write(cx, t0 + i * 1_000_000 + 2, raw)


def _mcap_file(path: Path, topics) -> None:
    """A bare .mcap from the mcap library: ``topics`` = [(topic, schema name, definition bytes,
    [payloads])]; names and definitions are whatever the caller gives."""
    from mcap.writer import Writer as McapWriter

    with open(path, "wb") as f:
        w = McapWriter(f)
        w.start(profile="ros2", library="fuzz")
        t = 1_000_000
        for topic, name, definition, payloads in topics:
            schema = w.register_schema(name=name, encoding="ros2msg", data=definition)
            ch = w.register_channel(topic=topic, message_encoding="cdr", schema_id=schema)
            for p in payloads:
                t += 1000
                w.add_message(channel_id=ch, log_time=t, publish_time=t, data=p)
        w.finish()


def _storage_file(bag: Path) -> Path:
    return bag if bag.is_file() else next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


# ------------------------------------------------------------------ mutations
def make_fuzz_bags(root: Path, n: int, seed: int):
    """[(kind, path)]: ``n`` bad bags from valid ones, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    store = base_typestore()
    imgs, strs = _payloads(store)
    std_defs = {t: store.generate_msgdef(t, ros_version=2)[0].encode() for t in (IMG, STR)}
    bases = {"mcap": root / "base_mcap", "sqlite3": root / "base_sqlite3"}
    for storage, p in bases.items():
        _rosbag2_bag(p, storage)
    bare = root / "base.mcap"
    _mcap_file(bare, [("/camera/image_raw", IMG, std_defs[IMG], imgs), ("/chatter", STR, std_defs[STR], strs)])

    def copy_base() -> Path:
        choice = rng.choice(["mcap", "sqlite3", "bare"])
        dst = root / f"bag{i:04d}"
        if choice == "bare":
            dst = dst.with_suffix(".mcap")
            shutil.copy(bare, dst)
        else:
            shutil.copytree(bases[choice], dst)
        return dst

    kinds = ["truncate", "flip", "flip_structure", "zero_block", "metadata", "bad_type_name", "bad_msgdef",
             "payload_swap", "random_payload"]
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)] if i < len(kinds) else str(rng.choice(kinds))
        if kind in ("truncate", "flip", "flip_structure", "zero_block"):
            bag = copy_base()
            f = _storage_file(bag)
            data = bytearray(f.read_bytes())
            if kind == "truncate":
                data = data[: int(rng.integers(0, len(data)))]
            elif kind == "flip":
                for pos in rng.integers(0, len(data), int(rng.integers(1, 33))):
                    data[pos] ^= int(rng.integers(1, 256))
            elif kind == "flip_structure":
                for pos in rng.integers(0, min(len(data), 512), int(rng.integers(1, 9))):
                    data[pos] ^= int(rng.integers(1, 256))
            else:
                a = int(rng.integers(0, len(data)))
                data[a:a + int(rng.integers(1, 4096))] = bytes(min(len(data) - a, 4096))
            f.write_bytes(bytes(data))
        elif kind == "metadata":
            bag = root / f"bag{i:04d}"
            shutil.copytree(bases[str(rng.choice(["mcap", "sqlite3"]))], bag)
            meta = bag / "metadata.yaml"
            text = meta.read_text()
            how = int(rng.integers(0, 6))
            if how == 0:
                text = text[: int(rng.integers(0, len(text)))]
            elif how == 1:
                text = text.replace("message_count: 3", "message_count: 99999999999")
            elif how == 2:
                text = text.replace(".mcap", ".nope").replace(".db3", ".nope")
            elif how == 3:
                text = "{{{ not: yaml ::: [\n" + text
            elif how == 4:
                text = text.replace("type: sensor_msgs/msg/Image", "type: this/msg/Zen")
            else:
                text = text.replace("version: 8", "version: 999")
            meta.write_text(text)
        elif kind == "bad_type_name":
            bag = root / f"bag{i:04d}.mcap"
            name = str(rng.choice(BAD_NAMES))
            _mcap_file(bag, [("/camera/image_raw", name, b"string data\n", strs), ("/chatter", STR, std_defs[STR], strs)])
        elif kind == "bad_msgdef":
            bag = root / f"bag{i:04d}.mcap"
            name = str(rng.choice(["a/msg/A", IMG, STR, "acme_msgs/msg/Thing"]))
            definition = BAD_DEFS[int(rng.integers(0, len(BAD_DEFS)))]
            _mcap_file(bag, [("/fuzz/topic", name, definition, strs), ("/chatter", STR, std_defs[STR], strs)])
        elif kind == "payload_swap":
            bag = root / f"bag{i:04d}.mcap"
            declared = str(rng.choice([IMG, STR, "rls3_msgs/msg/Sample", "sensor_msgs/msg/CameraInfo"]))
            payloads = imgs if declared != IMG else strs
            topic = str(rng.choice(["/camera/image_raw", "/robot/data", "/scene_state"]))
            _mcap_file(bag, [(topic, declared, store.generate_msgdef(declared, ros_version=2)[0].encode(), payloads)])
        else:  # random_payload
            bag = root / f"bag{i:04d}.mcap"
            declared = str(rng.choice([IMG, STR, "rls3_msgs/msg/Sample"]))
            choices = [b"", b"\x00\x01\x00\x00", bytes(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8)),
                       b"\x00\x01\x00\x00" + bytes(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8)),
                       b"\x00\x01\x00\x00" + (0xFFFFFFF0).to_bytes(4, "little") * 8]
            payloads = [choices[int(rng.integers(0, len(choices)))] for _ in range(3)]
            _mcap_file(bag, [("/robot/data", declared, store.generate_msgdef(declared, ros_version=2)[0].encode(), payloads)])
        out.append((kind, bag))
    return out


# ------------------------------------------------------------------ the run
def _outcome(run, capfd) -> str:
    try:
        code = run()
    except BaseException as exc:  # noqa: BLE001 - an exception escaping the CLI is a crash
        capfd.readouterr()
        return f"crashed ({exc.__class__.__name__}: {exc})"
    out, err = capfd.readouterr()
    errors = [line for line in err.splitlines() if "error:" in line]
    if "Traceback" in out + err:
        return "crashed (traceback)\n" + err[-2000:]
    if code == 0:
        return "ok"
    if code == 2 and len(errors) == 1 and errors[0].startswith("rls3 "):
        return "refused"
    return f"crashed (exit {code}, {len(errors)} error lines)\n" + err[-2000:]


def test_bag_fuzz_no_crashes(tmp_path, capfd, ros_env):
    from rls3_ros.cli.bag import cli_bag
    from rls3_ros.ros.replayer import cli_replay

    bags = make_fuzz_bags(tmp_path, N_BAGS, SEED)
    capfd.readouterr()
    entry_points = {
        "bag_info": lambda p: cli_bag(["info", str(p)]),
        "bag_samples": lambda p: cli_bag(["samples", str(p)]),
        "replay": lambda p: cli_replay([str(p), "--rate", "1000"]),
    }
    counts: Counter = Counter()
    crashes = []
    t0 = time.monotonic()
    for kind, path in bags:
        counts[f"mutation:{kind}"] += 1
        for name, fn in entry_points.items():
            result = _outcome(lambda: fn(path), capfd)
            label = result.split(" ", 1)[0].split("\n", 1)[0]
            counts[f"{name}:{label}"] += 1
            counts[f"{kind}:{label}"] += 1
            if label == "crashed":
                crashes.append(f"{kind} {path.name} {name}: {result}")
    wall = time.monotonic() - t0
    summary = {
        "bags": len(bags), "runs": len(bags) * len(entry_points), "seed": SEED, "wall_s": round(wall, 1),
        "crashed": len(crashes),
        "per_kind": dict(sorted(counts.items())),
        "outcomes": {o: sum(v for k, v in counts.items() if k.startswith(tuple(f"{e}:" for e in entry_points)) and k.endswith(f":{o}"))
                     for o in ("ok", "refused", "crashed")},
    }
    with capfd.disabled():
        print(f"\nbag fuzz: {len(bags)} bags x {len(entry_points)} entry points in {wall:.1f} s: {summary['outcomes']}")
        for k, v in summary["per_kind"].items():
            print(f"  {k:34s} {v}")
    write_results("fuzz_counts.json", "bags", summary)
    assert not crashes, "\n\n".join(crashes[:5])
    # the fuzz reached both sides: some bags still read, most were refused
    assert summary["outcomes"]["refused"] > 0 and summary["outcomes"]["ok"] > 0
