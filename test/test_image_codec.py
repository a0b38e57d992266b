"""The one image codec (rls3_ros.core.image_codec): every encoding round-trips through rclpy and
rosbags messages, little- and big-endian, packed and padded rows; RGB agrees with rosbags.image
(an independent implementation); bad messages raise a clear error naming the problem; the
codec imports no ROS."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
from rosbags.image import message_to_cvimage
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage, Image

from rls3_ros.core.image_codec import (
    ENCODINGS,
    RGB_ENCODINGS,
    ImageConversionError,
    image_msg_to_numpy,
    image_msg_to_rgb,
    numpy_to_image_msg,
)

RNG = np.random.default_rng(0)
TYPESTORE = get_typestore(Stores.LATEST)
RosbagsImage = TYPESTORE.types["sensor_msgs/msg/Image"]
RosbagsCompressed = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
RosbagsHeader = TYPESTORE.types["std_msgs/msg/Header"]
RosbagsTime = TYPESTORE.types["builtin_interfaces/msg/Time"]
HEADER = RosbagsHeader(stamp=RosbagsTime(sec=0, nanosec=0), frame_id="")


def random_array(encoding, h=7, w=5):
    dtype, ch = ENCODINGS[encoding]
    shape = (h, w) if ch == 1 else (h, w, ch)
    if np.issubdtype(dtype, np.floating):
        return RNG.normal(size=shape).astype(dtype)
    return RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)


def both_libraries(arr, encoding, **kw):
    """The same image as an rclpy message and as a rosbags message."""
    return (numpy_to_image_msg(arr, encoding, **kw),
            numpy_to_image_msg(arr, encoding, HEADER, RosbagsImage, **kw))


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("pad", [0, 3])
def test_round_trip_every_encoding_byte_order_and_padding(encoding, big_endian, pad):
    arr = random_array(encoding)
    dtype, ch = ENCODINGS[encoding]
    row = 5 * ch * np.dtype(dtype).itemsize
    for msg in both_libraries(arr, encoding, big_endian=big_endian, step=row + pad):
        assert msg.step == row + pad and msg.is_bigendian == int(big_endian)
        assert len(bytes(msg.data)) == (row + pad) * 7
        back = image_msg_to_numpy(msg)
        assert back.dtype == np.dtype(dtype) and back.dtype.isnative
        np.testing.assert_array_equal(back, arr)
    if dtype != np.uint8 and pad == 0:  # the bytes really are in the stated order
        raw = np.frombuffer(bytes(msg.data), np.dtype(dtype).newbyteorder(">" if big_endian else "<"))
        np.testing.assert_array_equal(raw.reshape(arr.shape), arr)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_native_layout_agrees_with_rosbags_image(encoding):
    arr = random_array(encoding)
    for big_endian in (False, True):
        _, msg = both_libraries(arr, encoding, big_endian=big_endian)
        np.testing.assert_array_equal(np.squeeze(message_to_cvimage(msg)), np.squeeze(image_msg_to_numpy(msg)))


@pytest.mark.parametrize("encoding", RGB_ENCODINGS)
def test_to_rgb_matches_rosbags_rgb_conversion(encoding):
    arr = random_array(encoding)
    ours_rclpy, ours_bag = both_libraries(arr, encoding, step=None)
    rgb = image_msg_to_rgb(ours_rclpy)
    assert rgb.shape == (7, 5, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, message_to_cvimage(ours_bag, "rgb8"))
    np.testing.assert_array_equal(rgb, image_msg_to_rgb(ours_bag))
    padded = numpy_to_image_msg(arr, encoding, big_endian=True, step=ours_rclpy.step + 5)
    np.testing.assert_array_equal(image_msg_to_rgb(padded), rgb)


@pytest.mark.parametrize("fmt, ext", [("jpeg", ".jpg"), ("png", ".png")])
def test_compressed_images_decode_to_rgb_in_both_libraries(fmt, ext):
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :12] = (200, 30, 10)
    ok, enc = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    live = CompressedImage(format=fmt, data=enc.tobytes())
    bag = RosbagsCompressed(header=HEADER, format=fmt, data=enc.reshape(-1))
    a, b = image_msg_to_rgb(live), image_msg_to_rgb(bag)
    np.testing.assert_array_equal(a, b)
    err = np.abs(a.astype(int) - rgb)
    assert a.shape == (16, 24, 3) and (err.max() == 0 if fmt == "png" else err.mean() < 4)  # jpeg rings at the edge
    ok, grey = cv2.imencode(".png", rgb[:, :, 0])  # a grey PNG decodes to RGB too
    np.testing.assert_array_equal(image_msg_to_rgb(CompressedImage(format="png", data=grey.tobytes())),
                                  np.repeat(rgb[:, :, :1], 3, axis=2))
    with pytest.raises(ImageConversionError, match="cannot decode compressed image .format 'jpeg'"):
        image_msg_to_rgb(CompressedImage(format="jpeg", data=b"not a jpeg"))
    with pytest.raises(ImageConversionError, match="empty compressed image"):
        image_msg_to_rgb(CompressedImage(format="png"))


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda m: setattr(m, "encoding", "yuv422"), "unsupported encoding 'yuv422'"),
        (lambda m: setattr(m, "encoding", "RGB8"), "unsupported encoding 'RGB8'"),
        (lambda m: setattr(m, "encoding", ""), "unsupported encoding ''"),
        (lambda m: setattr(m, "step", 2), "step 2 is smaller than a row .* for rgb8"),
        (lambda m: setattr(m, "height", m.height + 5), "needs"),
        (lambda m: (setattr(m, "width", 0), setattr(m, "height", 0)), "empty image"),
        (lambda m: (setattr(m, "width", 4097), setattr(m, "height", 4096)), "too large"),
    ],
)
def test_malformed_images_raise_a_clear_error(mutate, reason):
    for msg in both_libraries(random_array("rgb8"), "rgb8"):
        mutate(msg)
        for decode in (image_msg_to_numpy, image_msg_to_rgb):
            with pytest.raises(ImageConversionError, match=reason):
                decode(msg)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "8UC1", "8UC3"])
def test_depth_and_generic_encodings_decode_but_have_no_rgb(encoding):
    msg = numpy_to_image_msg(random_array(encoding), encoding)
    image_msg_to_numpy(msg)
    with pytest.raises(ImageConversionError, match=f"{encoding} is not a colour image encoding"):
        image_msg_to_rgb(msg)


def test_wrong_array_for_encoding_is_refused():
    with pytest.raises(ImageConversionError, match="channels"):
        numpy_to_image_msg(np.zeros((4, 4, 3), np.uint8), "mono8")
    with pytest.raises(ImageConversionError, match="dtype"):
        numpy_to_image_msg(np.zeros((4, 4), np.float64), "32FC1")
    with pytest.raises(ImageConversionError, match="unsupported encoding 'bayer_rggb8'"):
        numpy_to_image_msg(np.zeros((4, 4), np.uint8), "bayer_rggb8")
    with pytest.raises(ImageConversionError, match="step 3 is smaller"):
        numpy_to_image_msg(np.zeros((4, 4), np.uint8), "mono8", step=3)


@pytest.mark.parametrize("pad", [0, 3])
def test_converted_arrays_are_writable_copies(pad):
    for msg in both_libraries(random_array("rgb8"), "rgb8", step=15 + pad):
        first = np.frombuffer(bytes(msg.data), np.uint8)[0]
        for arr in (image_msg_to_numpy(msg), image_msg_to_rgb(msg)):
            assert arr.flags.writeable
            arr[0, 0, 0] ^= 0xFF  # must not touch the message
        assert image_msg_to_numpy(msg)[0, 0, 0] == first


def test_a_short_last_row_padding_is_accepted():
    arr = random_array("mono16")
    msg = numpy_to_image_msg(arr, "mono16", step=14)
    msg.data = bytes(msg.data)[:-4]  # the last row's padding is missing
    np.testing.assert_array_equal(image_msg_to_numpy(msg), arr)


def test_codec_imports_no_ros():
    code = ("import sys, rls3_ros.core.image_codec; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'sensor_msgs', 'std_msgs', 'rls3_msgs')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.mark.timeout(120)
def test_live_and_recorded_images_decode_to_identical_arrays(tmp_path, ros_env, rclpy_node):
    """Every codec case published by a real rclpy process: decoded live by a subscriber and,
    recorded by `rls3 record` into an MCAP bag on disk, decoded from the bag: same arrays."""
    from pathlib import Path

    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from ros_harness import NodeProcess, poll_until

    from programs.image_set_publisher import TOPIC, image_cases
    from rls3_ros.bags.bagio import BagReader

    cases = image_cases()
    live = {}
    qos = QoSProfile(depth=len(cases), reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    rclpy_node.create_subscription(Image, TOPIC, lambda m: live.setdefault(m.header.frame_id, m), qos)
    bag = tmp_path / "codec_bag"
    program = str(Path(__file__).resolve().parent / "programs" / "image_set_publisher.py")
    with NodeProcess(["-m", "rls3_ros.ros.recorder", "--topics", TOPIC, "--out", str(bag)], ros_env, "recorder") as rec:
        rec.wait_for_output(r"recording to", 30)
        with NodeProcess([program, "--subscribers", "2"], ros_env, "image_set_publisher") as pub:
            rec.wait_for_output(rf"recording {TOPIC} \[sensor_msgs/msg/Image\]", 30)
            pub.wait_for_output(rf"ACKED {len(cases)}", 60)  # the recorder's reader has them all
            poll_until(lambda: len(live) == len(cases), 30, "every image live")
        assert rec.stop() == 0, rec.output()
    with BagReader(bag) as b:
        recorded = {m.header.frame_id: m for m in (b.deserialize(raw, c.msgtype) for c, _t, raw in b.messages())}
    assert sorted(recorded) == sorted(live) == sorted(name for name, *_ in cases)
    for name, encoding, arr, big_endian, step in cases:
        on_wire, from_bag = live[name], recorded[name]
        assert (from_bag.step, bool(from_bag.is_bigendian)) == (on_wire.step, bool(on_wire.is_bigendian)) == (step, big_endian)
        a, b = image_msg_to_numpy(on_wire), image_msg_to_numpy(from_bag)
        assert a.dtype == b.dtype == arr.dtype, name
        np.testing.assert_array_equal(a, arr, err_msg=name)
        np.testing.assert_array_equal(b, a, err_msg=name)
        if encoding in RGB_ENCODINGS:
            np.testing.assert_array_equal(image_msg_to_rgb(from_bag), image_msg_to_rgb(on_wire), err_msg=name)
