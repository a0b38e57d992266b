"""caption_oracle in a real process: captions (image, scene) pairs published from another
process (this test's rclpy node) matched by stamp, and answers its service."""

from __future__ import annotations

import math
import threading

import numpy as np
from rls3_msgs.msg import Sample as SampleMsg
from rls3_msgs.msg import SceneState as SceneStateMsg
from rls3_msgs.srv import CaptionScene
from sensor_msgs.msg import Image

from ros_harness import NodeProcess, call_service, poll_until
from rls3_ros.captions import CaptionOracle
from rls3_ros.ros.conversions import header_from_ns, msg_to_relation, scene_to_msg, stamp_to_ns
from rls3_ros.core.image_codec import image_msg_to_rgb, numpy_to_image_msg
from rls3_ros.core.scene import CameraModel, ObjectState, SceneState

NODE = ["-m", "rls3_ros.ros.nodes.caption_oracle", "--ros-args", "-r", "__ns:=/cap"]


def make_scene(stamp_ns: int) -> SceneState:
    cam = CameraModel.look_at((-2.0, 0.2, 1.5), (0.0, 0.0, 0.6), 64, 48, 60.0)
    objs = [
        ObjectState("mug", "mug", "red mug", (0.0, 0.3, 0.6), active=True),
        ObjectState("lamp", "lamp", "lamp", (0.4, -0.3, 0.7), active=True),
        ObjectState("cup", "cup", "green cup", (0.0, 0.3, 0.72), supported_by="mug"),
        ObjectState("vase", "vase", "vase", (-0.3, 0.0, 0.6), active=True),
    ]
    return SceneState("kitchen-3", "kitchen", 3, cam, objs, stamp_ns=stamp_ns)


def test_node_captions_matched_pairs_and_serves(ros_env, rclpy_node):
    node = rclpy_node
    got = []
    lock = threading.Lock()

    def on_sample(m):
        with lock:
            got.append(m)

    node.create_subscription(SampleMsg, "/cap/samples", on_sample, 10)
    img_pub = node.create_publisher(Image, "/cap/image_raw", 10)
    scene_pub = node.create_publisher(SceneStateMsg, "/cap/scene_state", 10)
    rng = np.random.default_rng(1)
    oracle = CaptionOracle()
    with NodeProcess(NODE, ros_env, "caption_oracle") as proc:
        proc.wait_for_output("caption_oracle ready", timeout=60)
        poll_until(lambda: img_pub.get_subscription_count() and scene_pub.get_subscription_count()
                   and node.count_publishers("/cap/samples"), 30, "caption_oracle to connect")
        stamps = [1_700_000_000_000_000_001, 1_700_000_000_500_000_002]
        images = {st: rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for st in stamps}

        def publish_all():
            # image_raw is subscribed best effort (sensor_data): the first messages after
            # discovery may be lost, so the pairs are re-sent until captioned; repeats of a
            # captioned stamp are ignored by the node (one sample per stamp).
            for k, st in enumerate(stamps):
                im = numpy_to_image_msg(images[st], "rgb8", header_from_ns(st, "camera_optical"))
                sm = scene_to_msg(make_scene(st), header_from_ns(st, "world"))
                if k == 0:  # scene first, then image; the other order for the second pair
                    scene_pub.publish(sm)
                    img_pub.publish(im)
                else:
                    img_pub.publish(im)
                    scene_pub.publish(sm)
            # an image without a scene never yields a sample
            img_pub.publish(numpy_to_image_msg(images[stamps[0]], "rgb8", header_from_ns(42, "camera_optical")))
            with lock:
                return {stamp_to_ns(m.header.stamp) for m in got} >= set(stamps)

        poll_until(publish_all, 30, "two captioned samples", interval=0.2)
        publish_all()  # once more after both were captioned: no duplicates
        poll_until(lambda: node.count_publishers("/cap/samples"), 5, "publisher still there")
        for m in got:
            st = stamp_to_ns(m.header.stamp)
            assert st in stamps and m.header.frame_id == "world"  # header copied from the input
            assert stamp_to_ns(m.image.header.stamp) == st
            np.testing.assert_array_equal(image_msg_to_rgb(m.image), images[st])
            expected = oracle.caption_scene(make_scene(st))
            assert [msg_to_relation(r).caption for r in m.relations] == [r.caption for r in expected]
            assert [list(r.negatives) for r in m.relations] == [r.negatives for r in expected]
            assert m.valid and m.sample_id == f"kitchen-3-{st}"
            caps = {r.caption for r in m.relations}
            assert "The red mug is under the green cup." in caps
            assert "The red mug is in front and to the left of the lamp." in caps

        # the service: a good scene, a NaN pose, duplicate ids
        req = CaptionScene.Request(scene=scene_to_msg(make_scene(5)), max_pairs=2)
        ans = call_service(node, CaptionScene, "/cap/caption_oracle/caption_scene", req)
        assert ans.success, ans.message
        assert len(ans.relations) == 2
        assert ans.relations[0].caption == oracle.caption_scene(make_scene(5))[0].caption

        bad = make_scene(6)
        bad.objects[1].position = (0.4, math.nan, 0.9)
        ans = call_service(node, CaptionScene, "/cap/caption_oracle/caption_scene",
                           CaptionScene.Request(scene=scene_to_msg(bad)))
        assert not ans.success and "NaN" in ans.message and not ans.relations

        dup = make_scene(7)
        dup.objects[2].id = "mug"
        ans = call_service(node, CaptionScene, "/cap/caption_oracle/caption_scene",
                           CaptionScene.Request(scene=scene_to_msg(dup)))
        assert not ans.success and "duplicate object ids: mug" in ans.message

        empty = make_scene(8)
        empty.objects = []
        ans = call_service(node, CaptionScene, "/cap/caption_oracle/caption_scene",
                           CaptionScene.Request(scene=scene_to_msg(empty)))
        assert ans.success and not ans.relations
        assert proc.alive()
    # one sample per stamp, none for the unmatched image
    assert sorted(stamp_to_ns(m.header.stamp) for m in got) == stamps


