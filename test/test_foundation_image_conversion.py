"""sensor_msgs/Image <-> numpy: every supported encoding, row padding, clear errors;
cross-checked against rosbags.image (an independent implementation)."""

import numpy as np
import pytest
from rosbags.image import message_to_cvimage
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import Image

from rls3_ros.nodes.image_conversion import (
    ENCODINGS,
    ImageConversionError,
    image_msg_to_numpy,
    image_msg_to_rgb,
    numpy_to_image_msg,
)

RNG = np.random.default_rng(0)
TYPESTORE = get_typestore(Stores.LATEST)
RosbagsImage = TYPESTORE.types["sensor_msgs/msg/Image"]
RosbagsHeader = TYPESTORE.types["std_msgs/msg/Header"]
RosbagsTime = TYPESTORE.types["builtin_interfaces/msg/Time"]


def random_array(encoding, h=7, w=5):
    dtype, ch = ENCODINGS[encoding]
    shape = (h, w) if ch == 1 else (h, w, ch)
    if np.issubdtype(dtype, np.floating):
        return RNG.normal(size=shape).astype(dtype)
    return RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)


def padded(msg: Image, pad: int) -> Image:
    """The same image with ``pad`` junk bytes at the end of every row."""
    row = msg.step
    data = bytes(msg.data)
    out = b"".join(data[i * row:(i + 1) * row] + b"\xab" * pad for i in range(msg.height))
    m = Image(height=msg.height, width=msg.width, encoding=msg.encoding, is_bigendian=0, step=row + pad)
    m.data = out
    return m


def to_rosbags(msg: Image):
    return RosbagsImage(
        header=RosbagsHeader(stamp=RosbagsTime(sec=0, nanosec=0), frame_id=""),
        height=msg.height, width=msg.width, encoding=msg.encoding, is_bigendian=msg.is_bigendian,
        step=msg.step, data=np.frombuffer(bytes(msg.data), dtype=np.uint8),
    )


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 3])
def test_round_trip_and_agreement_with_rosbags_image(encoding, pad):
    arr = random_array(encoding)
    msg = padded(numpy_to_image_msg(arr, encoding), pad)
    ours = image_msg_to_numpy(msg)
    np.testing.assert_array_equal(ours, arr)
    # rosbags.image returns the native layout but ignores row padding: compare unpadded.
    theirs = message_to_cvimage(to_rosbags(numpy_to_image_msg(arr, encoding)))
    np.testing.assert_array_equal(np.squeeze(theirs), np.squeeze(ours))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_to_rgb_matches_rosbags_rgb_conversion(encoding):
    arr = random_array(encoding)
    msg = numpy_to_image_msg(arr, encoding)
    rgb = image_msg_to_rgb(msg)
    assert rgb.shape == (7, 5, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, message_to_cvimage(to_rosbags(msg), "rgb8"))


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda m: setattr(m, "is_bigendian", 1), "big-endian"),
        (lambda m: setattr(m, "encoding", "yuv422"), "unsupported encoding"),
        (lambda m: setattr(m, "step", 2), "smaller than a row"),
        (lambda m: setattr(m, "height", m.height + 5), "needs"),
        (lambda m: (setattr(m, "width", 0), setattr(m, "height", 0)), "empty image"),
    ],
)
def test_malformed_images_raise_a_clear_error(mutate, reason):
    msg = numpy_to_image_msg(random_array("rgb8"), "rgb8")
    mutate(msg)
    with pytest.raises(ImageConversionError, match=reason):
        image_msg_to_numpy(msg)


def test_wrong_array_for_encoding_is_refused():
    with pytest.raises(ImageConversionError, match="channels"):
        numpy_to_image_msg(np.zeros((4, 4, 3), np.uint8), "mono8")
    with pytest.raises(ImageConversionError, match="dtype"):
        numpy_to_image_msg(np.zeros((4, 4), np.float64), "32FC1")


@pytest.mark.parametrize("pad", [0, 3])
def test_converted_arrays_are_writable_copies(pad):
    msg = padded(numpy_to_image_msg(random_array("rgb8"), "rgb8"), pad)
    for arr in (image_msg_to_numpy(msg), image_msg_to_rgb(msg)):
        assert arr.flags.writeable and arr.flags.owndata or arr.base is not None and arr.flags.writeable
        arr[0, 0, 0] ^= 0xFF  # must not touch the message
    assert image_msg_to_numpy(msg)[0, 0, 0] == np.frombuffer(bytes(msg.data), np.uint8)[0]
