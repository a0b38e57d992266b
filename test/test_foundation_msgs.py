"""rls3_msgs: every interface imports and messages round-trip through CDR with nested images."""

import importlib
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message

from programs.sample_factory import digest, make_sample
from rls3_ros.ros.conversions import msg_to_sample, sample_to_msg

MSG_DIR = Path(__file__).resolve().parent.parent / "rls3_msgs"


def _interfaces(kind):
    return sorted(p.stem for p in (MSG_DIR / kind).glob(f"*.{kind}"))


@pytest.mark.parametrize("kind", ["msg", "srv", "action"])
def test_every_interface_file_generates_an_importable_type(kind):
    names = _interfaces(kind)
    assert names, f"no .{kind} files"
    module = importlib.import_module(f"rls3_msgs.{kind}")
    for name in names:
        cls = getattr(module, name)
        if kind == "msg":
            cls()
        elif kind == "srv":
            cls.Request(), cls.Response()
        else:
            cls.Goal(), cls.Result(), cls.Feedback()


def test_sample_round_trips_through_cdr_with_its_image():
    sample = make_sample()
    msg = sample_to_msg(sample)
    data = serialize_message(msg)
    assert len(data) > 224 * 224 * 3
    back = deserialize_message(data, type(msg))
    assert back.image == msg.image and back.scene == msg.scene and back.header == msg.header
    assert back.relations[0].horizontal_angle == pytest.approx(msg.relations[0].horizontal_angle, rel=1e-6)
    core = msg_to_sample(back)
    assert digest(core.image) == digest(sample.image)
    assert core.scene.objects[0].bbox == sample.scene.objects[0].bbox
    assert core.scene.stamp_ns == sample.scene.stamp_ns
    assert core.relations[0].caption == sample.relations[0].caption
    assert core.relations[0].negatives == sample.relations[0].negatives
    np.testing.assert_allclose(core.scene.camera.position, sample.scene.camera.position)
    np.testing.assert_allclose(core.scene.camera.orientation, sample.scene.camera.orientation, atol=1e-12)
    assert core.scene.camera.fx == pytest.approx(sample.scene.camera.fx)


def test_header_is_shared_by_sample_scene_and_image():
    msg = sample_to_msg(make_sample())
    assert msg.header.stamp == msg.scene.header.stamp == msg.image.header.stamp
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)


def test_scene_with_nan_pose_is_rejected_with_a_reason():
    from rls3_ros.ros.conversions import msg_to_scene

    msg = sample_to_msg(make_sample())
    msg.scene.objects[0].pose.position.x = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        msg_to_scene(msg.scene)
