"""``spatial_query`` answers with object locations: the subject's and reference's 2D box, point and
confidence from the grounded model's own attention, and 3D points in the camera optical frame from
a depth topic, a depth image in the request, or the scene state's object poses. Real MuJoCo renders
(RGB + depth), the committed grounded base, the node in its own process, plain rclpy clients."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ros_harness import BackgroundSpinner, NodeProcess, call_service, poll_until, spin_until_future
from rls3_ros.ros.isolation import isolated_ros_env

pytestmark = pytest.mark.timeout(240)
REPO = Path(__file__).resolve().parent.parent
CAMERA_FRAME = "camera_optical"
TOL = 1e-4


@pytest.fixture(scope="module")
def frames():
    """(rgb, depth [m], scene) of a few MuJoCo scenes (seeds in no training or eval set)."""
    from renders import render_depth_frames

    out = render_depth_frames((5101, 5102, 5103), backend_seed=77)
    for f in out:
        f.active = [o for o in f.scene.objects if o.active and o.visible and o.bbox[2] > o.bbox[0]]
    assert all(len(f.active) >= 2 for f in out)
    return out


def _env(root: Path):
    env = isolated_ros_env(root)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "test"), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """spatial_query (grounded base, depth topic, annotated on) + an in-process client node + the
    in-process reference model."""
    root = tmp_path_factory.mktemp("grounding_nodes")
    env = _env(root)
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        if k.startswith(("ROS_", "FASTDDS", "RMW_")):
            mp.setenv(k, v)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with NodeProcess(["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", "model:=grounded",
                          "-p", "torch_threads:=1", "-p", "image_qos:=reliable", "-p", "depth_topic:=depth/image_raw",
                          "-p", "publish_annotated:=true", "-p", "frame_tolerance:=0.05"], env, "spatial_query",
                         log_dir=root) as query:
            spinner = BackgroundSpinner("grounding_test_client")
            try:
                from rls3_ros.vlm import grounded as G

                local = G.load()
                query.wait_for_output("model ready: model='grounded'", 120)
                yield SimpleNamespace(root=root, env=env, query=query, node=spinner.node, local=local)
            finally:
                spinner.close()
    finally:
        torch.set_num_threads(threads)
        mp.undo()


def _header(sec: int, frame_id: str = "world"):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=sec, nanosec=0), frame_id=frame_id)


def _camera_info(scene, header):
    from rls3_ros.ros.conversions import camera_info_msg

    return camera_info_msg(scene.camera, header)  # frame_id: the camera optical frame


def _cam_point(scene, o):
    return scene.camera.world_to_camera(np.asarray([o.position]))[0]


def _plain_call(node, req, timeout=30.0):
    """A plain rclpy service client (no rls3_ros helper)."""
    from rls3_msgs.srv import SpatialQuery

    client = node.create_client(SpatialQuery, "/spatial_query/query")
    try:
        assert client.wait_for_service(timeout_sec=20)
        return spin_until_future(client.call_async(req), timeout, "spatial_query answer")
    finally:
        node.destroy_client(client)


def _check_location(m, description, expected_loc, w, h):
    assert m.description == description and m.found
    assert m.box.width > 0 and m.box.height > 0 and m.box.x_offset + m.box.width <= w and m.box.y_offset + m.box.height <= h
    assert (m.box.x_offset, m.box.y_offset, m.box.x_offset + m.box.width, m.box.y_offset + m.box.height) == expected_loc.box
    assert (m.pixel.x, m.pixel.y) == pytest.approx(expected_loc.point, abs=TOL)
    assert m.confidence == pytest.approx(expected_loc.confidence, abs=TOL)


def test_camera_frames_with_depth_topic_give_boxes_and_3d_points_in_the_optical_frame(graph, frames):
    """image_raw + camera_info + depth/image_raw on topics, the query names the frame's stamp."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rls3_msgs.srv import SpatialQuery
    from sensor_msgs.msg import CameraInfo, Image

    from rls3_ros.core.image_codec import numpy_to_image_msg
    from rls3_ros.vlm import depth_centre as DC
    from rls3_ros.vlm import grounding as Gr

    node = graph.node
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [node.create_publisher(Image, "image_raw", qos), node.create_publisher(CameraInfo, "camera_info", qos),
            node.create_publisher(Image, "depth/image_raw", qos)]
    poll_until(lambda: all(p.get_subscription_count() > 0 for p in pubs), 20, "spatial_query subscriptions")
    near = checked = 0
    for i, f in enumerate(frames):
        h = _header(2000 + i)
        pubs[0].publish(numpy_to_image_msg(f.rgb, "rgb8", h))
        pubs[1].publish(_camera_info(f.scene, h))
        depth_msg = numpy_to_image_msg(f.depth, "32FC1", h)
        pubs[2].publish(depth_msg)
        subj, ref = f.active[0], f.active[1]
        req = SpatialQuery.Request(query_type="where", subject=subj.description, reference=ref.description, header=h)

        def answered():
            r = _plain_call(node, req)
            # the depth frame may arrive after the colour frame: wait until the answer used it
            return r if r.success and r.subject_location.depth_source == "depth_image" else None

        r = poll_until(answered, 30, f"an answer with depth for frame {i}")
        assert r.header.stamp.sec == 2000 + i and r.header.frame_id == "world"
        expected = graph.local.locate_many(f.rgb, [subj.description, ref.description])
        kx = Gr.Intrinsics(f.scene.camera.fx, f.scene.camera.fy, f.scene.camera.cx, f.scene.camera.cy, 160, 160)
        for m, o, e in ((r.subject_location, subj, expected[0]), (r.reference_location, ref, expected[1])):
            _check_location(m, o.description, e, 160, 160)
            assert m.has_point_3d and m.depth_source == "depth_image"
            assert m.point_3d.header.stamp == h.stamp and m.point_3d.header.frame_id == CAMERA_FRAME
            box = (m.box.x_offset, m.box.y_offset, m.box.x_offset + m.box.width, m.box.y_offset + m.box.height)
            p = (m.point_3d.point.x, m.point_3d.point.y, m.point_3d.point.z)
            # the object's centre from the depths inside its located box
            assert p == pytest.approx(DC.object_centre(f.depth, box, (m.pixel.x, m.pixel.y), kx).point, abs=1e-4)
            checked += 1
            if Gr.point_in_box((m.pixel.x, m.pixel.y), o.bbox):
                # pointed at the object: its 3D point lies on it (surface seen from the camera)
                true = _cam_point(f.scene, o)
                assert np.linalg.norm(np.asarray(p) - true) < 0.5 * np.linalg.norm(o.size) + 0.05, (p, true, o.size)
                near += 1
    assert checked == 2 * len(frames)
    assert near >= 1, "the model pointed at none of the objects: the 3D geometry was never compared"
    for p in pubs:
        node.destroy_publisher(p)


