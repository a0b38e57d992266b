"""Issue 26 (items 4 and 7): every request and message has its limits checked before work and is
answered with a reason; absurd but finite camera inputs never give a 3D point.

One real ``spatial_query`` node process (the committed grounded base, compressed camera topic)
and an in-process rclpy client/publisher over loopback DDS:
- request images over ``max_image_side`` / ``max_image_pixels`` are refused from their header;
- a small PNG whose header declares 8192 x 8192 px on the compressed camera topic is refused
  without being decoded (the reason says so and the node's peak RSS does not jump);
- a scene state with more than ``max_scene_objects`` objects is dropped: a 'what' without
  candidates cannot take 300 candidates from it;
- intrinsics fx = 1e-30, a depth of 1e38 m and a CameraInfo of 4294967295 px give no 3D point and
  say why; sane ones still do;
- a request past its ``query_deadline`` is answered "deadline exceeded".
Plus the pure parts: compressed-header sizes, text/candidate limits, the CDR object count,
intrinsics checks.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from reliability_common import call_service, node_under_test
from ros_harness import poll_until

pytestmark = pytest.mark.timeout(300)

SERVICE = "/spatial_query/query"
CAMERA_TOPIC = "camera/image/compressed"


# ------------------------------------------------------------------------------ helpers
def _png(width: int, height: int, rows: bytes = b"") -> bytes:
    """A valid greyscale PNG: all-zero pixels (compressed to a few kB however large), or ``rows``."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    raw = rows or bytes(height * (width + 1))  # filter byte 0 + width grey bytes per row
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _vm(pid: int, key: str) -> float:
    """A /proc/<pid>/status size field [MB] (VmHWM: the peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {key} for pid {pid}")


def _image(h: int = 64, w: int = 64) -> np.ndarray:
    img = np.full((h, w, 3), 200, np.uint8)
    img[h // 4: h // 2, w // 8: w // 3] = (220, 30, 30)
    img[h // 4: h // 2, 2 * w // 3: 7 * w // 8] = (30, 60, 220)
    return img


def _header(sec: int, frame_id: str = "camera_optical"):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=sec, nanosec=0), frame_id=frame_id)


def _request(query_type="where", subject="red box", reference="blue box", relation="", candidates=(),
             image=None, sec: int = 0):
    from rls3_ros.ros.client import SpatialQueryClient

    req = SpatialQueryClient.make_request(query_type, subject, reference, relation, list(candidates),
                                          image=image, header=_header(sec))
    if image is not None:
        req.image.header = req.header
    return req


def _camera_info(fx: float, width: int = 64, height: int = 64, cx=None, cy=None):
    from sensor_msgs.msg import CameraInfo

    cx = width / 2 if cx is None else cx
    cy = height / 2 if cy is None else cy
    return CameraInfo(header=_header(0), width=width, height=height,
                      k=[fx, 0.0, float(cx), 0.0, fx, float(cy), 0.0, 0.0, 1.0])


def _depth(value: float, h: int = 64, w: int = 64):
    from rls3_ros.core.image_codec import numpy_to_image_msg

    return numpy_to_image_msg(np.full((h, w), value, np.float32), "32FC1")


def _scene_msg(n: int, sec: int, names=None):
    from rls3_ros.core.scene import CameraModel, ObjectState, SceneState
    from rls3_ros.ros.conversions import header_from_ns, scene_to_msg

    cam = CameraModel.look_at((0.0, -2.0, 1.5), (0.0, 0.0, 0.8), 64, 64, 60.0)
    names = names or [f"box {i}" for i in range(n)]
    objs = [ObjectState(f"obj_{i}", "box", names[i], (0.01 * i - 0.5, 0.0, 0.8), active=True) for i in range(n)]
    return scene_to_msg(SceneState(f"scene-{sec}", "kitchen", 0, cam, objs), header_from_ns(sec * 10**9))


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """spatial_query (grounded base, compressed camera topic, defaults for every limit) + a client."""
    root = tmp_path_factory.mktemp("security_limits")
    args = ["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", "model:=grounded", "-p", "torch_threads:=1",
            "-p", "image_qos:=reliable", "-p", "image_transport:=compressed", "-p", f"image_topic:={CAMERA_TOPIC}",
            "-p", "follow_adapter_topic:=false", "-p", "scene_tolerance:=0.05", "-p", "frame_tolerance:=0.05"]
    with node_under_test(root, args, "spatial_query", "limits_client") as (proc, ros_node):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rls3_msgs.msg import SceneState
        from rls3_msgs.srv import SpatialQuery
        from sensor_msgs.msg import CompressedImage

        client = ros_node.create_client(SpatialQuery, SERVICE)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        frames = ros_node.create_publisher(CompressedImage, CAMERA_TOPIC, qos)
        scenes = ros_node.create_publisher(SceneState, "scene_state", qos)
        proc.wait_for_output("model ready", 120)
        assert client.wait_for_service(timeout_sec=30)
        poll_until(lambda: frames.get_subscription_count() > 0 and scenes.get_subscription_count() > 0, 30,
                   "the node's camera and scene subscriptions")
        warm = call_service(client, _request(image=_image()))
        assert warm is not None and warm.success, getattr(warm, "message", "no answer")
        yield SimpleNamespace(proc=proc, node=ros_node, client=client, frames=frames, scenes=scenes)


def _ask(node, req, timeout=60.0):
    resp = call_service(node.client, req, timeout)
    assert resp is not None, f"no answer within {timeout} s:\n{node.proc.output()[-2000:]}"
    return resp


# ------------------------------------------------------------------------------ node tests
def test_oversize_request_images_are_refused_from_their_header(node):
    fits = _ask(node, _request(image=_image(1080, 1920)))  # a 1920x1080 frame is within the defaults
    assert fits.success, fits.message
    too_many = _ask(node, _request(image=_image(1000, 2100)))  # 2.1 Mpx: over max_image_pixels, sides fine
    assert not too_many.success
    assert "2100x1000 = 2100000 px above max_image_pixels 2097152" in too_many.message, too_many.message
    too_wide = _ask(node, _request(image=_image(16, 4097)))  # 65 kpx but one side over max_image_side
    assert not too_wide.success and "a side above max_image_side 4096" in too_wide.message, too_wide.message
    # a header that claims 4 Gpx with a few bytes of data: refused on the header, the node lives on
    claim = _request(image=_image())
    claim.image.width, claim.image.height, claim.image.step = 2 ** 31, 2, 3 * 2 ** 31
    claim.image.data = bytes(64)
    r = _ask(node, claim)
    assert not r.success and "above max_image_side" in r.message, r.message
    assert node.proc.alive()


def test_compressed_frame_declaring_a_huge_size_is_refused_without_decoding(node):
    from sensor_msgs.msg import CompressedImage

    bomb = _png(8192, 8192)  # ~70 kB; decoded as colour it would take 200 MB
    assert len(bomb) < 200_000
    ok_png = _png(64, 64, rows=b"".join(b"\x00" + bytes([(3 * x) % 256 for x in range(64)]) for _ in range(64)))
    hwm0 = _vm(node.proc.proc.pid, "VmHWM")
    node.frames.publish(CompressedImage(header=_header(501), format="png", data=bomb))
    node.frames.publish(CompressedImage(header=_header(502), format="png", data=ok_png))

    def answer(sec):
        r = _ask(node, _request(sec=sec))
        return None if "no frame" in r.message else r

    refused = poll_until(lambda: answer(501), 30, "the bomb frame to arrive")
    assert not refused.success
    assert "8192x8192" in refused.message and "refused before decoding" in refused.message, refused.message
    assert refused.header.stamp.sec == 501  # answered for that frame, not another one
    good = poll_until(lambda: answer(502), 30, "the good frame to arrive")
    assert good.success, good.message  # the compressed camera path itself works
    grew = _vm(node.proc.proc.pid, "VmHWM") - hwm0
    assert grew < 100.0, f"peak RSS grew {grew:.0f} MB: the frame was decoded"
    assert "camera frame refused" in node.proc.output()


def test_scene_state_with_too_many_objects_is_dropped_before_a_query_can_use_it(node):
    names = ["red box", "blue box", "green box"]
    node.scenes.publish(_scene_msg(300, 601))
    node.scenes.publish(_scene_msg(3, 602, names))
    node.proc.wait_for_output(r"dropped scene_state \(stamp 601\.000.*300 objects > max_scene_objects 256", 30)

    def what(sec):  # 'what' without candidates takes them from the scene state of the image's stamp
        return _ask(node, _request("what", "", "blue box", "left", image=_image(), sec=sec))

    small = poll_until(lambda: (lambda r: r if r.success else None)(what(602)), 30, "the 3-object scene to be used")
    assert sorted(small.ranked_candidates) == ["green box", "red box"], small.ranked_candidates
    big = what(601)
    assert not big.success and "'what' needs candidates" in big.message, (big.message, len(big.ranked_candidates))
    assert node.proc.alive()


def test_absurd_intrinsics_and_depths_give_no_3d_point_and_say_why(node):
    def ask(info, depth):
        req = _request(image=_image())
        req.camera_info, req.depth = info, depth
        r = _ask(node, req)
        assert r.success, r.message  # the relation is still answered
        assert r.subject_location.found and r.reference_location.found
        return r

    sane = ask(_camera_info(80.0), _depth(2.0))
    for loc in (sane.subject_location, sane.reference_location):
        p = loc.point_3d.point
        # the object's centre: behind the 2 m surface the depth image shows, by at most a half-extent
        assert loc.has_point_3d and 2.0 <= p.z < 2.5 and abs(p.x) < 2.0 and abs(p.y) < 2.0, (p.x, p.y, p.z)
    tiny_focal = ask(_camera_info(1e-30), _depth(2.0))
    assert not tiny_focal.subject_location.has_point_3d and not tiny_focal.reference_location.has_point_3d
    assert "below 1 px" in tiny_focal.message, tiny_focal.message
    far = ask(_camera_info(80.0), _depth(1e38))
    assert not far.subject_location.has_point_3d and not far.reference_location.has_point_3d
    assert "no depth within 0.01 .. 100 m" in far.message, far.message
    huge = ask(_camera_info(80.0, 4294967295, 4294967295), _depth(2.0))
    assert not huge.subject_location.has_point_3d and not huge.reference_location.has_point_3d
    assert "4294967295x4294967295 image, a side above max_image_side 4096" in huge.message, huge.message
    off_centre = ask(_camera_info(80.0, cx=-5000.0), _depth(2.0))
    assert not off_centre.subject_location.has_point_3d and "principal point" in off_centre.message


def test_a_request_past_its_deadline_is_answered_deadline_exceeded(tmp_path):
    args = ["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", "model:=grounded", "-p", "torch_threads:=1",
            "-p", "follow_adapter_topic:=false", "-p", "query_deadline:=0.000000001"]
    with node_under_test(tmp_path, args, "spatial_query", "deadline_client") as (proc, ros_node):
        from rls3_msgs.srv import SpatialQuery

        client = ros_node.create_client(SpatialQuery, SERVICE)
        proc.wait_for_output("model ready", 120)
        assert client.wait_for_service(timeout_sec=30)
        for _ in range(2):
            r = call_service(client, _request(image=_image()))
            assert r is not None and not r.success, getattr(r, "message", "no answer")
            assert r.message.startswith("deadline exceeded") and "query_deadline 1e-09 s" in r.message, r.message
        assert proc.alive()


# ------------------------------------------------------------------------------ pure parts
def test_compressed_header_sizes_are_read_without_decoding():
    import cv2

    from rls3_ros.core.image_codec import ImageConversionError, ImageLimits, check_image_msg, compressed_size

    for ext, kind, params in ((".png", "png", []), (".jpg", "jpeg", []),
                              (".jpg", "jpeg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])):
        for shape in ((17, 23, 3), (48, 40), (300, 200, 3)):
            ok, enc = cv2.imencode(ext, np.zeros(shape, np.uint8), params)
            assert compressed_size(enc.tobytes()) == (kind, shape[1], shape[0])
    assert compressed_size(_png(16000, 16000)) == ("png", 16000, 16000)
    for junk in (b"not a jpeg", b"GIF89a....", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xd9", b"BM" + bytes(60),
                 b"\xff\xd8" + b"\xff\xe0\x00\x02" * 500_000, b"\xff\xd8" + b"\xff" * 3_000_000):  # bounded walks
        with pytest.raises(ImageConversionError):
            compressed_size(junk)
    msg = SimpleNamespace(format="png", data=_png(5000, 10))
    with pytest.raises(ImageConversionError, match="a side above max_image_side 4096; refused before decoding"):
        check_image_msg(msg, ImageLimits())
    assert check_image_msg(SimpleNamespace(format="png", data=_png(400, 300)), ImageLimits()) == (400, 300)


def test_text_and_candidate_limits_are_checked_before_the_model():
    from rls3_ros.vlm.answers import MAX_CANDIDATES, MAX_TEXT_CHARS, QueryError, QueryRequest, answer_query, check_limits

    long = "red " * MAX_TEXT_CHARS
    check_limits(QueryRequest("what", long, "lamp", "left", ["mug"]))  # 'what' does not use the subject
    for req, reason in ((QueryRequest("w" * (MAX_TEXT_CHARS + 1)), "query_type is too long"),
                        (QueryRequest("where", long, "lamp"), "subject name is too long"),
                        (QueryRequest("check", "mug", "lamp", long), "relation is too long"),
                        (QueryRequest("what", "", "lamp", "left", ["mug"] * (MAX_CANDIDATES + 1)), "too many candidates"),
                        (QueryRequest("what", "", "lamp", "left", ["mug", long]), "candidate 1 name is too long")):
        with pytest.raises(QueryError, match=reason):
            check_limits(req)
    # 'what' without candidates takes them from the scene: never more than MAX_CANDIDATES of them
    ans = answer_query(SimpleNamespace(adapter=""), _image(), QueryRequest("what", "", "lamp", "left"), known_objects=["lamp"],
                       default_candidates=[f"box {i}" for i in range(MAX_CANDIDATES + 1)] + ["lamp"])
    assert not ans.success and "name the candidates" in ans.message, ans.message


def test_scene_object_count_is_read_from_the_serialized_message():
    from rclpy.serialization import serialize_message

    from rls3_ros.ros.cdr_peek import scene_state_prefix

    for n, sec in ((0, 1), (3, 2 ** 31 - 1), (300, 7)):
        msg = _scene_msg(n, sec)
        msg.header.frame_id, msg.scene_id, msg.backend = "w" * 13, "s" * 5001, "mujoco"
        p = scene_state_prefix(serialize_message(msg))
        assert (p.sec, p.nanosec, p.n_objects) == (sec, 0, n) and p.scene_id == "s" * 80
    assert scene_state_prefix(b"\x00\x01\x00\x00\x01") is None  # truncated: the caller deserializes


def test_intrinsics_checks():
    from rls3_ros.vlm import grounding as G

    ok = G.Intrinsics(80.0, 80.0, 32.0, 32.0, 64, 64)
    assert G.check_intrinsics(ok, 4096) is ok
    for k, reason in ((G.Intrinsics(1e-30, 80.0, 32.0, 32.0, 64, 64), "below 1 px"),
                      (G.Intrinsics(80.0, float("inf"), 32.0, 32.0, 64, 64), "not finite"),
                      (G.Intrinsics(80.0, 80.0, 32.0, 99.0, 64, 64), "principal point"),
                      (G.Intrinsics(80.0, 80.0, 32.0, 32.0, 5000, 64), "a side above max_image_side 4096")):
        with pytest.raises(ValueError, match=reason):
            G.check_intrinsics(k, 4096)
    assert G.point_3d(32.0, 32.0, 1e38, ok) is None and G.point_3d(32.0, 32.0, 0.001, ok) is None
    assert G.point_3d(32.0, 32.0, 2.0, ok) == (0.0, 0.0, 2.0)
    assert G.point_3d(64.0, 32.0, 100.0, G.Intrinsics(1.0, 1.0, 0.0, 0.0, 64, 64)) is None  # 6.4 km away