def test_node_refuses_bad_parameters(ros_env):
    with NodeProcess(NODE + ["-p", "horizontal_half_width_deg:=60.0"], ros_env, "caption_oracle_bad") as proc:
        assert proc.wait(timeout=60) == 2
        assert "horizontal_half_width_deg must be in (0, 45)" in proc.output()
    with NodeProcess(NODE + ["-p", "vertical_threshold_deg:=20"], ros_env, "caption_oracle_bad_type") as proc:
        assert proc.wait(timeout=60) == 2
        assert "parameter vertical_threshold_deg must be a float" in proc.output()


def test_node_captions_samples_of_a_real_sim_bridge(ros_env, rclpy_node):
    """sim_bridge (MuJoCo, 64 px) and caption_oracle in their own processes; a reset and a
    move of the bridge each come out as a captioned sample matching the bridge's scene."""
    from rls3_msgs.srv import ApplyAction, ResetScene

    from rls3_ros.ros.conversions import msg_to_scene

    node = rclpy_node
    got = []
    node.create_subscription(SampleMsg, "/lab/samples", got.append, 10)
    bridge_args = ["-m", "rls3_ros.ros.nodes.sim_bridge", "--ros-args", "-r", "__ns:=/lab",
                   "-p", "image_size:=64", "-p", "seed:=1"]
    oracle_args = ["-m", "rls3_ros.ros.nodes.caption_oracle", "--ros-args", "-r", "__ns:=/lab", "-p", "seed:=3"]
    with NodeProcess(oracle_args, ros_env, "caption_oracle") as cap, \
            NodeProcess(bridge_args, ros_env, "sim_bridge") as sim:
        cap.wait_for_output("caption_oracle ready", timeout=60)
        sim.wait_for_output("sim_bridge ready", timeout=120)
        poll_until(lambda: node.count_publishers("/lab/samples") and node.count_subscribers("/lab/image_raw")
                   and node.count_subscribers("/lab/scene_state"), 30, "graph to connect")
        reset = call_service(node, ResetScene, "/lab/sim_bridge/reset_scene", ResetScene.Request(seed=4), timeout=60)
        assert reset.success, reset.message
        # wait for the reset's own sample: the startup scene's sample may still arrive first
        sample = poll_until(lambda: next((m for m in got if m.header.stamp == reset.scene.header.stamp), None), 30,
                            "a captioned sample of the reset scene")
        moved = None
        for k, obj in enumerate(reset.scene.objects * 3):  # a few tries: some moves are invalid
            ans = call_service(node, ApplyAction, "/lab/sim_bridge/apply_action",
                               ApplyAction.Request(action_type="swap" if k % 2 == 0 else "place", object_id=obj.id), timeout=60)
            if ans.success and ans.valid:
                moved = ans
                break
        assert moved is not None, "no valid move in 9 tries"
        poll_until(lambda: any(m.header.stamp == moved.scene.header.stamp for m in got), 30, "sample of the move")
        assert cap.alive() and sim.alive()
    for scene_msg in (reset.scene, moved.scene):
        m = next(x for x in got if x.header.stamp == scene_msg.header.stamp)
        assert m.header.frame_id == scene_msg.header.frame_id
        assert m.scene.scene_id == scene_msg.scene_id and image_msg_to_rgb(m.image).shape == (64, 64, 3)
        scene = msg_to_scene(scene_msg)
        rng = np.random.default_rng([3, scene.stamp_ns])
        expected = CaptionOracle().caption_scene(scene, rng=rng)
        assert expected, "the bridge's scene has captionable pairs"
        assert [r.caption for r in m.relations] == [r.caption for r in expected]
    assert sample.relations