def test_plain_client_with_its_own_image_gets_3d_points_from_the_scene_state(graph, frames):
    """No depth anywhere: z from the stamped scene state's object pose; a depth image of the wrong
    size is refused with a note, not a failure."""
    from rls3_msgs.msg import SceneState
    from rls3_msgs.srv import SpatialQuery

    from rls3_ros.ros.conversions import scene_to_msg
    from rls3_ros.core.image_codec import numpy_to_image_msg

    node = graph.node
    pub = node.create_publisher(SceneState, "scene_state", 10)
    poll_until(lambda: pub.get_subscription_count() > 0, 20, "scene_state subscription")
    f = frames[1]
    h = _header(3000, "")
    pub.publish(scene_to_msg(f.scene, h))
    subj, ref = f.active[1], f.active[0]
    req = SpatialQuery.Request(query_type="where", subject=subj.description, reference=ref.description, header=h,
                               image=numpy_to_image_msg(f.rgb, "rgb8", h),
                               depth=numpy_to_image_msg(np.ones((20, 30), np.float32), "32FC1", h))
    r = poll_until(lambda: (lambda x: x if x.success and x.subject_location.depth_source else None)(_plain_call(node, req)),
                   20, "an answer using the scene state")
    assert "depth image is 30x20, the image 160x160: not used" in r.message, r.message
    cam = f.scene.camera
    for m, o in ((r.subject_location, subj), (r.reference_location, ref)):
        assert m.found and m.has_point_3d and m.depth_source == "scene_state"
        true = _cam_point(f.scene, o)
        assert m.point_3d.point.z == pytest.approx(true[2], abs=1e-4)  # the object's own depth
        assert m.point_3d.point.x == pytest.approx((m.pixel.x - cam.cx) * true[2] / cam.fx, abs=1e-4)
        assert m.point_3d.point.y == pytest.approx((m.pixel.y - cam.cy) * true[2] / cam.fy, abs=1e-4)
    node.destroy_publisher(pub)


def test_client_helper_sends_its_own_intrinsics_and_depth_and_what_locates_the_best_candidate(graph, frames):
    from rls3_ros.ros.client import SpatialQueryClient
    from rls3_ros.vlm import depth_centre as DC
    from rls3_ros.vlm import grounding as Gr

    client = SpatialQueryClient(graph.node)
    f = frames[2]
    info = _camera_info(f.scene, _header(0))
    info.header.frame_id = "my_camera_optical"
    a = client.where_is(f.active[0].description, f.active[1].description, image=f.rgb, camera_info=info,
                        depth=(f.depth * 1000).astype(np.uint16), timeout=30)  # 16UC1 millimetres
    assert a.success, a.message
    for loc, o in ((a.subject_location, f.active[0]), (a.reference_location, f.active[1])):
        assert loc.found and loc.description == o.description and loc.depth_source == "depth_image"
        assert loc.frame_id == "my_camera_optical" and loc.point_3d is not None
        c = DC.object_centre(np.round(f.depth * 1000) / 1000, loc.box, loc.point, Gr.Intrinsics.of_camera(f.scene.camera))
        assert loc.point_3d == pytest.approx(c.point, abs=2e-3)
        x0, y0, x1, y1 = loc.box
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 160 and 0 <= loc.confidence <= 1
    w = client.what_is("left", f.active[0].description, [o.description for o in f.active[1:]], image=f.rgb, timeout=30)
    assert w.success, w.message
    assert w.subject_location.found and w.subject_location.description == w.best
    assert w.reference_location.description == f.active[0].description
    client.destroy()


def test_annotated_image_draws_the_predicted_locations(graph, frames):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from rls3_ros.ros.client import SpatialQueryClient
    from rls3_ros.ros.annotate import draw_annotation
    from rls3_ros.core.image_codec import image_msg_to_rgb

    got = []
    sub = graph.node.create_subscription(Image, "/spatial_query/annotated", got.append,
                                         QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    poll_until(lambda: sub.get_publisher_count() > 0, 20, "annotated publisher")
    client = SpatialQueryClient(graph.node)
    f = frames[0]
    h = _header(4000, "cam")
    a = client.where_is(f.active[0].description, f.active[1].description, image=f.rgb, header=h, timeout=30)
    assert a.success, a.message
    img = poll_until(lambda: next((m for m in got if m.header.stamp.sec == 4000), None), 15, "annotated image")
    drawn = image_msg_to_rgb(img)
    located = [(l.description, (l.box, l.point, l.confidence)) for l in (a.subject_location, a.reference_location)]
    # no scene state has this stamp: only the model's own locations are drawn
    assert np.array_equal(drawn, draw_annotation(f.rgb, [], a.answer, a.confidence, located))
    assert not np.array_equal(drawn, draw_annotation(f.rgb, [], a.answer, a.confidence))
    client.destroy()
    graph.node.destroy_subscription(sub)


def test_model_without_grounding_answers_with_empty_locations_and_says_so(tmp_path, frames):
    from rls3_ros.ros.client import SpatialQueryClient

    env = _env(tmp_path)
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        if k.startswith(("ROS_", "FASTDDS", "RMW_")):
            mp.setenv(k, v)
    try:
        with NodeProcess(["-m", "rls3_ros.ros.nodes.spatial_query", "--ros-args", "-p", "model:=py:vlm_test_model:load",
                          "-p", "torch_threads:=1"], env, "spatial_query_tiny", log_dir=tmp_path) as q:
            q.wait_for_output("model ready", 60)
            spinner = BackgroundSpinner("grounding_tiny_client")
            try:
                client = SpatialQueryClient(spinner.node)
                a = client.where_is("red mug", "lamp", image=frames[0].rgb, timeout=30)
                assert a.success, a.message
                assert not a.subject_location.found and not a.reference_location.found
                assert a.subject_location.point_3d is None
                assert "no object locations" in a.message and "does not ground descriptions" in a.message, a.message
            finally:
                spinner.close()
    finally:
        mp.undo()


def test_where_with_depth_and_a_camera_pose_answers_from_the_geometry_and_says_so(graph, frames):
    """Image + depth + camera_info in the request and the scene state's camera pose: the 'where' terms
    are the hybrid of the text head and the two depth-in-box centres (answer_source model+geometry);
    without depth and scene state the text head's alone (model); an unusable depth still answers."""
    from rls3_msgs.msg import SceneState
    from rls3_msgs.srv import SpatialQuery

    from rls3_ros.captions.terms import make_caption
    from rls3_ros.core.image_codec import numpy_to_image_msg
    from rls3_ros.ros.conversions import scene_to_msg
    from rls3_ros.vlm import where_geometry as W
    from rls3_ros.vlm.answers import QueryRequest, answer_query

    node = graph.node
    pub = node.create_publisher(SceneState, "scene_state", 10)
    poll_until(lambda: pub.get_subscription_count() > 0, 20, "scene_state subscription")
    hybrid = 0
    for i, f in enumerate(frames):
        h = _header(5000 + i)
        pub.publish(scene_to_msg(f.scene, h))
        subj, ref = f.active[0], f.active[1]
        req = SpatialQuery.Request(query_type="where", subject=subj.description, reference=ref.description, header=h,
                                   image=numpy_to_image_msg(f.rgb, "rgb8", h), camera_info=_camera_info(f.scene, h),
                                   depth=numpy_to_image_msg(f.depth, "32FC1", h))
        # the scene state may arrive after the first call: wait until the answer used it (no "image alone" note)
        r = poll_until(lambda: (lambda x: x if x.success and "image alone" not in x.message else None)(
            _plain_call(node, req)), 20, f"an answer with the scene state of frame {i}")
        assert r.subject_location.depth_source == "depth_image" and r.reference_location.depth_source == "depth_image"
        text = answer_query(graph.local, f.rgb, QueryRequest("where", subj.description, ref.description))
        pts = [(m.point_3d.point.x, m.point_3d.point.y, m.point_3d.point.z)
               for m in (r.subject_location, r.reference_location)]
        terms, source = W.hybrid_terms(text.terms, W.points_terms(f.scene.camera, *pts))
        assert (list(r.terms), r.answer_source) == (terms, source), (r.terms, r.answer_source, text.terms)
        assert r.answer == make_caption(subj.description, terms, ref.description)
        assert list(r.term_probabilities) == pytest.approx([text.term_probabilities[t] for t in r.term_names], abs=1e-5)
        if source == W.SOURCE_HYBRID:
            hybrid += 1
            used = (req, text)
    assert hybrid >= 1, "no answer used the geometry: the hybrid path was never exercised"
    from rls3_ros.ros.client import to_where  # what SpatialQueryClient.where_is returns: it says the source too
    assert to_where(_plain_call(node, used[0])).source == W.SOURCE_HYBRID
    # where_from_geometry:=false: the same request gets the text head's answer
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    off = SetParameters.Request(parameters=[Parameter(name="where_from_geometry", value=ParameterValue(
        type=ParameterType.PARAMETER_BOOL, bool_value=False))])
    assert call_service(node, SetParameters, "/spatial_query/set_parameters", off, timeout=20).results[0].successful
    try:
        r = _plain_call(node, used[0])
        assert r.success and r.answer_source == "model" and list(r.terms) == used[1].terms, (r.terms, r.answer_source)
        assert r.subject_location.has_point_3d and r.reference_location.has_point_3d
    finally:
        off.parameters[0].value.bool_value = True
        call_service(node, SetParameters, "/spatial_query/set_parameters", off, timeout=20)

    f = frames[0]
    subj, ref = f.active[0], f.active[1]
    h = _header(6000)  # no scene state, no depth frame has this stamp
    plain = SpatialQuery.Request(query_type="where", subject=subj.description, reference=ref.description, header=h,
                                 image=numpy_to_image_msg(f.rgb, "rgb8", h), camera_info=_camera_info(f.scene, h))
    r = _plain_call(node, plain)
    assert r.success and r.answer_source == "model", (r.answer_source, r.message)
    assert list(r.terms) == answer_query(graph.local, f.rgb, QueryRequest("where", subj.description, ref.description)).terms
    # depth with no valid pixel, and depth in an encoding a depth image cannot have: answered, text head only
    for bad in (numpy_to_image_msg(np.full(f.depth.shape, np.nan, np.float32), "32FC1", h),
                numpy_to_image_msg(f.rgb, "rgb8", h)):
        plain.depth = bad
        r = _plain_call(node, plain)
        assert r.success and r.answer_source == "model" and not r.subject_location.has_point_3d, r.message
        assert "no 3D point for" in r.message or "depth image not used" in r.message, r.message
    # with depth but no camera pose: points, and the message says why the terms are the text head's
    plain.depth = numpy_to_image_msg(f.depth, "32FC1", h)
    r = _plain_call(node, plain)
    assert r.success and r.answer_source == "model" and r.subject_location.has_point_3d
    assert "no camera pose" in r.message, r.message
    node.destroy_publisher(pub)


def test_where_with_depth_and_the_requests_camera_orientation_needs_no_scene_state(graph, frames):
    """A robot has TF, not a scene state: the camera optical frame's orientation in the request
    (gravity-aligned frame) places the two depth-in-box centres, and the 'where' terms are the
    hybrid with that camera, as with the scene state's; an orientation that is not a unit
    quaternion leaves the text head's answer and says why."""
    from geometry_msgs.msg import Quaternion
    from rls3_msgs.srv import SpatialQuery

    from rls3_ros.core.image_codec import numpy_to_image_msg
    from rls3_ros.vlm import where_geometry as W
    from rls3_ros.vlm.answers import QueryRequest, answer_query

    node = graph.node
    hybrid = 0
    for i, f in enumerate(frames):
        h = _header(7000 + i)  # no scene state has this stamp
        subj, ref = f.active[0], f.active[1]
        qx, qy, qz, qw = f.scene.camera.orientation
        req = SpatialQuery.Request(query_type="where", subject=subj.description, reference=ref.description, header=h,
                                   image=numpy_to_image_msg(f.rgb, "rgb8", h), camera_info=_camera_info(f.scene, h),
                                   depth=numpy_to_image_msg(f.depth, "32FC1", h),
                                   camera_orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))
        from rls3_ros.ros.client import SpatialQueryClient  # the client builds the same request field
        assert SpatialQueryClient.make_request("where", subj.description, ref.description, image=f.rgb,
                                               camera_orientation=(qx, qy, qz, qw)).camera_orientation == \
            req.camera_orientation
        r = _plain_call(node, req)
        assert r.success and r.subject_location.depth_source == "depth_image", r.message
        text = answer_query(graph.local, f.rgb, QueryRequest("where", subj.description, ref.description))
        pts = [(m.point_3d.point.x, m.point_3d.point.y, m.point_3d.point.z)
               for m in (r.subject_location, r.reference_location)]
        terms, source = W.hybrid_terms(text.terms, W.points_terms(f.scene.camera, *pts))
        assert (list(r.terms), r.answer_source) == (terms, source), (r.terms, r.answer_source, r.message)
        hybrid += int(source == W.SOURCE_HYBRID)
        if i == 0:
            req.camera_orientation = Quaternion(x=2.0 * qx, y=2.0 * qy, z=2.0 * qz, w=2.0 * qw)
            bad = _plain_call(node, req)
            assert bad.success and bad.answer_source == "model" and list(bad.terms) == text.terms
            assert "not a unit quaternion" in bad.message, bad.message
    assert hybrid >= 1, "no answer used the geometry: the orientation path was never exercised"
